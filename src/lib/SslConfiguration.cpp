#include "wsgate/SslConfiguration.h"

#include "net/TlsContext.h"

#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509_crt.h>

#include <algorithm>
#include <cstdio>
#include <utility>

namespace wsgate {

namespace {

using Der = std::vector<std::uint8_t>;

// A certificate bundle or key file bigger than this is a mistake.
constexpr long maxFileSize = 16L * 1024 * 1024;

// Large enough for the DER of an RSA 8192 key.
constexpr std::size_t maxKeyDerSize = std::size_t{8} * 1024;

void wipe(Der& bytes) noexcept {
    if (!bytes.empty()) {
        mbedtls_platform_zeroize(bytes.data(), bytes.size());
    }
    bytes.clear();
}

void wipe(std::string& text) noexcept {
    if (!text.empty()) {
        mbedtls_platform_zeroize(text.data(), text.size());
    }
    text.clear();
}

bool readFile(const std::string& path, std::string& out, std::string& error) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (file == nullptr) {
        error = "cannot open '" + path + "'";
        return false;
    }
    out.clear();
    char chunk[4096];
    std::size_t n = 0;
    while ((n = std::fread(chunk, 1, sizeof chunk, file)) > 0) {
        if (out.size() + n > static_cast<std::size_t>(maxFileSize)) {
            std::fclose(file);
            wipe(out);
            error = "'" + path + "' is larger than 16 MiB";
            return false;
        }
        out.append(chunk, n);
    }
    const bool failed = std::ferror(file) != 0;
    std::fclose(file);
    mbedtls_platform_zeroize(chunk, sizeof chunk);
    if (failed) {
        wipe(out);
        error = "cannot read '" + path + "'";
        return false;
    }
    return true;
}

// Owns mbedTLS's parsed forms for the span of one setter.
struct ParsedChain {
    ParsedChain() { mbedtls_x509_crt_init(&chain); }
    ~ParsedChain() { mbedtls_x509_crt_free(&chain); }
    ParsedChain(const ParsedChain&) = delete;
    ParsedChain& operator=(const ParsedChain&) = delete;

    [[nodiscard]] std::vector<Der> toDer() const {
        std::vector<Der> out;
        for (const mbedtls_x509_crt* c = &chain; c != nullptr && c->raw.p != nullptr; c = c->next) {
            out.emplace_back(c->raw.p, c->raw.p + c->raw.len);
        }
        return out;
    }
    mbedtls_x509_crt chain;
};

struct ParsedKey {
    ParsedKey() { mbedtls_pk_init(&key); }
    ~ParsedKey() { mbedtls_pk_free(&key); }
    ParsedKey(const ParsedKey&) = delete;
    ParsedKey& operator=(const ParsedKey&) = delete;

    bool toDer(Der& out, std::string& error) {
        Der buffer(maxKeyDerSize);
        // mbedTLS writes DER at the end of the buffer.
        const int size = mbedtls_pk_write_key_der(&key, buffer.data(), buffer.size());
        if (size <= 0) {
            wipe(buffer);
            error = "cannot re-encode the private key: " + net::tlsErrorString(size);
            return false;
        }
        out.assign(buffer.end() - size, buffer.end());
        wipe(buffer);
        return true;
    }
    mbedtls_pk_context key;
};

// Parses PEM certificates into DER. On failure `error` names `what` and
// `out` is left as it was.
bool parseDerCertificates(std::string_view pem, std::string_view what, std::vector<Der>& out,
                          std::string& error) {
    ParsedChain parsed;
    std::string why;
    if (!net::parseCertificates(pem, parsed.chain, why)) {
        error = std::string(what) + ": " + why;
        return false;
    }
    out = parsed.toDer();
    return true;
}

bool isValidSniName(std::string_view name) noexcept {
    if (name.size() > 2 && name.substr(0, 2) == "*.") {
        name.remove_prefix(2);
    }
    if (name.empty() || name.size() > 253 || name.front() == '.' || name.back() == '.') {
        return false;
    }
    char previous = '.';
    for (const char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '.';
        if (!ok || (c == '.' && previous == '.')) {
            return false;
        }
        previous = c;
    }
    return true;
}

/// Sets `target` to the canonical names of `names` (each once, in order),
/// or to `defaults` when `names` is empty. `canonical(name, error)` gives a
/// name's canonical spelling, or null with `error` set; then nothing changes.
template <typename Canonical>
bool setNameList(std::vector<std::string>& target, std::string& error,
                 const std::vector<std::string>& names, std::vector<std::string> defaults,
                 Canonical canonical) {
    if (names.empty()) {
        target = std::move(defaults);
        error.clear();
        return true;
    }
    std::vector<std::string> list;
    for (const std::string& name : names) {
        const char* spelled = canonical(name, error);
        if (spelled == nullptr) {
            return false;
        }
        if (std::find(list.begin(), list.end(), spelled) == list.end()) {
            list.emplace_back(spelled);
        }
    }
    target = std::move(list);
    error.clear();
    return true;
}

} // namespace

