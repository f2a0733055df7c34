// A problem with a client's certificate, as QSslError.
#pragma once

#include <string>

namespace wsgate {

/// One problem found while verifying a client's certificate chain. The
/// codes are QSslError::SslError's names for what mbedTLS can tell.
struct SslError {
    enum class Code {
        UnableToGetLocalIssuerCertificate, ///< No trusted CA signed it.
        SelfSignedCertificate,             ///< The client's certificate signs itself.
        SelfSignedCertificateInChain,      ///< A self-signed CA in the chain is not trusted.
        CertificateNotYetValid,
        CertificateExpired,
        CertificateRevoked,
        InvalidPurpose,      ///< keyUsage or extendedKeyUsage forbid client authentication.
        PathLengthExceeded,  ///< The chain is longer than peerVerifyDepth().
        NoPeerCertificate,   ///< The client sent no certificate.
        CertificateRejected, ///< A weak hash, key or algorithm, or another reason.
    };
    Code code = Code::CertificateRejected;
    /// Position in the chain: 0 is the client's own certificate, -1 none.
    int depth = 0;
    /// The subject of the certificate concerned, e.g. "CN=client, O=wsgate".
    std::string certificateSubject;

    /// A short sentence, as QSslError::errorString().
    std::string errorString() const;
};

/// A TLS alert (RFC 5246 §7.2), as Qt's alertReceived/alertSent report it.
/// mbedTLS 2.28 shows some alerts only as "an alert happened": then level
/// and type are 255 (Qt's UnknownAlertMessage). docs/tls.md says which.
struct SslAlert {
    enum class Level : unsigned char { Warning = 1, Fatal = 2, Unknown = 255 };
    Level level = Level::Unknown;
    /// RFC 5246 AlertDescription (0 close_notify, 40 handshake_failure, …), 255 unknown.
    unsigned char type = 255;

    /// The alert's name, e.g. "handshake_failure".
    std::string description() const;
};

} // namespace wsgate
