// The server side of TLS, built once per Server from an SslConfiguration:
// mbedTLS's ssl_config with its random generator, certificates and keys,
// SNI table, session-ticket keys, ALPN, cipher-suite and curve lists, and the
// buffers that every TlsSession of one loop shares.
#pragma once

#include "wsgate/SslConfiguration.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

static_assert(MBEDTLS_VERSION_NUMBER >= 0x021C0000 && MBEDTLS_VERSION_NUMBER < 0x03000000,
              "the TLS layer is written for mbedTLS 2.28");

namespace wsgate::net {

class TlsSession;

/// mbedTLS's text for an error code, e.g. "SSL - A fatal alert message was
/// received from our peer", with the code in hexadecimal.
std::string tlsErrorString(int mbedtlsError);

/// The suite named `name` (mbedTLS or IANA spelling, any case), or null when
/// this build does not know it.
const mbedtls_ssl_ciphersuite_t* findCipherSuite(std::string_view name) noexcept;

/// Whether wsgate can negotiate `suite`: TLS 1.2, and not finite-field DHE
/// or EC J-PAKE (which need parameters wsgate does not set).
bool isSupportedCipherSuite(const mbedtls_ssl_ciphersuite_t& suite) noexcept;

/// The elliptic curve named `name`: mbedTLS's name ("secp256r1", "x25519"),
/// NIST's ("P-256") or OpenSSL's ("prime256v1"), in any case; null when this
/// build does not know it.
const mbedtls_ecp_curve_info* findCurve(std::string_view name) noexcept;

/// Parses one or more certificates (PEM blocks, or one DER certificate)
/// into `chain`, which must be initialised. False with `error` set when
/// nothing or not everything parses.
bool parseCertificates(std::string_view data, mbedtls_x509_crt& chain, std::string& error);

/// Parses an RSA or EC private key (PEM or DER, encrypted or not) into `key`,
/// which must be initialised. False with `error` set on failure.
bool parsePrivateKey(std::string_view data, std::string_view passphrase, mbedtls_pk_context& key,
                     std::string& error);

/// The distinguished name of a certificate's subject or issuer, as mbedTLS
/// writes it ("CN=localhost, O=wsgate").
std::string distinguishedName(const mbedtls_x509_name& name);

/// One loop's TLS server state. Build it with create(); every TlsSession
/// made from it must be destroyed first. Not thread-safe: it and its
/// sessions belong to one loop.
class TlsContext {
public:
    /// Builds the context. On failure returns null and sets `errorString`
    /// to one line saying what is wrong: a chain without a key, a key that
    /// does not match its certificate, no suite usable with the key,
    /// VerifyPeer without CA certificates, a bad ALPN name, or a failure of
    /// the random generator.
    static std::unique_ptr<TlsContext> create(const SslConfiguration& configuration,
                                              std::string& errorString);

    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;
    ~TlsContext();

    /// The effective mode: AutoVerifyPeer reads as QueryPeer (server side).
    SslConfiguration::PeerVerifyMode peerVerifyMode() const noexcept { return verifyMode_; }
    int peerVerifyDepth() const noexcept { return verifyDepth_; }
    bool handshakeMustInterruptOnError() const noexcept { return interruptOnError_; }
    const std::string& preSharedKeyIdentityHint() const noexcept { return pskIdentityHint_; }
    /// Whether any configured suite uses a pre-shared key.
    bool preSharedKeysEnabled() const noexcept { return pskEnabled_; }
    /// The configured suites as mbedTLS ids, ending with 0.
    const std::vector<int>& cipherSuiteIds() const noexcept { return cipherSuites_; }

    /// The mbedTLS configuration that sessions are set up from.
    const mbedtls_ssl_config& sslConfig() const noexcept { return config_; }

    /// Plaintext of one receive() is gathered here before it is handed on:
    /// one buffer per loop rather than per connection.
    static constexpr std::size_t plaintextBufferSize = std::size_t{64} * 1024;
    /// Records of one send() are gathered here and written out once this
    /// much is waiting.
    static constexpr std::size_t outputFlushThreshold = std::size_t{64} * 1024;

private:
    friend class TlsSession;

