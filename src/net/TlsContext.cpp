#include "net/TlsContext.h"

#include "net/TlsSession.h"

#include <mbedtls/error.h>
#include <mbedtls/platform_util.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>
#include <utility>

namespace wsgate::net {

namespace {

constexpr char personalization[] = "wsgate TLS context";

// Room past the flush threshold for one more record (16,717 bytes in
// Debian's build).
constexpr std::size_t outputSlack = std::size_t{17} * 1024;

constexpr long long maxTicketLifetimeSeconds = 7LL * 86400;

// mbedTLS wants PEM input NUL-terminated and its length counting the NUL.
bool looksLikePem(std::string_view data) noexcept {
    return data.find("-----BEGIN") != std::string_view::npos;
}

std::string upperWithDashes(std::string_view name) {
    std::string out;
    out.reserve(name.size());
    for (char c : name) {
        if (c == '_') {
            c = '-';
        } else if (c >= 'a' && c <= 'z') {
            c = static_cast<char>(c - 'a' + 'A');
        }
        out.push_back(c);
    }
    return out;
}

std::string lowerCase(std::string_view name) {
    std::string out(name);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return out;
}

// True when a suite authenticates the server with a certificate (every
// suite but the pure PSK ones).
bool needsCertificate(const mbedtls_ssl_ciphersuite_t& suite) noexcept {
    return mbedtls_ssl_get_ciphersuite_sig_pk_alg(&suite) != MBEDTLS_PK_NONE;
}

const char* keyKindName(const mbedtls_pk_context& key) noexcept {
    return mbedtls_pk_can_do(&key, MBEDTLS_PK_RSA) != 0 ? "an RSA key" : "an EC key";
}

} // namespace

std::string tlsErrorString(int mbedtlsError) {
    char text[200];
    mbedtls_strerror(mbedtlsError, text, sizeof text);
    char code[24];
    std::snprintf(code, sizeof code, " (-0x%04X)",
                  static_cast<unsigned>(mbedtlsError < 0 ? -mbedtlsError : mbedtlsError));
    return std::string(text) + code;
}

const mbedtls_ssl_ciphersuite_t* findCipherSuite(std::string_view name) noexcept {
    while (!name.empty() && (name.front() == ' ' || name.front() == '\t')) {
        name.remove_prefix(1);
    }
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) {
        name.remove_suffix(1);
    }
    if (name.empty() || name.size() > 100) {
        return nullptr;
    }
    const std::string canonical = upperWithDashes(name);
    return mbedtls_ssl_ciphersuite_from_string(canonical.c_str());
}

const mbedtls_ecp_curve_info* findCurve(std::string_view name) noexcept {
    // NIST's names, and OpenSSL's for P-256; mbedTLS's own spell the others.
    static constexpr std::pair<std::string_view, std::string_view> aliases[] = {
        {"p-256", "secp256r1"},
        {"prime256v1", "secp256r1"},
        {"p-384", "secp384r1"},
        {"p-521", "secp521r1"},
    };
    const std::string lower = lowerCase(name);
    std::string_view wanted = lower;
    for (const auto& [alias, canonical] : aliases) {
        if (wanted == alias) {
            wanted = canonical;
        }
    }
    for (const mbedtls_ecp_curve_info* curve = mbedtls_ecp_curve_list();
         curve->grp_id != MBEDTLS_ECP_DP_NONE; ++curve) {
        if (lowerCase(curve->name) == wanted) {
            return curve;
        }
    }
    return nullptr;
}

bool isSupportedCipherSuite(const mbedtls_ssl_ciphersuite_t& suite) noexcept {
    // TLS 1.2 is minor version 3.
    if (suite.min_minor_ver > MBEDTLS_SSL_MINOR_VERSION_3 ||
        suite.max_minor_ver < MBEDTLS_SSL_MINOR_VERSION_3) {
        return false;
    }
    switch (suite.key_exchange) {
    case MBEDTLS_KEY_EXCHANGE_DHE_RSA:
    case MBEDTLS_KEY_EXCHANGE_DHE_PSK:
    case MBEDTLS_KEY_EXCHANGE_ECJPAKE:
    case MBEDTLS_KEY_EXCHANGE_NONE:
        return false;
    default:
        return true;
    }
}

