// The TLS settings of a wss:// server: the part of Qt's QSslConfiguration
// that QWebSocketServer uses, as a plain value type. wsgate terminates TLS
// with mbedTLS 2.28, which speaks TLS 1.2 only.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate {

/// What a server needs to accept wss:// connections: its certificate chain
/// and private key (one pair, plus more chosen by SNI), how it checks client
/// certificates, and what it negotiates (cipher suites, ALPN, session
/// tickets, pre-shared keys).
///
/// A value type: copies are independent. Certificates and keys are parsed
/// and checked when they are set, and kept as DER bytes; nothing here
/// refers to a file after the setter returns. Private keys are kept
/// decrypted and are wiped from memory when the configuration is destroyed.
///
/// Setters that load or parse something return false when it fails, leave
/// the configuration as it was, and put the reason in errorString(); they
/// never throw. Whether the whole is consistent (a key matching its
/// certificate, a cipher suite usable with the key, CA certificates for
/// VerifyPeer) is checked when a server is built from it.
///
/// Not thread-safe: use one object from one thread at a time; give other
/// threads copies.
class SslConfiguration {
public:
    /// How the server asks for and checks a client certificate (Qt's
    /// QSslSocket::PeerVerifyMode).
    enum class PeerVerifyMode {
        /// No client certificate is requested. The default.
        VerifyNone,
        /// A certificate is requested and checked, but the handshake goes on
        /// without one and whatever the check found; the problems are kept
        /// for the application to read, and not reported as errors.
        QueryPeer,
        /// A valid certificate is required. Each problem is reported as a
        /// peer verification error; after the handshake the list is reported
        /// as SSL errors and the connection is dropped unless the
        /// application ignores them.
        VerifyPeer,
        /// QueryPeer for a server, as in Qt.
        AutoVerifyPeer,
    };

    /// The defaults: no certificate, no key, no CA certificates,
    /// VerifyNone, depth 0 (no limit), defaultCiphers(),
    /// defaultEllipticCurves(), ALPN {"http/1.1"},
    /// session tickets on with a lifetime of one day, no PSK identity hint,
    /// handshakeMustInterruptOnError false.
    SslConfiguration();
    SslConfiguration(const SslConfiguration& other);
    SslConfiguration(SslConfiguration&& other) noexcept;
    SslConfiguration& operator=(const SslConfiguration& other);
    SslConfiguration& operator=(SslConfiguration&& other) noexcept;
    ~SslConfiguration();

    /// Same as SslConfiguration(); named as in Qt.
    static SslConfiguration defaultConfiguration();

    // --- The server's own identity -------------------------------------

    /// Sets the certificate chain sent to clients: the server's certificate
    /// first, then the intermediates (the root may be left out). `pem` holds
    /// one or more PEM blocks (DER of one certificate is accepted too). The
    /// bytes are copied. Replaces the previous chain.
    bool setLocalCertificateChain(std::string_view pem);
    /// As setLocalCertificateChain(), reading the file at `path` now.
    bool setLocalCertificateChainFromFile(const std::string& path);
    /// The chain as DER, one element per certificate, the server's first.
    const std::vector<std::vector<std::uint8_t>>& localCertificateChain() const noexcept;

    /// Sets the private key of the local certificate: RSA or ECDSA, PEM
    /// (PKCS#1, SEC1 or PKCS#8, optionally encrypted with `passphrase`) or
    /// DER. The key is decrypted now; the passphrase is not kept.
    bool setPrivateKey(std::string_view pem, std::string_view passphrase = {});
    /// As setPrivateKey(), reading the file at `path` now.
    bool setPrivateKeyFromFile(const std::string& path, std::string_view passphrase = {});
    /// The decrypted private key as DER, empty when none is set.
    const std::vector<std::uint8_t>& privateKey() const noexcept;

    /// One more certificate for clients that ask for `serverName` by SNI
    /// (RFC 6066 §3). The name is matched without regard to case; a name of
    /// the form "*.example.com" matches exactly one more label on the left.
    /// Exact names win over wildcards. Clients that send no name, or a name
    /// that matches no entry, get the local certificate chain. The chain
    /// and key are parsed, and checked to match, now; an entry with the same
    /// name is replaced.
    bool addSniCertificate(std::string_view serverName, std::string_view chainPem,
                           std::string_view keyPem, std::string_view passphrase = {});
    /// As addSniCertificate(), reading the two files now.
    bool addSniCertificateFromFiles(std::string_view serverName, const std::string& chainPath,
                                    const std::string& keyPath, std::string_view passphrase = {});
    /// One SNI entry as stored: the name in lower case, the chain and the
    /// decrypted key as DER.
    struct SniCertificate {
        std::string serverName;
        std::vector<std::vector<std::uint8_t>> chain;
        std::vector<std::uint8_t> privateKey;
    };
    /// The SNI entries in the order they were added.
    const std::vector<SniCertificate>& sniCertificates() const noexcept;
    /// Removes every SNI entry.
    void clearSniCertificates();

    // --- Client certificates ---------------------------------------------

