// One accepted socket on the loop: its handshake, its protocol state, its
// write queue and its close sequence. The socket is read and written here
// with system calls of our own, not through a libuv stream (LoopData says
// why). The public WebSocket is a separate
// object that points here; this one lives until libuv is done with the
// socket and the WebSocket is gone, whichever comes last.
#pragma once

#include "net/DeadlineQueue.h"
#include "net/IoRing.h"
#include "net/RequestInfo.h"
#include "net/TlsSession.h"
#include "proto/Handshake.h"
#include "proto/Protocol.h"
#include "wsgate/ClientInfo.h"
#include "wsgate/WebSocket.h"

#include <sys/uio.h>
#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace wsgate::detail {

struct LoopData;
struct ServerState;

/// Callbacks other than the three inline ones, and the request's header list,
/// allocated by the first one asked for so that a connection that uses none
/// pays one pointer.
struct SocketSignals {
    std::function<void(std::string_view, bool)> textFrame;
    std::function<void(std::string_view, bool)> binaryFrame;
    std::function<void(std::chrono::microseconds, std::string_view)> pong;
    std::function<void(std::string_view)> ping;
    std::function<void()> aboutToClose;
    std::function<void(std::error_code)> error;
    std::function<void(std::size_t)> bytesWritten;
    std::function<void(SocketState)> stateChanged;
    std::uint64_t pingSentAt = 0; // uv_hrtime() of the last ping()
    /// Built from the RequestInfo by the first WebSocket::requestHeaders().
    std::unique_ptr<WebSocket::HeaderList> requestHeaders;
};

class Connection final : public net::DeadlineEntry, private proto::ProtocolHandler {
public:
    enum class Phase : std::uint8_t {
        Handshake,     ///< Reading the upgrade request (owned by its server).
        Pending,       ///< Accepted, waiting for nextPendingConnection (owned by its server).
        Open,          ///< Handed to a WebSocket.
        Draining,      ///< Closing: flushing, then FIN, then waiting for the peer's FIN.
        HandleClosing, ///< uv_close called.
        HandleClosed,
    };

    /// Takes a socket accept4() returned (non-blocking, close-on-exec);
    /// 0 or a negative errno, the socket closed then.
    static int accept(ServerState& server, int fd);
    /// accept() for `count` sockets (at most net::IoRing::capacity), watched
    /// in one system call where the ring allows; `results` gets each one's
    /// 0 or negative errno.
    static void acceptAll(ServerState& server, const int* fds, unsigned count, int* results);
    /// Adopts an accepted socket from the application.
    static int adopt(ServerState& server, int fd);

    // From the server.
    /// Takes a pending connection out of its server for `socket`.
    void bind(WebSocket* socket);
    /// The server closes: a handshake in progress is dropped, a pending
    /// connection is closed with 1001.
    void dropFromServer();
    static void onHandshakeDeadline(net::DeadlineEntry& entry, void* context);

    // From the WebSocket.
    void detach();
    std::size_t sendMessage(proto::MessageType type, std::string_view data,
                            std::size_t fragmentSize);
    void ping(std::string_view payload);
    void close(CloseCode code, std::string_view reason);
    void abort();
    SocketState socketState() const noexcept;
    std::size_t bytesToWrite() const noexcept;
    void setReadingPaused(bool paused);
    bool readingPaused() const noexcept { return readingPaused_; }
    proto::Protocol& protocol() noexcept { return protocol_; }
    const RequestInfo& request() const noexcept { return request_; }
    /// Peer (true) or local address and port.
    bool address(bool peer, std::string& host, std::uint16_t& port) const;
    SocketSignals& signals();
    /// The request's headers as a list, built on the first call.
    const WebSocket::HeaderList& requestHeaders();
    void updateFrameDelivery() noexcept;

    // What the WebSocket reports, kept here so that a WebSocket is one pointer.
    CloseCode closeCode() const noexcept { return static_cast<CloseCode>(closeCode_); }
    std::string closeReason() const;
    std::error_code error() const noexcept;
    // closeTimeoutMs, messageTimeoutMs and outgoingFrameSize are at the end.