bool parseCertificates(std::string_view data, mbedtls_x509_crt& chain, std::string& error) {
    int rc = 0;
    if (looksLikePem(data)) {
        const std::string text(data);
        rc = mbedtls_x509_crt_parse(&chain, reinterpret_cast<const unsigned char*>(text.c_str()),
                                    text.size() + 1);
    } else {
        rc = mbedtls_x509_crt_parse_der(&chain, reinterpret_cast<const unsigned char*>(data.data()),
                                        data.size());
    }
    if (rc > 0) {
        error = std::to_string(rc) + " of the certificates could not be parsed";
        return false;
    }
    if (rc < 0) {
        error = "bad certificate: " + tlsErrorString(rc);
        return false;
    }
    if (chain.raw.p == nullptr) {
        error = "no certificate found";
        return false;
    }
    return true;
}

bool parsePrivateKey(std::string_view data, std::string_view passphrase, mbedtls_pk_context& key,
                     std::string& error) {
    std::string text(data);
    std::size_t size = text.size();
    if (looksLikePem(data)) {
        ++size; // The terminating NUL.
    }
    const int rc = mbedtls_pk_parse_key(
        &key, reinterpret_cast<const unsigned char*>(text.c_str()), size,
        passphrase.empty() ? nullptr : reinterpret_cast<const unsigned char*>(passphrase.data()),
        passphrase.size());
    mbedtls_platform_zeroize(text.data(), text.size());
    if (rc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED) {
        error = "the private key is encrypted and no passphrase was given";
        return false;
    }
    if (rc == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
        error = "wrong passphrase for the private key";
        return false;
    }
    if (rc != 0) {
        error = "bad private key: " + tlsErrorString(rc);
        return false;
    }
    if (mbedtls_pk_can_do(&key, MBEDTLS_PK_RSA) == 0 &&
        mbedtls_pk_can_do(&key, MBEDTLS_PK_ECDSA) == 0) {
        mbedtls_pk_free(&key);
        mbedtls_pk_init(&key);
        error = "the private key is neither RSA nor ECDSA";
        return false;
    }
    return true;
}

std::string distinguishedName(const mbedtls_x509_name& name) {
    char text[512];
    const int rc = mbedtls_x509_dn_gets(text, sizeof text, &name);
    if (rc < 0) {
        return {};
    }
    return {text, static_cast<std::size_t>(rc)};
}

TlsContext::Identity::Identity() {
    mbedtls_x509_crt_init(&chain);
    mbedtls_pk_init(&key);
}

TlsContext::Identity::~Identity() {
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&chain);
}

TlsContext::TlsContext() {
    mbedtls_entropy_init(&entropy_);
    mbedtls_ctr_drbg_init(&random_);
    mbedtls_ssl_config_init(&config_);
    mbedtls_ssl_ticket_init(&ticketKeys_);
    mbedtls_x509_crt_init(&caCertificates_);
}

TlsContext::~TlsContext() {
    mbedtls_ssl_config_free(&config_);
    mbedtls_ssl_ticket_free(&ticketKeys_);
    mbedtls_x509_crt_free(&caCertificates_);
    mbedtls_ctr_drbg_free(&random_);
    mbedtls_entropy_free(&entropy_);
}

std::unique_ptr<TlsContext> TlsContext::create(const SslConfiguration& configuration,
                                               std::string& errorString) {
    std::unique_ptr<TlsContext> context(new (std::nothrow) TlsContext());
    if (!context) {
        errorString = "out of memory";
        return nullptr;
    }
    std::string error;
    if (!context->init(configuration, error)) {
        errorString = "TLS configuration: " + error;
        return nullptr;
    }
    errorString.clear();
    return context;
}