    /// Sets the CA certificates that client certificates must chain to
    /// (PEM, one or more blocks). Replaces the previous list.
    bool setCaCertificates(std::string_view pem);
    /// As setCaCertificates(), reading the file at `path` now.
    bool setCaCertificatesFromFile(const std::string& path);
    /// Appends CA certificates to the list.
    bool addCaCertificates(std::string_view pem);
    /// As addCaCertificates(), reading the file at `path` now.
    bool addCaCertificatesFromFile(const std::string& path);
    /// The CA certificates as DER.
    const std::vector<std::vector<std::uint8_t>>& caCertificates() const noexcept;

    /// Sets how client certificates are asked for and checked. Default
    /// VerifyNone.
    void setPeerVerifyMode(PeerVerifyMode mode);
    PeerVerifyMode peerVerifyMode() const noexcept;

    /// The most certificates a client's verified chain may hold, its own and
    /// the CA's included; a longer chain is a PathLengthExceeded problem.
    /// 0, the default, means no limit of ours (mbedTLS allows 8
    /// intermediates). Negative values are taken as 0.
    void setPeerVerifyDepth(int depth);
    int peerVerifyDepth() const noexcept;

    /// In VerifyPeer mode, stop at each problem found in the client's chain,
    /// while the handshake runs, and ask the application, synchronously,
    /// whether to go on (Qt's handshakeInterruptedOnError /
    /// continueInterruptedHandshake); the first "no" ends the handshake.
    /// Default false.
    void setHandshakeMustInterruptOnError(bool interrupt);
    bool handshakeMustInterruptOnError() const noexcept;

    // --- What is negotiated ----------------------------------------------

    /// Sets the cipher suites the server accepts, in its order of
    /// preference. Names are mbedTLS's ("TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256")
    /// or IANA's ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"), in any case.
    /// Only TLS 1.2 suites of supportedCiphers() are accepted. An empty list
    /// restores defaultCiphers(). To accept pre-shared keys, include PSK
    /// suites such as "TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256".
    bool setCiphers(const std::vector<std::string>& names);
    /// The configured suites under mbedTLS's names.
    const std::vector<std::string>& ciphers() const noexcept;
    /// ECDHE with ChaCha20-Poly1305 and AES-GCM, for ECDSA and RSA
    /// certificates, ChaCha20-Poly1305 first: mbedTLS 2.28's runs at 1.7
    /// times the speed of its AES-GCM on x86-64 with AES-NI (docs/tls.md),
    /// and every current browser offers it.
    static std::vector<std::string> defaultCiphers();
    /// Every suite this build of mbedTLS can negotiate in TLS 1.2, except the
    /// finite-field DHE ones (wsgate sets no DH parameters).
    static std::vector<std::string> supportedCiphers();

    /// Sets the elliptic curves the server uses for ECDHE, in its order of
    /// preference (Qt's setEllipticCurves): the first one the client also
    /// offers is taken. Names are mbedTLS's ("x25519", "secp256r1"), NIST's
    /// ("P-256") or OpenSSL's ("prime256v1"), in any case; each must be one
    /// of supportedEllipticCurves(). A client certificate's EC key must be
    /// on one of them too. An empty list restores defaultEllipticCurves().
    bool setEllipticCurves(const std::vector<std::string>& names);
    /// The configured curves under mbedTLS's names.
    const std::vector<std::string>& ellipticCurves() const noexcept;
    /// x25519, secp256r1, secp384r1, secp521r1: what browsers and OpenSSL
    /// offer, cheapest first. mbedTLS's own order would put secp521r1 first,
    /// which costs the server about twice the CPU of x25519 per handshake.
    static std::vector<std::string> defaultEllipticCurves();
    /// Every curve this build of mbedTLS has, under its names.
    static std::vector<std::string> supportedEllipticCurves();

    /// Sets the ALPN protocols (RFC 7301) offered, in the server's order of
    /// preference. Default {"http/1.1"}. An empty list turns ALPN off. Each
    /// name must be 1 to 255 bytes. mbedTLS 2.28 refuses the handshake with
    /// a no_application_protocol alert when the client offers ALPN but none
    /// of these.
    bool setAllowedNextProtocols(std::vector<std::string> protocols);
    const std::vector<std::string>& allowedNextProtocols() const noexcept;

    /// Whether the server issues session tickets (RFC 5077) so that clients
    /// can resume without a full handshake. Default true. The ticket keys
    /// live in the server's memory only and rotate every lifetime.
    void setSessionTicketsEnabled(bool enabled);
    bool sessionTicketsEnabled() const noexcept;
    /// How long a ticket stays valid, and how often the ticket keys rotate.
    /// Default 86400 s; taken as at least 1 s and at most 7 days.
    void setSessionTicketLifetime(std::chrono::seconds lifetime);
    std::chrono::seconds sessionTicketLifetime() const noexcept;

    /// The PSK identity hint handed to the application's PSK callback. Note
    /// that mbedTLS 2.28 sends no hint on the wire: its ServerKeyExchange
    /// always carries an empty one.
    void setPreSharedKeyIdentityHint(std::string hint);
    const std::string& preSharedKeyIdentityHint() const noexcept;

    // --- Errors -------------------------------------------------------------

    /// Why the last loading setter failed; empty after one that succeeded.
    const std::string& errorString() const noexcept;

private:
    struct Private;
    Private& d();
    const Private& d() const noexcept;

    // Null only in a moved-from object, which reads as the defaults.
    std::unique_ptr<Private> d_;
};

} // namespace wsgate
