// The server side of QWebSocket: one accepted WebSocket connection.
#pragma once

#include "wsgate/CloseCode.h"
#include "wsgate/Error.h"
#include "wsgate/SslCertificate.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgate {

namespace detail {
class Connection;
} // namespace detail

/// QAbstractSocket::SocketState, reduced to what a server-side socket goes through.
enum class SocketState {
    UnconnectedState,
    ConnectedState,
    ClosingState,
};

/// An accepted connection, from Server::nextPendingConnection() (or
/// Worker). The caller owns it. Destroying it while connected starts a close
/// handshake with CloseCodeGoingAway and detaches: the connection finishes
/// closing in the background and no callback fires any more.
///
/// Callbacks are Qt's signals: `onTextMessageReceived(f)` connects f to
/// textMessageReceived. One callback per signal; connecting again replaces
/// it, connecting nullptr disconnects. They are called on the loop's thread,
/// never from inside the call that caused them to be queued except where
/// noted. A callback may call any member, destroy the WebSocket included.
///
/// Views passed to callbacks (`std::string_view`) are valid only during the
/// call: copy what you keep.
class WebSocket {
public:
    using HeaderList = std::vector<std::pair<std::string, std::string>>;

    ~WebSocket();
    WebSocket(const WebSocket&) = delete;
    WebSocket& operator=(const WebSocket&) = delete;

    /// Sends a text message (UTF-8, not checked). Large messages are cut into
    /// frames of outgoingFrameSize(). Returns the number of bytes accepted (the
    /// message's size), 0 when not connected.
    std::size_t sendTextMessage(std::string_view message);
    /// Sends a binary message. As sendTextMessage.
    std::size_t sendBinaryMessage(std::string_view data);
    /// Sends a ping; onPong reports the round trip. The payload is cut to 125 bytes.
    void ping(std::string_view payload = {});
    /// Starts the close handshake (RFC 6455 §7.1.2): sends a close frame and
    /// waits up to closeTimeout() for the peer's, then closes TCP. A code that
    /// may not be sent (1005, 1006, 1015, below 1000…) gives a close frame
    /// with no code; the reason is cut at a character boundary to 123 bytes.
    void close(CloseCode code = CloseCode::CloseCodeNormal, std::string_view reason = {});
    /// Drops the TCP connection at once, with no close frame.
    void abort();

    SocketState state() const noexcept;
    bool isValid() const noexcept { return state() == SocketState::ConnectedState; }
    /// The peer's close code (CloseCodeMissingStatusCode when its close frame
    /// had none, CloseCodeAbnormalDisconnection when TCP dropped without one),
    /// or the code we failed the connection with.
    CloseCode closeCode() const noexcept;
    std::string closeReason() const;
    /// The last error, and its text.
    std::error_code error() const noexcept;
    std::string errorString() const;

    /// ws://host/path?query (wss:// over TLS), from the request's Host and target.
    std::string requestUrl() const;
    /// The path and query the client asked for.
    std::string resourceName() const;
    /// The Origin header, empty when absent.
    std::string origin() const;
    /// The negotiated subprotocol, empty when none.
    std::string subprotocol() const;
    /// Every request header as received, in order.
    const HeaderList& requestHeaders() const;
    /// The first value of header `name` (case-insensitive), empty when absent.
    std::string requestHeader(std::string_view name) const;
    /// Always 13 (RFC 6455).
    static constexpr int version() noexcept { return 13; }

    /// Addresses as text (IPv6 without brackets) and ports; empty and 0
    /// once the socket is closed and they were never asked for.
    std::string peerAddress() const;
    std::uint16_t peerPort() const;
    std::string localAddress() const;
    std::uint16_t localPort() const;

    /// True for a wss:// connection.
    bool isSecure() const noexcept;
    /// The client's certificate, when it sent one (wss:// only).
    std::optional<SslCertificate> peerCertificate() const;
    /// The TLS version ("TLSv1.2") and mbedTLS's name of the cipher suite;
    /// empty for ws://.
    std::string sslProtocol() const;
    std::string sslCipher() const;
    /// The name the client asked for by SNI, empty when none.
    std::string sslServerName() const;
    /// The ALPN protocol chosen, empty when none.
    std::string sslNextProtocol() const;
    /// Whether the client resumed an earlier TLS session with a ticket.
    bool sslSessionResumed() const noexcept;