struct SslConfiguration::Private {
    Private() = default;
    Private(const Private&) = default;
    Private& operator=(const Private&) = delete;
    ~Private() {
        wipe(privateKey);
        for (SniCertificate& entry : sni) {
            wipe(entry.privateKey);
        }
    }

    std::vector<Der> localChain;
    Der privateKey;
    std::vector<SniCertificate> sni;
    std::vector<Der> caCertificates;
    PeerVerifyMode verifyMode = PeerVerifyMode::VerifyNone;
    int verifyDepth = 0;
    bool interruptOnError = false;
    std::vector<std::string> ciphers = SslConfiguration::defaultCiphers();
    std::vector<std::string> curves = SslConfiguration::defaultEllipticCurves();
    std::vector<std::string> alpn{"http/1.1"};
    bool sessionTickets = true;
    std::chrono::seconds ticketLifetime{86400};
    std::string pskIdentityHint;
    std::string error;
};

SslConfiguration::SslConfiguration() : d_(std::make_unique<Private>()) {
}

SslConfiguration::SslConfiguration(const SslConfiguration& other)
    : d_(std::make_unique<Private>(other.d())) {
}

SslConfiguration::SslConfiguration(SslConfiguration&& other) noexcept = default;

SslConfiguration& SslConfiguration::operator=(const SslConfiguration& other) {
    if (this != &other) {
        d_ = std::make_unique<Private>(other.d());
    }
    return *this;
}

SslConfiguration& SslConfiguration::operator=(SslConfiguration&& other) noexcept = default;

SslConfiguration::~SslConfiguration() = default;

SslConfiguration SslConfiguration::defaultConfiguration() {
    return {};
}

SslConfiguration::Private& SslConfiguration::d() {
    if (!d_) {
        d_ = std::make_unique<Private>();
    }
    return *d_;
}

const SslConfiguration::Private& SslConfiguration::d() const noexcept {
    static const Private defaults;
    return d_ ? *d_ : defaults;
}

bool SslConfiguration::setLocalCertificateChain(std::string_view pem) {
    Private& p = d();
    std::vector<Der> chain;
    if (!parseDerCertificates(pem, "local certificate chain", chain, p.error)) {
        return false;
    }
    p.localChain = std::move(chain);
    p.error.clear();
    return true;
}

bool SslConfiguration::setLocalCertificateChainFromFile(const std::string& path) {
    std::string text;
    if (!readFile(path, text, d().error)) {
        return false;
    }
    return setLocalCertificateChain(text);
}

const std::vector<std::vector<std::uint8_t>>&
SslConfiguration::localCertificateChain() const noexcept {
    return d().localChain;
}

bool SslConfiguration::setPrivateKey(std::string_view pem, std::string_view passphrase) {
    Private& p = d();
    ParsedKey parsed;
    std::string error;
    Der der;
    if (!net::parsePrivateKey(pem, passphrase, parsed.key, error) || !parsed.toDer(der, error)) {
        p.error = "private key: " + error;
        return false;
    }
    wipe(p.privateKey);
    p.privateKey = std::move(der);
    p.error.clear();
    return true;
}

bool SslConfiguration::setPrivateKeyFromFile(const std::string& path, std::string_view passphrase) {
    std::string text;
    if (!readFile(path, text, d().error)) {
        return false;
    }
    const bool ok = setPrivateKey(text, passphrase);
    wipe(text);
    return ok;
}

const std::vector<std::uint8_t>& SslConfiguration::privateKey() const noexcept {
    return d().privateKey;
}

