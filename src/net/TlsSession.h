// One TLS server connection over mbedTLS 2.28, sans I/O: ciphertext in from
// the socket, plaintext out to the WebSocket core, and the reverse. No
// sockets, no libuv: the glue feeds receive() and writes what onTlsOutput()
// hands it.
#pragma once

#include "net/TlsContext.h"

#include <mbedtls/ssl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate::net {

/// A problem found in a client's certificate chain, named after Qt's
/// QSslError::SslError.
struct TlsVerifyError {
    enum class Code {
        UnableToGetLocalIssuerCertificate, ///< No trusted CA signed it.
        SelfSignedCertificate,             ///< The client's own certificate signs itself.
        SelfSignedCertificateInChain,      ///< A self-signed CA in the chain is not trusted.
        CertificateNotYetValid,            ///< Before its notBefore.
        CertificateExpired,                ///< After its notAfter.
        CertificateRevoked,                ///< On a CRL (wsgate loads none today).
        InvalidPurpose,                    ///< keyUsage, extendedKeyUsage or nsCertType forbid it.
        PathLengthExceeded,                ///< The chain is longer than peerVerifyDepth().
        NoPeerCertificate,                 ///< The client sent no certificate.
        CertificateRejected,               ///< Weak hash, key or algorithm, or another reason.
    };
    Code code;
    /// The MBEDTLS_X509_BADCERT_* bit behind it. PathLengthExceeded is
    /// wsgate's own check, passed on to mbedTLS as MBEDTLS_X509_BADCERT_OTHER.
    std::uint32_t mbedtlsFlag = 0;
    /// Position in the verified chain: 0 is the client's certificate; -1
    /// when there is no certificate.
    int depth = 0;
    /// Subject of the certificate concerned, empty for NoPeerCertificate.
    std::string subject;

    /// A short English sentence, like QSslError::errorString().
    static std::string_view describe(Code code) noexcept;
};

/// A TLS alert (RFC 5246 §7.2). When mbedTLS gives no way to read it (see
/// docs/tls.md) the level and description are `unknown`.
struct TlsAlert {
    static constexpr std::uint8_t unknown = 255;
    static constexpr std::uint8_t warning = 1;
    static constexpr std::uint8_t fatal = 2;
    std::uint8_t level = unknown;
    std::uint8_t description = unknown; ///< AlertDescription, e.g. 0 close_notify.
};

/// What the PSK hook is given and fills in (Qt's
/// QSslPreSharedKeyAuthenticator).
struct TlsPreSharedKeyAuthenticator {
    std::string_view identity;     ///< As the client sent it; valid during the call.
    std::string_view identityHint; ///< SslConfiguration::preSharedKeyIdentityHint().
    std::size_t maximumPreSharedKeyLength = 0;
    /// The key for `identity`; left empty (or longer than the maximum), the
    /// handshake fails with an unknown_psk_identity alert.
    std::vector<std::uint8_t> preSharedKey;
};

/// What the client's certificate says.
struct TlsPeerCertificate {
    std::string subject; ///< "CN=client, O=wsgate".
    std::string issuer;
    std::string serialNumber; ///< Hex bytes separated by colons.
    std::chrono::sys_seconds notBefore{};
    std::chrono::sys_seconds notAfter{};
    std::vector<std::uint8_t> der;
};

/// One TLS server connection. Bytes from the socket go into receive(); the
/// handler gets the plaintext, the ciphertext to write, and the events.
/// Not thread-safe; it belongs to its context's loop.
///
/// Re-entrancy: the handler may destroy the session from
/// onTlsHandshakeDone, onTlsPlaintext, onTlsError, onTlsCloseNotify,
/// onTlsSslErrors and the alert hooks, and may call send() and
/// sendCloseNotify() from them. From the hooks that run inside mbedTLS
/// (onTlsOutput, onTlsPeerVerifyError, onTlsHandshakeInterruptedOnError,
/// onTlsPreSharedKeyAuthenticationRequired) it must do neither: send()
/// returns false there and sendCloseNotify() does nothing.
class TlsSession {
public:
    class Handler {
    public:
        /// The handshake is complete (and, in VerifyPeer mode, the client's
        /// certificate accepted). send() works from now on.
        virtual void onTlsHandshakeDone() = 0;
        /// Decrypted application bytes, in order, as many records as one
        /// receive() call yields (up to TlsContext::plaintextBufferSize per
        /// call). The bytes may be changed in place (the WebSocket core
        /// unmasks them) and stay valid until the call returns.
        virtual void onTlsPlaintext(std::uint8_t* data, std::size_t size) = 0;
        /// Ciphertext to write to the socket, in order. Valid until the
        /// call returns: copy what cannot be written at once. One call per
        /// receive() or send() (more for sends over
        /// TlsContext::outputFlushThreshold). May run inside mbedTLS: take
        /// the bytes and return.
        virtual void onTlsOutput(const std::uint8_t* data, std::size_t size) = 0;
        /// The session failed with mbedTLS error `mbedtlsError` (negative,
        /// see tlsErrorString()); `duringHandshake` tells a failed handshake
        /// from a failed record. Any alert has been written already. The
        /// session accepts no more input; close the socket.
        virtual void onTlsError(int mbedtlsError, bool duringHandshake) = 0;
        /// The client sent close_notify: it will send nothing more.
        virtual void onTlsCloseNotify() = 0;