    /// The callbacks live here, not in the WebSocket: a callback may destroy
    /// its WebSocket, and this object outlives the call. The three that
    /// nearly every application connects are inline; the rest are in
    /// SocketSignals.
    std::function<void(std::string_view)> textMessage;
    std::function<void(std::string_view)> binaryMessage;
    std::function<void()> disconnected;

    // From the loop.
    /// What epoll reported for the socket (edge-triggered), with the result
    /// of the read the loop made for it in a batch (IoRing::notMade for none)
    /// and where that read put the bytes.
    void onSocketEvents(std::uint32_t events, std::uint8_t* batchData = nullptr,
                        int batchResult = net::IoRing::notMade);
    /// Takes note of the events; true if the loop should read the socket in
    /// its batch of reads.
    bool wantsBatchedRead(std::uint32_t events) noexcept;
    int socketFd() const noexcept { return fd_; }
    /// The loop made this connection's send from its outbox: `result` is
    /// what send(2) returned for these bytes (IoRing::notMade: not made).
    /// Calls no callback: the batch is still being sent.
    void onBatchedSend(const char* data, std::size_t size, int result);
    /// After the batch: bytesWritten, a failed write, a close that waited.
    void afterBatchedSend(int result);
    static void onCloseDeadline(net::DeadlineEntry& entry);
    static void onMessageDeadline(net::DeadlineEntry& entry);
    static void onTlsIdleDeadline(net::DeadlineEntry& entry);
    void runDeferred();

    /// The TLS session of a wss:// connection, null for ws://.
    const net::TlsSession* tlsSession() const noexcept;

private:
    Connection(ServerState& server);
    ~Connection();

    class Busy;
    struct HandshakeState;
    struct WriteOp;
    struct TlsState;
    friend struct TlsState;

    /// A connection on socket `fd`, watched by the loop.
    static int create(ServerState& server, int fd);
    int start(std::uint64_t handshakeTimeoutMs);
    /// Runs runDeferred on the next loop iteration, once however often asked.
    void defer();
    /// Reads while the socket has bytes and reading is wanted, up to a bound
    /// per turn so that one busy peer cannot hold the loop. The first
    /// `carried` bytes of the read buffer were read already: they go first,
    /// with what the next read adds behind them.
    void readSocket(std::size_t carried = 0);
    /// Edge-triggered: an input event says the socket has bytes until a
    /// read drains it.
    void noteReadable(std::uint32_t events) noexcept;
    /// Takes the result of a batched read.
    void takeBatchedRead(std::uint8_t* data, int result);
    /// Keeps the bytes the socket did not take, for EPOLLOUT.
    void keepUnsent(const iovec* bufs, unsigned count, std::size_t written);
    /// Writes what waits in writing_, as far as the socket takes it.
    void writePending();
    /// send(2) or sendmsg(2) without SIGPIPE: the bytes written, 0 when the
    /// socket is full, or a negative errno.
    std::ptrdiff_t sendSome(const iovec* iov, unsigned count);
    /// The last step of closeHandle, run on the next iteration so that no
    /// event already taken from epoll can reach a freed connection.
    void finishClose();