bool SslConfiguration::addSniCertificate(std::string_view serverName, std::string_view chainPem,
                                         std::string_view keyPem, std::string_view passphrase) {
    Private& p = d();
    if (!isValidSniName(serverName)) {
        p.error = "SNI certificate: '" + std::string(serverName) + "' is not a host name";
        return false;
    }
    SniCertificate entry;
    entry.serverName.assign(serverName);
    std::transform(entry.serverName.begin(), entry.serverName.end(), entry.serverName.begin(),
                   [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; });
    const std::string what = "SNI certificate for '" + entry.serverName + "': ";
    ParsedChain chain;
    ParsedKey key;
    std::string error;
    if (!net::parseCertificates(chainPem, chain.chain, error) ||
        !net::parsePrivateKey(keyPem, passphrase, key.key, error)) {
        p.error = what + error;
        return false;
    }
    if (mbedtls_pk_check_pair(&chain.chain.pk, &key.key) != 0) {
        p.error = what + "the private key does not match the certificate";
        return false;
    }
    entry.chain = chain.toDer();
    if (!key.toDer(entry.privateKey, error)) {
        p.error = what + error;
        return false;
    }
    auto same = std::find_if(p.sni.begin(), p.sni.end(), [&](const SniCertificate& existing) {
        return existing.serverName == entry.serverName;
    });
    if (same != p.sni.end()) {
        wipe(same->privateKey);
        *same = std::move(entry);
    } else {
        p.sni.push_back(std::move(entry));
    }
    p.error.clear();
    return true;
}

bool SslConfiguration::addSniCertificateFromFiles(std::string_view serverName,
                                                  const std::string& chainPath,
                                                  const std::string& keyPath,
                                                  std::string_view passphrase) {
    std::string chain;
    std::string key;
    if (!readFile(chainPath, chain, d().error) || !readFile(keyPath, key, d().error)) {
        return false;
    }
    const bool ok = addSniCertificate(serverName, chain, key, passphrase);
    wipe(key);
    return ok;
}

const std::vector<SslConfiguration::SniCertificate>&
SslConfiguration::sniCertificates() const noexcept {
    return d().sni;
}

void SslConfiguration::clearSniCertificates() {
    Private& p = d();
    for (SniCertificate& entry : p.sni) {
        wipe(entry.privateKey);
    }
    p.sni.clear();
}

bool SslConfiguration::setCaCertificates(std::string_view pem) {
    Private& p = d();
    std::vector<Der> certificates;
    if (!parseDerCertificates(pem, "CA certificates", certificates, p.error)) {
        return false;
    }
    p.caCertificates = std::move(certificates);
    p.error.clear();
    return true;
}

bool SslConfiguration::setCaCertificatesFromFile(const std::string& path) {
    std::string text;
    if (!readFile(path, text, d().error)) {
        return false;
    }
    return setCaCertificates(text);
}

bool SslConfiguration::addCaCertificates(std::string_view pem) {
    Private& p = d();
    std::vector<Der> certificates;
    if (!parseDerCertificates(pem, "CA certificates", certificates, p.error)) {
        return false;
    }
    for (Der& der : certificates) {
        p.caCertificates.push_back(std::move(der));
    }
    p.error.clear();
    return true;
}

bool SslConfiguration::addCaCertificatesFromFile(const std::string& path) {
    std::string text;
    if (!readFile(path, text, d().error)) {
        return false;
    }
    return addCaCertificates(text);
}

const std::vector<std::vector<std::uint8_t>>& SslConfiguration::caCertificates() const noexcept {
    return d().caCertificates;
}

void SslConfiguration::setPeerVerifyMode(PeerVerifyMode mode) {
    d().verifyMode = mode;
}

SslConfiguration::PeerVerifyMode SslConfiguration::peerVerifyMode() const noexcept {
    return d().verifyMode;
}

void SslConfiguration::setPeerVerifyDepth(int depth) {
    d().verifyDepth = std::max(depth, 0);
}

int SslConfiguration::peerVerifyDepth() const noexcept {
    return d().verifyDepth;
}

void SslConfiguration::setHandshakeMustInterruptOnError(bool interrupt) {
    d().interruptOnError = interrupt;
}

bool SslConfiguration::handshakeMustInterruptOnError() const noexcept {
    return d().interruptOnError;
}