        /// VerifyPeer mode: one problem with the client's certificate, as
        /// found (Qt's peerVerifyError). Runs inside mbedTLS, except for
        /// NoPeerCertificate and resumed sessions, which are reported when
        /// the handshake completes.
        virtual void onTlsPeerVerifyError(const TlsVerifyError& /*error*/) {}
        /// VerifyPeer with handshakeMustInterruptOnError: each problem, right
        /// after onTlsPeerVerifyError. Return true to go on with the
        /// handshake (Qt's continueInterruptedHandshake), false to stop it
        /// there (mbedTLS sends access_denied; onTlsError follows). Runs
        /// inside mbedTLS. The default stops.
        virtual bool onTlsHandshakeInterruptedOnError(const TlsVerifyError& /*error*/) {
            return false;
        }
        /// VerifyPeer mode, handshake complete, problems found: return true
        /// to ignore them (Qt's ignoreSslErrors) and go on to
        /// onTlsHandshakeDone, false to refuse the client with a
        /// bad_certificate alert (handshake_failure when it sent no
        /// certificate) and onTlsError. The default refuses.
        virtual bool onTlsSslErrors(const std::vector<TlsVerifyError>& /*errors*/) { return false; }
        /// A client asks for a PSK suite with `authenticator.identity`: fill
        /// in preSharedKey, or leave it empty to refuse. Runs inside mbedTLS.
        virtual void
        onTlsPreSharedKeyAuthenticationRequired(TlsPreSharedKeyAuthenticator& /*authenticator*/) {}
        /// An alert came from the client. See docs/tls.md for which ones
        /// mbedTLS 2.28 lets us read.
        virtual void onTlsAlertReceived(TlsAlert /*alert*/) {}
        /// An alert was written to the client.
        virtual void onTlsAlertSent(TlsAlert /*alert*/) {}

    protected:
        virtual ~Handler() = default;
    };

    /// Both must outlive the session. Nothing is allocated until the first
    /// receive().
    TlsSession(TlsContext& context, Handler& handler) noexcept;
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;
    ~TlsSession();

    /// Feeds ciphertext from the socket. Drives the handshake, then
    /// decrypts records and hands their plaintext to onTlsPlaintext. Every
    /// byte is consumed (a partial record is kept inside mbedTLS). Ignored
    /// after onTlsError or onTlsCloseNotify. Not to be called from the
    /// session's own callbacks.
    void receive(const std::uint8_t* ciphertext, std::size_t size);

    /// Encrypts `plaintext` into records of up to 16 KiB and hands them to
    /// onTlsOutput, gathered. False, with nothing sent, before the handshake
    /// is done, after close_notify was sent, after a failure, or from a hook
    /// that runs inside mbedTLS; false as well when mbedTLS fails, in which
    /// case lastError() says why, the session is failed and no callback
    /// runs.
    bool send(const std::uint8_t* plaintext, std::size_t size);

    /// Sends close_notify (once, and only after the handshake). send() fails
    /// afterwards; receive() goes on until the client's own close_notify.
    void sendCloseNotify();

    /// Gives the pages inside the two 16 KiB record buffers back to the
    /// kernel (madvise MADV_DONTNEED) when no record is in either, so that an
    /// idle connection's RSS holds about a page of each instead of all of
    /// them; they come back zeroed, as page faults, when records next pass.
    /// Returns the bytes released, 0 when a record is in flight or before
    /// the handshake. The first bytes of each buffer, which hold the record
    /// counter and header, are kept.
    std::size_t releaseIdleMemory() noexcept;

    bool handshakeComplete() const noexcept { return handshakeDone_; }
    /// True after onTlsError, or after a failed send().
    bool failed() const noexcept { return failed_; }
    /// The mbedTLS error that failed the session, 0 if none.
    int lastError() const noexcept { return lastError_; }
    bool closeNotifySent() const noexcept { return closeNotifySent_; }
    bool closeNotifyReceived() const noexcept { return closeNotifyReceived_; }
    /// Whether the handshake was stopped by onTlsHandshakeInterruptedOnError.
    bool handshakeInterrupted() const noexcept { return interrupted_; }