    /// Bytes queued for the socket and not yet written. While more than 1 MiB
    /// waits, the peer is not read (so a peer that does not read cannot make
    /// its pongs, or an echo of its messages, grow the queue); reading
    /// resumes when half of it is written. What the application sends on its
    /// own is queued whatever the size: watch this and onBytesWritten.
    std::size_t bytesToWrite() const noexcept;
    /// Stops reading from the peer (backpressure: e.g. while a consumer of
    /// the messages is slow). Messages already read are still delivered.
    void pauseReading();
    void resumeReading();
    bool isReadingPaused() const noexcept;

    /// Incoming limits; a frame or message over them fails the connection
    /// with 1009 before anything is kept. Defaults 16 MiB each (Server sets them).
    void setMaxAllowedIncomingFrameSize(std::uint64_t size);
    std::uint64_t maxAllowedIncomingFrameSize() const noexcept;
    void setMaxAllowedIncomingMessageSize(std::uint64_t size);
    std::uint64_t maxAllowedIncomingMessageSize() const noexcept;
    static constexpr std::uint64_t maxIncomingFrameSize() noexcept { return 1ULL << 62; }
    static constexpr std::uint64_t maxIncomingMessageSize() noexcept { return 1ULL << 62; }
    /// Outgoing messages are cut into frames of at most this many bytes.
    /// Default 512 KiB; 0 or more than maxOutgoingFrameSize() is refused
    /// (returns false and changes nothing).
    bool setOutgoingFrameSize(std::uint64_t size);
    std::uint64_t outgoingFrameSize() const noexcept;
    static constexpr std::uint64_t maxOutgoingFrameSize() noexcept { return 1ULL << 31; }
    /// How long a message may take from its first byte to its last (see
    /// Server::setMessageTimeout); 0 disables. Applies from the next message.
    void setMessageTimeout(std::chrono::milliseconds timeout) noexcept;
    std::chrono::milliseconds messageTimeout() const noexcept;
    /// How long close() waits for the peer's close frame. Default 5 s.
    void setCloseTimeout(std::chrono::milliseconds timeout) noexcept;
    std::chrono::milliseconds closeTimeout() const noexcept;

    // Signals.
    void onTextMessageReceived(std::function<void(std::string_view message)> f);
    void onBinaryMessageReceived(std::function<void(std::string_view message)> f);
    /// Each frame of a data message, with isLastFrame on the one that ends it.
    /// Called before the message callback. Costs nothing while unconnected.
    void onTextFrameReceived(std::function<void(std::string_view frame, bool isLastFrame)> f);
    void onBinaryFrameReceived(std::function<void(std::string_view frame, bool isLastFrame)> f);
    /// A pong, with the time since the matching ping() (0 for unsolicited ones).
    void onPong(std::function<void(std::chrono::microseconds elapsed, std::string_view payload)> f);
    /// Pings from the peer are answered automatically; this reports them.
    void onPingReceived(std::function<void(std::string_view payload)> f);
    /// The connection is closed (after the close handshake, or abnormally).
    /// Called once; the WebSocket may be destroyed from inside it.
    void onDisconnected(std::function<void()> f);
    /// The peer broke the protocol, the TLS session failed or the socket
    /// failed; called before onDisconnected.
    void onError(std::function<void(std::error_code error)> f);
    /// Bytes of frames handed to the kernel.
    void onBytesWritten(std::function<void(std::size_t bytes)> f);
    void onStateChanged(std::function<void(SocketState state)> f);
    /// Called just before the close handshake starts (either side).
    void onAboutToClose(std::function<void()> f);

private:
    friend class detail::Connection;
    friend class Server;
    explicit WebSocket(detail::Connection* connection);

    // Everything else lives in the connection: an idle WebSocket is this
    // one pointer.
    detail::Connection* connection_;
};

} // namespace wsgate
