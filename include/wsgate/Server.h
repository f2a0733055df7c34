// QWebSocketServer for modern C++ on libuv.
#pragma once

#include "wsgate/ClientInfo.h"
#include "wsgate/CloseCode.h"
#include "wsgate/CorsAuthenticator.h"
#include "wsgate/EventLoop.h"
#include "wsgate/PreSharedKeyAuthenticator.h"
#include "wsgate/SslConfiguration.h"
#include "wsgate/SslError.h"
#include "wsgate/WebSocket.h"

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace wsgate {

namespace detail {
class Connection;
class Listener;
struct ServerState;
} // namespace detail

/// A WebSocket server: it listens, runs the opening handshake of each
/// connection and queues the accepted ones for nextPendingConnection(), as
/// QWebSocketServer does.
///
/// Callbacks are Qt's signals (`onNewConnection(f)` connects f to
/// newConnection); one per signal, connecting again replaces it. They run on
/// the loop's thread.
///
/// Destroying the server closes it (see close()). WebSockets already taken
/// with nextPendingConnection() are the caller's and live on.
class Server {
public:
    enum class SslMode {
        SecureMode,    ///< wss://; needs an SslConfiguration.
        NonSecureMode, ///< ws://
    };

    Server(std::string serverName, SslMode secureMode, EventLoop& loop);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    /// Listens on `address` (an IPv4 or IPv6 literal; empty for any address,
    /// IPv6 and IPv4 both) and `port` (0 picks a free one). Returns false and
    /// sets error() when it cannot.
    bool listen(const std::string& address = {}, std::uint16_t port = 0);
    /// Stops listening. Handshakes in progress are dropped, connections not
    /// yet taken are closed with CloseCodeGoingAway; onClosed fires.
    void close();
    bool isListening() const noexcept;
    /// The address listened on, as text (IPv6 without brackets).
    std::string serverAddress() const;
    std::uint16_t serverPort() const;
    /// ws://host:port (wss:// in SecureMode), IPv6 hosts in brackets.
    std::string serverUrl() const;

    /// The name sent in the `Server` header of handshake responses; empty
    /// sends none. A change applies to new connections.
    void setServerName(std::string name);
    const std::string& serverName() const noexcept;
    SslMode secureMode() const noexcept;

    /// Stops accepting: new TCP connections wait in the kernel's backlog.
    void pauseAccepting();
    void resumeAccepting();

    /// How many handshaken connections may wait for nextPendingConnection()
    /// (default 30). Past it a handshake is refused with 503 and serverError
    /// reports CloseCodeAbnormalDisconnection. Handshakes in progress do not
    /// count. Returns false, changing nothing, unless 1 ≤ n ≤ 65535.
    bool setMaxPendingConnections(int n);
    int maxPendingConnections() const noexcept;
    bool hasPendingConnections() const noexcept;
    /// The next accepted connection, owned by the caller; null when none.
    std::unique_ptr<WebSocket> nextPendingConnection();

    /// The deadline for a connection's whole handshake (TLS and HTTP),
    /// from accept. Default 10 s. Negative disables it. Applies to new
    /// connections.
    void setHandshakeTimeout(std::chrono::milliseconds timeout) noexcept;
    void setHandshakeTimeout(int milliseconds) noexcept {
        setHandshakeTimeout(std::chrono::milliseconds(milliseconds));
    }
    std::chrono::milliseconds handshakeTimeout() const noexcept;
    int handshakeTimeoutMS() const noexcept { return static_cast<int>(handshakeTimeout().count()); }

    /// How long a message may take from its first byte to its last, given to
    /// each new connection. Default 60 s; 0 disables. A message still
    /// incomplete then fails its connection with 1008 (Qt resets its timer
    /// on every byte, so a peer that trickles keeps a frame open forever).
    void setMessageTimeout(std::chrono::milliseconds timeout) noexcept;
    std::chrono::milliseconds messageTimeout() const noexcept;

    /// The subprotocols the server speaks; each handshake gets the first of
    /// the client's offers that is in this list.
    void setSupportedSubprotocols(std::vector<std::string> protocols);
    const std::vector<std::string>& supportedSubprotocols() const noexcept;
    /// {13}.
    static std::vector<int> supportedVersions() { return {13}; }

    /// Limits given to each new connection (WebSocket can change its own).
    void setMaxAllowedIncomingFrameSize(std::uint64_t size);
    std::uint64_t maxAllowedIncomingFrameSize() const noexcept;
    void setMaxAllowedIncomingMessageSize(std::uint64_t size);
    std::uint64_t maxAllowedIncomingMessageSize() const noexcept;
    /// Request headers over this many bytes are refused with 431 (default 16 KiB).
    void setMaxHandshakeSize(std::size_t bytes);
    std::size_t maxHandshakeSize() const noexcept;

    /// Adopts an already listening socket (for instance one systemd passed
    /// in). The server owns it from then on. False and error() if it cannot.
    bool setSocketDescriptor(int fd);
    /// The listening socket, -1 when not listening.
    int socketDescriptor() const;

    /// Runs the handshake on an already accepted TCP socket, which the server
    /// owns from then on, under the same rules and timeout as accepted ones.
    bool handleConnection(int fd);

    /// The TLS settings of a SecureMode server, checked at once: false, with
    /// the reason in errorString(), when they cannot serve (a key that does
    /// not match its certificate, no usable cipher suite, VerifyPeer without
    /// CA certificates…). Applies to new connections. listen() in SecureMode
    /// fails until a configuration is set.
    bool setSslConfiguration(const SslConfiguration& configuration);
    SslConfiguration sslConfiguration() const;

    /// The last error as Qt reports it, and its text.
    CloseCode error() const noexcept;
    std::string errorString() const;

    // Signals.
    /// accept() failed; the server keeps listening. Out of file descriptors
    /// (EMFILE, ENFILE) is the exception: the server then accepts and closes
    /// the waiting connections with a descriptor it holds in reserve, so
    /// their clients see a closed connection rather than a hang, and nothing
    /// is reported.
    void onAcceptError(std::function<void(std::error_code error)> f);
    void onClosed(std::function<void()> f);
    /// A connection finished its handshake and waits in the pending queue.
    void onNewConnection(std::function<void()> f);
    /// Asked during each handshake; all origins are allowed when unconnected.
    void onOriginAuthenticationRequired(std::function<void(CorsAuthenticator& authenticator)> f);
    /// A handshake failed (bad request, refused origin, timeout, queue full,
    /// failed TLS handshake: CloseCodeTlsHandshakeFailed).
    void onServerError(std::function<void(CloseCode closeCode)> f);

    // TLS signals (SecureMode). Unlike Qt's, each names its client. They fire
    // during a connection's handshake, before it is pending.
    /// VerifyPeer: one problem with the client's certificate, as found,
    /// before onSslErrors.
    void onPeerVerifyError(std::function<void(const ClientInfo& client, const SslError& error)> f);
    /// VerifyPeer: every problem, once the TLS handshake is done. Return true
    /// to ignore them (Qt's ignoreSslErrors) and go on; false, or no callback,
    /// drops the connection.
    void onSslErrors(
        std::function<bool(const ClientInfo& client, const std::vector<SslError>& errors)> f);
    /// With SslConfiguration::setHandshakeMustInterruptOnError: the first
    /// problem found, mid-handshake. Return true to continue (Qt's
    /// continueInterruptedHandshake); false, or no callback, stops it.
    void onHandshakeInterruptedOnError(
        std::function<bool(const ClientInfo& client, const SslError& error)> f);
    /// A client negotiates a PSK suite: set the key for its identity, or leave
    /// it empty to refuse the client.
    void onPreSharedKeyAuthenticationRequired(
        std::function<void(const ClientInfo& client, PreSharedKeyAuthenticator& authenticator)> f);
    /// TLS alerts received from and sent to a client, as far as mbedTLS 2.28
    /// shows them (docs/tls.md).
    void onAlertReceived(std::function<void(const ClientInfo& client, const SslAlert& alert)> f);
    void onAlertSent(std::function<void(const ClientInfo& client, const SslAlert& alert)> f);

private:
    friend class detail::Connection;
    std::unique_ptr<detail::ServerState> state_;
};

} // namespace wsgate