    // What was negotiated; empty or false before the handshake completes.

    /// "TLSv1.2".
    std::string_view protocolVersion() const noexcept;
    /// mbedTLS's name of the suite, e.g. "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256".
    std::string_view cipherSuite() const noexcept;
    /// The ALPN protocol chosen, empty when the client offered none.
    std::string_view alpnProtocol() const noexcept;
    /// The name the client asked for by SNI, empty when none.
    std::string_view serverName() const noexcept { return serverName_; }
    /// Whether the client resumed a session with a ticket.
    bool sessionResumed() const noexcept { return resumed_; }

    /// The client's certificate, when it sent one.
    std::optional<TlsPeerCertificate> peerCertificate() const;
    /// mbedTLS's MBEDTLS_X509_BADCERT_* flags for the client's certificate;
    /// 0 when it was verified, or when no certificate was asked for.
    std::uint32_t peerVerifyFlags() const noexcept;
    /// Every problem found with the client's certificate, in the order
    /// found; kept in QueryPeer mode too, where they are not reported.
    const std::vector<TlsVerifyError>& peerVerifyErrors() const noexcept { return verifyErrors_; }

private:
    friend class TlsContext;

    // Scans the record headers of one direction, to see alerts go by.
    struct RecordScanner {
        std::uint8_t header[5] = {};
        std::uint8_t headerSize = 0;
        std::uint8_t alert[2] = {};
        std::uint16_t bodyLeft = 0;
        std::uint16_t bodyRead = 0;
        bool encrypted = false; // A ChangeCipherSpec went by.
        // Calls onAlert(alert, encrypted) for each complete alert record.
        template <typename OnAlert>
        void scan(const std::uint8_t* data, std::size_t size, OnAlert&& onAlert);
    };

    // Alerts seen inside mbedTLS, reported once it returns. More than a few
    // per call means a flood of warnings; the rest are dropped.
    struct AlertQueue {
        TlsAlert items[4];
        std::uint8_t size = 0;
        void push(TlsAlert alert) noexcept {
            if (size < 4) {
                items[size++] = alert;
            }
        }
    };

    // Lives across a handler call, so that a handler that destroys the
    // session can be noticed once it returns.
    struct Guard;
    // Marks a call into mbedTLS.
    struct MbedtlsCall;

    bool setUp();
    void continueHandshake();
    void finishHandshake();
    void readApplicationData();
    void fail(int mbedtlsError, bool duringHandshake);
    void refuseCertificate(bool noCertificate);
    void sendAlert(std::uint8_t level, std::uint8_t description);
    bool sentFatalAlert() const noexcept;
    bool recordVerifyErrors(const mbedtls_x509_crt* certificate, int depth, std::uint32_t flags);
    bool addVerifyError(TlsVerifyError error);
    bool reportAlerts();
    void beginOutput() noexcept;
    void endOutput();
    void resolveReceivedAlert(int mbedtlsResult) noexcept;

    static int onBioSend(void* self, const unsigned char* data, std::size_t size) noexcept;
    static int onBioReceive(void* self, unsigned char* data, std::size_t size) noexcept;
    static int onVerify(void* self, mbedtls_x509_crt* certificate, int depth,
                        std::uint32_t* flags) noexcept;

    TlsContext& context_;
    Handler& handler_;
    mbedtls_ssl_context ssl_;

    // The ciphertext of the current receive() call not yet taken by mbedTLS.
    const std::uint8_t* input_ = nullptr;
    std::size_t inputLeft_ = 0;

    std::vector<TlsVerifyError> verifyErrors_;
    std::string serverName_;
    bool* destroyed_ = nullptr;

    RecordScanner inScanner_;
    RecordScanner outScanner_;
    AlertQueue alertsReceived_; // Waiting to be reported.
    AlertQueue alertsSent_;
    int lastError_ = 0;

    bool setUp_ = false;
    bool handshakeDone_ = false;
    bool failed_ = false;
    bool closeNotifySent_ = false;
    bool closeNotifyReceived_ = false;
    bool resumed_ = false;
    bool interrupted_ = false;
    bool busy_ = false;             // Inside mbedTLS or onTlsOutput: no re-entry.
    bool gathering_ = false;        // Output goes to the context's buffer.
    bool encryptedAlertIn_ = false; // An encrypted alert record was read, not yet resolved.
    bool ownAlert_ = false;         // The alert being written is ours, reported already.
};

} // namespace wsgate::net