bool TlsContext::init(const SslConfiguration& configuration, std::string& error) {
    return initBase(error) && initCipherSuites(configuration, error) &&
           initCurves(configuration, error) && initIdentities(configuration, error) &&
           initVerification(configuration, error) && initAlpn(configuration, error) &&
           initTicketsAndPsk(configuration, error);
}

bool TlsContext::initBase(std::string& error) {
    int rc = mbedtls_ssl_config_defaults(&config_, MBEDTLS_SSL_IS_SERVER,
                                         MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        error = "mbedtls_ssl_config_defaults: " + tlsErrorString(rc);
        return false;
    }
    rc = mbedtls_ctr_drbg_seed(&random_, mbedtls_entropy_func, &entropy_,
                               reinterpret_cast<const unsigned char*>(personalization),
                               sizeof personalization - 1);
    if (rc != 0) {
        error = "cannot seed the random generator: " + tlsErrorString(rc);
        return false;
    }
    mbedtls_ssl_conf_rng(&config_, mbedtls_ctr_drbg_random, &random_);
    // mbedTLS 2.28 still has TLS 1.0 and 1.1 compiled in; only 1.2 is offered.
    mbedtls_ssl_conf_min_version(&config_, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&config_, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    // Sized so that gathering a send never reallocates: the threshold plus
    // one more record.
    output_.reserve(outputFlushThreshold + outputSlack);
    return true;
}

bool TlsContext::initCipherSuites(const SslConfiguration& configuration, std::string& error) {
    // In the server's order: mbedTLS 2.28 honours the server's preference.
    for (const std::string& name : configuration.ciphers()) {
        const mbedtls_ssl_ciphersuite_t* suite = findCipherSuite(name);
        if (suite == nullptr || !isSupportedCipherSuite(*suite)) {
            error = "unknown or unsupported cipher suite '" + name + "'";
            return false;
        }
        cipherSuites_.push_back(suite->id);
        anySuiteNeedsCertificate_ = anySuiteNeedsCertificate_ || needsCertificate(*suite);
        pskEnabled_ = pskEnabled_ || mbedtls_ssl_ciphersuite_uses_psk(suite) != 0;
    }
    if (cipherSuites_.empty()) {
        error = "no cipher suite";
        return false;
    }
    cipherSuites_.push_back(0);
    mbedtls_ssl_conf_ciphersuites(&config_, cipherSuites_.data());
    return true;
}

bool TlsContext::initCurves(const SslConfiguration& configuration, std::string& error) {
    // In the server's order: mbedTLS 2.28 takes the first of these that the
    // client offers. Its own default is largest first, and a handshake on
    // secp521r1 costs the server twice one on x25519 (docs/tls.md).
    for (const std::string& name : configuration.ellipticCurves()) {
        const mbedtls_ecp_curve_info* curve = findCurve(name);
        if (curve == nullptr) {
            error = "unknown elliptic curve '" + name + "'";
            return false;
        }
        curves_.push_back(curve->grp_id);
    }
    curves_.push_back(MBEDTLS_ECP_DP_NONE);
    // The list also bounds the curves of the client certificates accepted.
    mbedtls_ssl_conf_curves(&config_, curves_.data());
    return true;
}

bool TlsContext::initIdentities(const SslConfiguration& configuration, std::string& error) {
    const auto& chain = configuration.localCertificateChain();
    const auto& key = configuration.privateKey();
    if (!chain.empty() && key.empty()) {
        error = "the local certificate chain has no private key";
        return false;
    }
    if (chain.empty() && !key.empty()) {
        error = "a private key is set but no local certificate chain";
        return false;
    }
    if (!chain.empty()) {
        identity_.reset(new (std::nothrow) Identity());
        if (!identity_) {
            error = "out of memory";
            return false;
        }
        if (!loadIdentity(chain, key, "the local certificate", *identity_, error) ||
            !checkSuitesFor(*identity_, "the local certificate", error)) {
            return false;
        }
        const int rc = mbedtls_ssl_conf_own_cert(&config_, &identity_->chain, &identity_->key);
        if (rc != 0) {
            error = "mbedtls_ssl_conf_own_cert: " + tlsErrorString(rc);
            return false;
        }
    }
    for (const auto& entry : configuration.sniCertificates()) {
        SniEntry sni{lowerCase(entry.serverName),
                     std::unique_ptr<Identity>(new (std::nothrow) Identity())};
        if (!sni.identity) {
            error = "out of memory";
            return false;
        }
        const std::string what = "the SNI certificate for '" + sni.name + "'";
        if (!loadIdentity(entry.chain, entry.privateKey, what, *sni.identity, error) ||
            !checkSuitesFor(*sni.identity, what, error)) {
            return false;
        }
        sni_.push_back(std::move(sni));
    }
    // Always: the name the client asked for is reported even when no SNI
    // certificate is configured.
    mbedtls_ssl_conf_sni(&config_, &TlsContext::onSni, this);
    if (anySuiteNeedsCertificate_ && !identity_ && sni_.empty()) {
        error = "no local certificate chain and key (only pure PSK suites can do without)";
        return false;
    }
    return true;
}

bool TlsContext::initVerification(const SslConfiguration& configuration, std::string& error) {
    for (const auto& der : configuration.caCertificates()) {
        const int rc = mbedtls_x509_crt_parse_der(&caCertificates_, der.data(), der.size());
        if (rc != 0) {
            error = "bad CA certificate: " + tlsErrorString(rc);
            return false;
        }
    }
    if (caCertificates_.raw.p != nullptr) {
        mbedtls_ssl_conf_ca_chain(&config_, &caCertificates_, nullptr);
    }
    verifyMode_ = configuration.peerVerifyMode();
    if (verifyMode_ == SslConfiguration::PeerVerifyMode::AutoVerifyPeer) {
        verifyMode_ = SslConfiguration::PeerVerifyMode::QueryPeer;
    }
    if (verifyMode_ == SslConfiguration::PeerVerifyMode::VerifyPeer &&
        caCertificates_.raw.p == nullptr) {
        error = "VerifyPeer needs CA certificates to verify clients against";
        return false;
    }
    // VerifyPeer runs in mbedTLS's optional mode too: the handshake goes on
    // past a bad certificate so that the application can decide (Qt's
    // sslErrors / ignoreSslErrors) once it is complete.
    mbedtls_ssl_conf_authmode(&config_, verifyMode_ == SslConfiguration::PeerVerifyMode::VerifyNone
                                            ? MBEDTLS_SSL_VERIFY_NONE
                                            : MBEDTLS_SSL_VERIFY_OPTIONAL);
    verifyDepth_ = configuration.peerVerifyDepth();
    interruptOnError_ = configuration.handshakeMustInterruptOnError();
    return true;
}

bool TlsContext::initAlpn(const SslConfiguration& configuration, std::string& error) {
    for (const std::string& name : configuration.allowedNextProtocols()) {
        // RFC 7301 §3.1: names of 1 to 255 bytes.
        if (name.empty() || name.size() > 255) {
            error = "ALPN protocol names must be 1 to 255 bytes";
            return false;
        }
        alpnNames_.push_back(name);
    }
    if (alpnNames_.empty()) {
        return true;
    }
    for (const std::string& name : alpnNames_) {
        alpnList_.push_back(name.c_str());
    }
    alpnList_.push_back(nullptr);
    const int rc = mbedtls_ssl_conf_alpn_protocols(&config_, alpnList_.data());
    if (rc != 0) {
        error = "mbedtls_ssl_conf_alpn_protocols: " + tlsErrorString(rc);
        return false;
    }
    return true;
}

bool TlsContext::initTicketsAndPsk(const SslConfiguration& configuration, std::string& error) {
    ticketsEnabled_ = configuration.sessionTicketsEnabled();
    if (ticketsEnabled_) {
        const auto lifetime = static_cast<std::uint32_t>(std::clamp<long long>(
            configuration.sessionTicketLifetime().count(), 1, maxTicketLifetimeSeconds));
        const int rc = mbedtls_ssl_ticket_setup(&ticketKeys_, mbedtls_ctr_drbg_random, &random_,
                                                MBEDTLS_CIPHER_AES_256_GCM, lifetime);
        if (rc != 0) {
            error = "mbedtls_ssl_ticket_setup: " + tlsErrorString(rc);
            return false;
        }
        mbedtls_ssl_conf_session_tickets_cb(&config_, &TlsContext::onTicketWrite,
                                            &TlsContext::onTicketParse, this);
    }
    pskIdentityHint_ = configuration.preSharedKeyIdentityHint();
    if (pskEnabled_) {
        mbedtls_ssl_conf_psk_cb(&config_, &TlsContext::onPsk, this);
    }
    return true;
}

bool TlsContext::loadIdentity(const std::vector<std::vector<std::uint8_t>>& chain,
                              const std::vector<std::uint8_t>& key, const std::string& what,
                              Identity& identity, std::string& error) {
    for (const auto& der : chain) {
        const int rc = mbedtls_x509_crt_parse_der(&identity.chain, der.data(), der.size());
        if (rc != 0) {
            error = what + ": bad certificate: " + tlsErrorString(rc);
            return false;
        }
    }
    const int rc = mbedtls_pk_parse_key(&identity.key, key.data(), key.size(), nullptr, 0);
    if (rc != 0) {
        error = what + ": bad private key: " + tlsErrorString(rc);
        return false;
    }
    if (mbedtls_pk_check_pair(&identity.chain.pk, &identity.key) != 0) {
        error = what + ": the private key does not match the certificate '" +
                distinguishedName(identity.chain.subject) + "'";
        return false;
    }
    return true;
}

bool TlsContext::checkSuitesFor(const Identity& identity, const std::string& what,
                                std::string& error) {
    for (const int id : cipherSuites_) {
        const mbedtls_ssl_ciphersuite_t* suite = mbedtls_ssl_ciphersuite_from_id(id);
        if (suite == nullptr || !needsCertificate(*suite)) {
            continue;
        }
        if (mbedtls_pk_can_do(&identity.key, mbedtls_ssl_get_ciphersuite_sig_pk_alg(suite)) != 0) {
            return true;
        }
    }
    // A pure PSK configuration has nothing to check.
    if (!anySuiteNeedsCertificate_) {
        return true;
    }
    error =
        what + " has " + keyKindName(identity.key) + " but no configured cipher suite can use it";
    return false;
}

TlsContext::Identity* TlsContext::findSniIdentity(std::string_view name) const noexcept {
    for (const SniEntry& entry : sni_) {
        if (entry.name == name) {
            return entry.identity.get();
        }
    }
    // "*.example.com" stands for exactly one label left of "example.com".
    const std::size_t dot = name.find('.');
    if (dot == std::string_view::npos || dot == 0) {
        return nullptr;
    }
    const std::string_view parent = name.substr(dot);
    for (const SniEntry& entry : sni_) {
        if (entry.name.size() == parent.size() + 1 && entry.name[0] == '*' &&
            std::string_view(entry.name).substr(1) == parent) {
            return entry.identity.get();
        }
    }
    return nullptr;
}

int TlsContext::onSni(void* self, mbedtls_ssl_context* ssl, const unsigned char* name,
                      std::size_t size) noexcept {
    auto* context = static_cast<TlsContext*>(self);
    // p_bio is the session: TlsSession::setUp() passes itself to set_bio.
    auto* session = static_cast<TlsSession*>(ssl->p_bio);
    // RFC 6066 §3: a host name is at most 255 bytes.
    if (size == 0 || size > 255) {
        return context->identity_ || context->sni_.empty() ? 0 : -1;
    }
    const std::string lower =
        lowerCase(std::string_view(reinterpret_cast<const char*>(name), size));
    session->serverName_ = lower;
    if (context->sni_.empty()) {
        // Nothing to choose: the default certificate, or none for pure PSK.
        return 0;
    }
    Identity* identity = context->findSniIdentity(lower);
    if (identity == nullptr) {
        // No entry: the default certificate, or unrecognized_name without one.
        return context->identity_ ? 0 : -1;
    }
    return mbedtls_ssl_set_hs_own_cert(ssl, &identity->chain, &identity->key);
}

int TlsContext::onPsk(void* self, mbedtls_ssl_context* ssl, const unsigned char* identity,
                      std::size_t size) noexcept {
    auto* context = static_cast<TlsContext*>(self);
    auto* session = static_cast<TlsSession*>(ssl->p_bio);
    TlsPreSharedKeyAuthenticator authenticator;
    authenticator.identity = std::string_view(reinterpret_cast<const char*>(identity), size);
    authenticator.identityHint = context->pskIdentityHint_;
    authenticator.maximumPreSharedKeyLength = MBEDTLS_PSK_MAX_LEN;
    session->handler_.onTlsPreSharedKeyAuthenticationRequired(authenticator);
    auto& key = authenticator.preSharedKey;
    int rc = -1;
    if (!key.empty() && key.size() <= MBEDTLS_PSK_MAX_LEN) {
        rc = mbedtls_ssl_set_hs_psk(ssl, key.data(), key.size());
    }
    if (!key.empty()) {
        mbedtls_platform_zeroize(key.data(), key.size());
    }
    // Non-zero makes mbedTLS answer unknown_psk_identity.
    return rc == 0 ? 0 : -1;
}

int TlsContext::onTicketWrite(void* self, const mbedtls_ssl_session* session, unsigned char* start,
                              const unsigned char* end, std::size_t* size,
                              std::uint32_t* lifetime) noexcept {
    auto* context = static_cast<TlsContext*>(self);
    return mbedtls_ssl_ticket_write(&context->ticketKeys_, session, start, end, size, lifetime);
}

int TlsContext::onTicketParse(void* self, mbedtls_ssl_session* session, unsigned char* buffer,
                              std::size_t size) noexcept {
    auto* context = static_cast<TlsContext*>(self);
    const int rc = mbedtls_ssl_ticket_parse(&context->ticketKeys_, session, buffer, size);
    // mbedTLS 2.28 resumes whenever a ticket parses and has no getter that
    // says so; this is where a session learns it.
    if (rc == 0 && context->activeSession_ != nullptr) {
        context->activeSession_->resumed_ = true;
    }
    return rc;
}

std::uint8_t* TlsContext::borrowPlaintextBuffer(const TlsSession* session) {
    if (plaintextBorrower_ != nullptr) {
        return nullptr;
    }
    if (!plaintext_) {
        plaintext_.reset(new (std::nothrow) std::uint8_t[plaintextBufferSize]);
        if (!plaintext_) {
            return nullptr;
        }
    }
    plaintextBorrower_ = session;
    return plaintext_.get();
}

void TlsContext::returnPlaintextBuffer(const TlsSession* session) noexcept {
    if (plaintextBorrower_ == session) {
        plaintextBorrower_ = nullptr;
    }
}

bool TlsContext::borrowOutputBuffer(const TlsSession* session) noexcept {
    if (outputBorrower_ != nullptr) {
        return false;
    }
    outputBorrower_ = session;
    output_.clear();
    return true;
}

void TlsContext::returnOutputBuffer(const TlsSession* session) noexcept {
    if (outputBorrower_ == session) {
        outputBorrower_ = nullptr;
        output_.clear();
    }
}

} // namespace wsgate::net
