// A blocking TLS 1.2 client for the integration tests, on mbedTLS's client
// side: it runs the handshake on a socket a test connected, then carries a
// RawClient's bytes (ClientTransport) or the test's own.
#pragma once

#include "support/ClientTransport.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate::test {

/// A TLS session kept from one connection to resume it on the next
/// (mbedtls_ssl_get_session / mbedtls_ssl_set_session). Opaque.
class TlsClientSession;

/// How the client checks the server's certificate.
enum class ServerVerify {
    None,     ///< Not checked at all (the certificate is still recorded).
    Optional, ///< Checked against caPem; the result is kept, the handshake goes on.
    Required, ///< Checked against caPem and serverName; failure ends the handshake.
};

struct TlsClientOptions {
    /// Roots the server's certificate must chain to (PEM).
    std::string caPem;
    /// Required when caPem is set, None otherwise, unless given.
    std::optional<ServerVerify> verify;
    /// The client's certificate chain and key (PEM); both empty for none.
    std::string certificatePem;
    std::string privateKeyPem;
    /// Sent as SNI and checked against the server's certificate; empty sends
    /// no SNI.
    std::string serverName;
    /// ALPN protocols offered, in order; empty offers none.
    std::vector<std::string> alpn;
    /// A PSK identity and key; with both set the client offers PSK suites.
    std::string pskIdentity;
    std::string psk;
    /// Cipher suites offered, mbedTLS names; empty: mbedTLS's client defaults.
    std::vector<std::string> ciphers;
    /// Offered for resumption when set.
    std::shared_ptr<const TlsClientSession> session;
    /// Bounds the whole handshake.
    std::chrono::milliseconds timeout{5000};
};

/// A TLS alert as it came over the wire.
struct TlsClientAlert {
    std::uint8_t level = 0;
    std::uint8_t description = 0;
};

/// One client connection's TLS. It does not own the socket: close it after
/// the TlsClient is gone. Not thread-safe; one per thread.
class TlsClient final : public ClientTransport {
public:
    TlsClient();
    ~TlsClient() override;

    /// Where handshakeUntil() stops.
    enum class Step {
        ServerHelloDone, ///< The server's first flight is read; nothing sent since the ClientHello.
        Done,            ///< The handshake is complete.
    };

    /// Sets the TLS state up for the connected socket `fd` (made
    /// non-blocking). False, with errorString(), on a bad option.
    bool setup(int fd, const TlsClientOptions& options);
    /// Runs the handshake up to `step` within the options' timeout. False
    /// when it failed or timed out; errorString() says why, alertReceived()
    /// has the server's alert if one came.
    bool handshakeUntil(Step step);
    /// setup() then the whole handshake.
    bool handshake(int fd, const TlsClientOptions& options);
    /// Replaces the options' timeout for later handshakeUntil() calls, e.g.
    /// to go on after one that timed out on purpose.
    void setTimeout(std::chrono::milliseconds timeout) noexcept;

    /// The mbedTLS error of the last failure (0 when none, 1 for a timeout).
    int lastError() const noexcept { return lastError_; }
    /// What went wrong last, in words.
    const std::string& errorString() const noexcept { return errorString_; }
    bool timedOut() const noexcept { return timedOut_; }

    // After the handshake.
    std::string protocol() const;
    std::string cipher() const;
    /// The ALPN protocol the server chose, empty when none.
    std::string alpn() const;
    /// The server certificate's subject and issuer, as mbedTLS prints them;
    /// empty when there was none (PSK).
    std::string serverCertificateSubject() const;
    std::string serverCertificateIssuer() const;
    /// mbedtls_ssl_get_verify_result() of the server certificate.
    std::uint32_t verifyResult() const;
    /// Whether the server resumed the offered session (its ServerHello
    /// echoed our session ID).
    bool sessionResumed() const noexcept { return resumed_; }
    /// The session to resume later; null before the handshake is done.
    std::shared_ptr<const TlsClientSession> saveSession() const;

    /// Sends an alert now, in the clear before the handshake has keys,
    /// encrypted after. True when it was written.
    bool sendAlert(std::uint8_t level, std::uint8_t description);
    /// Sends close_notify. True when it was written.
    bool sendCloseNotify();

    /// Writes bytes as they are, past TLS: for tests that corrupt the stream.
    bool sendRaw(std::string_view bytes);

    /// The fatal alert the server sent, when one came.
    const std::optional<TlsClientAlert>& alertReceived() const noexcept { return alert_; }
    /// The server sent close_notify.
    bool closeNotifyReceived() const noexcept { return closeNotify_; }
    /// Bytes that came after the server's close_notify (there must be none).
    const std::string& bytesAfterCloseNotify() const noexcept { return afterCloseNotify_; }

    // ClientTransport.
    bool send(std::string_view bytes, std::chrono::milliseconds stall) override;
    /// Eof when the server's close_notify and then its FIN came, after a
    /// fatal alert, or at a FIN without close_notify (a server may close so);
    /// Reset on a TCP reset or a record that cannot be read.
    Status receive(std::string& out, Clock::time_point deadline) override;
    void shutdownWrite() override;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    int lastError_ = 0;
    std::string errorString_;
    bool timedOut_ = false;
    bool resumed_ = false;
    bool closeNotify_ = false;
    std::optional<TlsClientAlert> alert_;
    std::string afterCloseNotify_;

    void fail(int error, std::string_view what);
    Status waitForTcpEof(Clock::time_point deadline);
};

/// The name of an mbedTLS error code.
std::string mbedtlsErrorString(int error);

} // namespace wsgate::test