bool SslConfiguration::setCiphers(const std::vector<std::string>& names) {
    Private& p = d();
    return setNameList(p.ciphers, p.error, names, defaultCiphers(),
                       [](const std::string& name, std::string& error) -> const char* {
                           const mbedtls_ssl_ciphersuite_t* suite = net::findCipherSuite(name);
                           if (suite == nullptr) {
                               error = "unknown cipher suite '" + name + "'";
                               return nullptr;
                           }
                           if (!net::isSupportedCipherSuite(*suite)) {
                               error = "cipher suite '" + name +
                                       "' is not supported (TLS 1.2 without DHE only)";
                               return nullptr;
                           }
                           return suite->name;
                       });
}

const std::vector<std::string>& SslConfiguration::ciphers() const noexcept {
    return d().ciphers;
}

std::vector<std::string> SslConfiguration::defaultCiphers() {
    return {
        "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
        "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
        "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
        "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
        "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
        "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
    };
}

std::vector<std::string> SslConfiguration::supportedCiphers() {
    std::vector<std::string> out;
    for (const int* id = mbedtls_ssl_list_ciphersuites(); *id != 0; ++id) {
        const mbedtls_ssl_ciphersuite_t* suite = mbedtls_ssl_ciphersuite_from_id(*id);
        if (suite != nullptr && net::isSupportedCipherSuite(*suite)) {
            out.emplace_back(suite->name);
        }
    }
    return out;
}

bool SslConfiguration::setEllipticCurves(const std::vector<std::string>& names) {
    Private& p = d();
    return setNameList(p.curves, p.error, names, defaultEllipticCurves(),
                       [](const std::string& name, std::string& error) -> const char* {
                           const mbedtls_ecp_curve_info* curve = net::findCurve(name);
                           if (curve == nullptr) {
                               error = "unknown elliptic curve '" + name + "'";
                               return nullptr;
                           }
                           return curve->name;
                       });
}

const std::vector<std::string>& SslConfiguration::ellipticCurves() const noexcept {
    return d().curves;
}

std::vector<std::string> SslConfiguration::defaultEllipticCurves() {
    std::vector<std::string> out;
    for (const char* name : {"x25519", "secp256r1", "secp384r1", "secp521r1"}) {
        if (mbedtls_ecp_curve_info_from_name(name) != nullptr) {
            out.emplace_back(name);
        }
    }
    return out;
}

std::vector<std::string> SslConfiguration::supportedEllipticCurves() {
    std::vector<std::string> out;
    for (const mbedtls_ecp_curve_info* curve = mbedtls_ecp_curve_list();
         curve->grp_id != MBEDTLS_ECP_DP_NONE; ++curve) {
        out.emplace_back(curve->name);
    }
    return out;
}

bool SslConfiguration::setAllowedNextProtocols(std::vector<std::string> protocols) {
    Private& p = d();
    for (const std::string& name : protocols) {
        // RFC 7301 §3.1: each name is 1 to 255 bytes.
        if (name.empty() || name.size() > 255) {
            p.error = "ALPN protocol names must be 1 to 255 bytes";
            return false;
        }
    }
    p.alpn = std::move(protocols);
    p.error.clear();
    return true;
}

const std::vector<std::string>& SslConfiguration::allowedNextProtocols() const noexcept {
    return d().alpn;
}

void SslConfiguration::setSessionTicketsEnabled(bool enabled) {
    d().sessionTickets = enabled;
}

bool SslConfiguration::sessionTicketsEnabled() const noexcept {
    return d().sessionTickets;
}

void SslConfiguration::setSessionTicketLifetime(std::chrono::seconds lifetime) {
    d().ticketLifetime = std::max(lifetime, std::chrono::seconds{1});
}

std::chrono::seconds SslConfiguration::sessionTicketLifetime() const noexcept {
    return d().ticketLifetime;
}

void SslConfiguration::setPreSharedKeyIdentityHint(std::string hint) {
    d().pskIdentityHint = std::move(hint);
}

const std::string& SslConfiguration::preSharedKeyIdentityHint() const noexcept {
    return d().pskIdentityHint;
}

const std::string& SslConfiguration::errorString() const noexcept {
    return d().error;
}

} // namespace wsgate