    // A certificate chain with its key.
    struct Identity {
        Identity();
        ~Identity();
        Identity(const Identity&) = delete;
        Identity& operator=(const Identity&) = delete;
        mbedtls_x509_crt chain;
        mbedtls_pk_context key;
    };
    struct SniEntry {
        std::string name; // Lower case; "*.example.com" for a wildcard.
        std::unique_ptr<Identity> identity;
    };

    TlsContext();
    bool init(const SslConfiguration& configuration, std::string& error);
    bool initBase(std::string& error);
    bool initCipherSuites(const SslConfiguration& configuration, std::string& error);
    bool initCurves(const SslConfiguration& configuration, std::string& error);
    bool initIdentities(const SslConfiguration& configuration, std::string& error);
    bool initVerification(const SslConfiguration& configuration, std::string& error);
    bool initAlpn(const SslConfiguration& configuration, std::string& error);
    bool initTicketsAndPsk(const SslConfiguration& configuration, std::string& error);
    static bool loadIdentity(const std::vector<std::vector<std::uint8_t>>& chain,
                             const std::vector<std::uint8_t>& key, const std::string& what,
                             Identity& identity, std::string& error);
    bool checkSuitesFor(const Identity& identity, const std::string& what, std::string& error);
    Identity* findSniIdentity(std::string_view name) const noexcept;

    static int onSni(void* self, mbedtls_ssl_context* ssl, const unsigned char* name,
                     std::size_t size) noexcept;
    static int onPsk(void* self, mbedtls_ssl_context* ssl, const unsigned char* identity,
                     std::size_t size) noexcept;
    static int onTicketWrite(void* self, const mbedtls_ssl_session* session, unsigned char* start,
                             const unsigned char* end, std::size_t* size,
                             std::uint32_t* lifetime) noexcept;
    static int onTicketParse(void* self, mbedtls_ssl_session* session, unsigned char* buffer,
                             std::size_t size) noexcept;

    // The shared buffers: each is lent to one session at a time; a session
    // that finds one lent out (a nested call from a callback) makes do
    // without it.
    std::uint8_t* borrowPlaintextBuffer(const TlsSession* session);
    void returnPlaintextBuffer(const TlsSession* session) noexcept;
    bool borrowOutputBuffer(const TlsSession* session) noexcept;
    void returnOutputBuffer(const TlsSession* session) noexcept;

    mbedtls_entropy_context entropy_;
    mbedtls_ctr_drbg_context random_;
    mbedtls_ssl_config config_;
    mbedtls_ssl_ticket_context ticketKeys_;
    mbedtls_x509_crt caCertificates_;
    std::unique_ptr<Identity> identity_;
    std::vector<SniEntry> sni_;
    std::vector<int> cipherSuites_;
    std::vector<mbedtls_ecp_group_id> curves_; // ends with MBEDTLS_ECP_DP_NONE
    std::vector<std::string> alpnNames_;
    std::vector<const char*> alpnList_; // Points into alpnNames_, ends with null.
    std::string pskIdentityHint_;
    SslConfiguration::PeerVerifyMode verifyMode_ = SslConfiguration::PeerVerifyMode::VerifyNone;
    int verifyDepth_ = 0;
    bool interruptOnError_ = false;
    bool pskEnabled_ = false;
    bool ticketsEnabled_ = false;
    bool anySuiteNeedsCertificate_ = false;

    // The session inside an mbedTLS call, for the ticket callbacks, which
    // are not told the ssl context.
    TlsSession* activeSession_ = nullptr;

    std::unique_ptr<std::uint8_t[]> plaintext_;
    const TlsSession* plaintextBorrower_ = nullptr;
    std::vector<std::uint8_t> output_;
    const TlsSession* outputBorrower_ = nullptr;
};

} // namespace wsgate::net