    void onBytes(std::uint8_t* data, std::size_t size);
    void onReadEnd(int status);
    void processInput(std::uint8_t* data, std::size_t size);
    void handshakeInput(std::uint8_t* data, std::size_t size);
    void completeHandshake(const std::uint8_t* rest, std::size_t restSize);
    void refuse(Error error);
    /// Writes plaintext: through TLS for wss://, else to the socket.
    void writeBytes(const iovec* bufs, unsigned count);
    void socketWrite(const iovec* bufs, unsigned count);
    /// Starts the batch during which frames are gathered in the loop's cork
    /// buffer, and ends it by writing them out.
    void cork();
    void uncork();
    void flushTls();
    ClientInfo clientInfo() const;
    void flush();
    /// Frees a finished write, keeping its buffer as the loop's spare.
    void releaseWriteOp(WriteOp* op);
    /// Stops reading the peer while too much waits to be written to it.
    void checkBackpressure();
    void failWrite(int error);
    /// Tells bytesWritten, if connected.
    void reportWritten(std::size_t bytes);
    void beginDrain(std::uint64_t timeoutMs);
    void startShutdown();
    /// A ws:// close handshake is complete: the socket can be closed at once.
    bool closeHandshakeDone() const noexcept;
    void closeHandle();
    void setError(Error error);
    void maybeFree();
    /// uv_close has been called: the socket is gone or going.
    bool closing() const noexcept {
        return phase_ == Phase::HandleClosing || phase_ == Phase::HandleClosed;
    }
    void updateReading();
    /// After a read batch: a message left incomplete has a deadline from
    /// when it began; trickling bytes does not move it.
    void updateMessageDeadline();
    void armCloseDeadline(std::uint64_t timeoutMs);
    /// After a wss:// read batch: restarts the quiet period after which the
    /// TLS record buffers are released, unless a message or close deadline
    /// holds the entry.
    void armTlsIdleDeadline();
    void emitStateChanged(SocketState state);
    void emitAboutToClose();

    // proto::ProtocolHandler
    void onMessage(proto::MessageType type, std::uint8_t* data, std::size_t size) override;
    void onFrame(proto::MessageType type, const std::uint8_t* data, std::size_t size,
                 bool isLastFrame) override;
    void onPing(const std::uint8_t* data, std::size_t size) override;
    void onPong(const std::uint8_t* data, std::size_t size) override;
    void onClose(std::uint16_t code, std::string_view reason) override;
    void onFailure(Error error) override;
    void sendFrame(const std::uint8_t* header, std::size_t headerSize, const std::uint8_t* payload,
                   std::size_t payloadSize) override;

    LoopData& loop_;
    ServerState* server_; // set while Handshake or Pending
    WebSocket* socket_ = nullptr;
    std::unique_ptr<HandshakeState> handshake_;
    RequestInfo request_;
    std::unique_ptr<SocketSignals> signals_;
    std::unique_ptr<TlsState> tls_;
    proto::Protocol protocol_;
    WriteOp* writing_ = nullptr; // what the socket has not taken yet, in order

    // The small fields go last and together, and the flags that are not read
    // for every message share bytes, so that the object stays in a small
    // malloc chunk (HotPathTest guards its size).
public:
    std::uint32_t closeTimeoutMs = 5000;
    std::uint32_t messageTimeoutMs = 60000; // 0: none
    std::uint32_t outgoingFrameSize = 512 * 1024;

private:
    int fd_ = -1;
    std::uint32_t busy_ = 0;
    std::uint16_t closeCode_ = static_cast<std::uint16_t>(CloseCode::CloseCodeNormal);
    Phase phase_ = Phase::Handshake;
    std::uint8_t error_ = 0; // an Error, 0 for none: the category is always ours
    bool corked_ = false;
    bool reading_ = false;          // wanted: the phase and the flow control allow it
    bool readable_ = false;         // epoll said so, and no read has drained it since
    bool messageDelivered_ = false; // a message completed in this read batch
    bool readingPaused_ : 1 = false;
    bool draining_ : 1 = false;
    bool shutdownStarted_ : 1 = false;
    bool closeInitiated_ : 1 = false;     // we sent the first close frame
    bool reasonFromError_ : 1 = false;    // closeReason() is error_'s message
    bool messageDeadline_ : 1 = false;    // linked into the loop's messageQueue
    bool outputBackpressure_ : 1 = false; // not reading: too much waits to be written
    bool deferQueued_ : 1 = false;        // in the loop's deferred queue
    bool tlsIdleDeadline_ : 1 = false;    // linked into the loop's tlsIdleQueue
    bool queued_ : 1 = false;             // has bytes in the loop's outbox
    bool bulkReads_ : 1 = false;          // its last read was a batch slice or more
};

} // namespace wsgate::detail
