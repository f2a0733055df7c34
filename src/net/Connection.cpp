#include "net/Connection.h"

#include "lib/ServerState.h"
#include "net/LoopData.h"
#include "net/SocketAddress.h"
#include "wsgate/PreSharedKeyAuthenticator.h"
#include "wsgate/SslError.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cassert>
#include <cerrno>
#include <cstring>

namespace wsgate::detail {
namespace {

/// How long a refused or closed connection may take to send its FIN once our
/// last bytes are out. Past it the socket is simply closed.
constexpr std::uint64_t lingerTimeoutMs = 2000;

/// While more than this waits behind a write, the peer is not read: its
/// pings and whatever an application echoes cannot grow our memory when it
/// does not read its own. Reading resumes once half of it is out.
constexpr std::size_t readPauseThreshold = 1024 * 1024;

/// A frame whose payload is at least this large is written at once even
/// inside a read batch, rather than copied into the batch's buffer.
constexpr std::size_t directWriteThreshold = 16 * 1024;

/// Reads of a full buffer one socket gets per turn of the loop before the
/// others: 4 MiB at 512 KiB each.
constexpr int readsPerTurn = 8;

iovec makeBuf(const void* data, std::size_t size) {
    return {const_cast<void*>(data), size};
}

} // namespace

/// Keeps the connection allocated while a callback chain runs on it; the
/// last one out frees it if it is done.
class Connection::Busy {
public:
    explicit Busy(Connection& c) : c_(c) { ++c_.busy_; }
    ~Busy() {
        if (--c_.busy_ == 0) {
            c_.maybeFree();
        }
    }
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;

private:
    Connection& c_;
};

struct Connection::HandshakeState {
    explicit HandshakeState(std::size_t maxHeaderBytes) : parser(maxHeaderBytes) {}
    proto::HandshakeParser parser;
    std::string rest; // bytes read past the request, for the frame layer
};

namespace {

// The public codes are the engine's, one to one.
static_assert(static_cast<int>(SslError::Code::CertificateRejected) ==
              static_cast<int>(net::TlsVerifyError::Code::CertificateRejected));
static_assert(static_cast<int>(SslError::Code::NoPeerCertificate) ==
              static_cast<int>(net::TlsVerifyError::Code::NoPeerCertificate));
static_assert(static_cast<int>(SslError::Code::UnableToGetLocalIssuerCertificate) ==
              static_cast<int>(net::TlsVerifyError::Code::UnableToGetLocalIssuerCertificate));

SslError toSslError(const net::TlsVerifyError& e) {
    return {static_cast<SslError::Code>(e.code), e.depth, e.subject};
}

SslAlert toSslAlert(net::TlsAlert alert) {
    return {static_cast<SslAlert::Level>(alert.level), alert.description};
}

} // namespace

/// The TLS side of a wss:// connection: the session, the context it shares
/// with its server, and the plaintext gathered while a read batch runs so
/// that one batch makes one record, not one per frame.
struct Connection::TlsState final : net::TlsSession::Handler {
    TlsState(Connection& c, std::shared_ptr<net::TlsContext> tlsContext)
        : connection(c), context(std::move(tlsContext)), session(*context, *this) {}

    void onTlsHandshakeDone() override {}
    void onTlsPlaintext(std::uint8_t* data, std::size_t size) override {
        connection.processInput(data, size);
    }
    void onTlsOutput(const std::uint8_t* data, std::size_t size) override {
        iovec buf = makeBuf(data, size);
        connection.socketWrite(&buf, 1);
    }
    void onTlsError(int, bool duringHandshake) override {
        Connection& c = connection;
        if (duringHandshake && c.phase_ == Phase::Handshake) {
            ServerState* server = c.server_;
            c.server_ = nullptr;
            c.beginDrain(lingerTimeoutMs); // the alert goes out first
            server->reportHandshakeError(Error::TlsHandshakeFailed);
            return;
        }
        c.setError(Error::TlsError);
        c.beginDrain(lingerTimeoutMs);
    }
    void onTlsCloseNotify() override {
        Connection& c = connection;
        if (c.phase_ == Phase::Open && c.protocol_.state() != proto::Protocol::State::Closed) {
            c.setError(Error::ClosedWithoutCloseFrame);
            c.closeCode_ = static_cast<std::uint16_t>(CloseCode::CloseCodeAbnormalDisconnection);
        }
        if (c.phase_ == Phase::Handshake && c.server_ != nullptr) {
            c.server_ = nullptr;
        }
        c.beginDrain(lingerTimeoutMs);
    }
    void onTlsPeerVerifyError(const net::TlsVerifyError& error) override {
        ServerState* server = connection.server_;
        if (server != nullptr && server->peerVerifyError) {
            server->peerVerifyError(connection.clientInfo(), toSslError(error));
        }
    }
    bool onTlsHandshakeInterruptedOnError(const net::TlsVerifyError& error) override {
        ServerState* server = connection.server_;
        return server != nullptr && server->handshakeInterruptedOnError &&
               server->handshakeInterruptedOnError(connection.clientInfo(), toSslError(error));
    }
    bool onTlsSslErrors(const std::vector<net::TlsVerifyError>& errors) override {
        ServerState* server = connection.server_;
        if (server == nullptr || !server->sslErrors) {
            return false;
        }
        std::vector<SslError> list;
        list.reserve(errors.size());
        for (const auto& e : errors) {
            list.push_back(toSslError(e));
        }
        return server->sslErrors(connection.clientInfo(), list);
    }
    void onTlsPreSharedKeyAuthenticationRequired(
        net::TlsPreSharedKeyAuthenticator& authenticator) override {
        ServerState* server = connection.server_;
        if (server == nullptr || !server->preSharedKeyAuthenticationRequired) {
            return;
        }
        PreSharedKeyAuthenticator request(std::string(authenticator.identity),
                                          std::string(authenticator.identityHint),
                                          authenticator.maximumPreSharedKeyLength);
        server->preSharedKeyAuthenticationRequired(connection.clientInfo(), request);
        const std::string& key = request.preSharedKey();
        authenticator.preSharedKey.assign(key.begin(), key.end());
    }
    void onTlsAlertReceived(net::TlsAlert alert) override {
        ServerState* server = connection.server_;
        if (server != nullptr && server->alertReceived) {
            server->alertReceived(connection.clientInfo(), toSslAlert(alert));
        }
    }
    void onTlsAlertSent(net::TlsAlert alert) override {
        ServerState* server = connection.server_;
        if (server != nullptr && server->alertSent) {
            server->alertSent(connection.clientInfo(), toSslAlert(alert));
        }
    }

    Connection& connection;
    std::shared_ptr<net::TlsContext> context;
    net::TlsSession session;
    std::string plaintext;          // gathered while corked
    bool releaseAfterBatch = false; // the handshake ended in this read batch
};

/// What the socket did not take at once (a slow reader, a large message),
/// allocated only then. Bytes written meanwhile are appended behind it.
struct Connection::WriteOp {
    std::string data;
    std::size_t sent = 0; // the part of data already written
    std::size_t waiting() const noexcept { return data.size() - sent; }
};

Connection::Connection(ServerState& server)
    : loop_(server.loop), server_(&server), protocol_(*this, server.limits),
      messageTimeoutMs(server.messageTimeoutMs) {
    protocol_.setBufferCache(&loop_.messageCache);
}

Connection::~Connection() {
    assert(writing_ == nullptr);
    if (deferQueued_) {
        loop_.cancelDeferred(this);
    }
}

int Connection::accept(ServerState& server, int fd) {
    return create(server, fd);
}

int Connection::adopt(ServerState& server, int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        int error = -errno;
        ::close(fd);
        return error;
    }
    // Small frames go out at once; we gather them per read batch ourselves.
    // Accepted sockets inherit this from the listener.
    int on = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    return create(server, fd);
}

int Connection::create(ServerState& server, int fd) {
    int rc = 0;
    acceptAll(server, &fd, 1, &rc);
    return rc;
}

void Connection::acceptAll(ServerState& server, const int* fds, unsigned count, int* results) {
    assert(count <= net::IoRing::capacity);
    Connection* made[net::IoRing::capacity] = {};
    for (unsigned i = 0; i < count; ++i) {
        made[i] = new Connection(server);
    }
    server.loop.watchAll(fds, made, results, count);
    auto timeoutMs =
        static_cast<std::uint64_t>(server.handshakeTimeoutMs < 0 ? -1 : server.handshakeTimeoutMs);
    for (unsigned i = 0; i < count; ++i) {
        if (results[i] < 0) {
            ::close(fds[i]);
            delete made[i];
            continue;
        }
        made[i]->fd_ = fds[i];
        results[i] = made[i]->start(timeoutMs);
    }
}

int Connection::start(std::uint64_t handshakeTimeoutMs) {
    handshake_ = std::make_unique<HandshakeState>(server_->maxHandshakeSize);
    if (server_->tls) {
        tls_ = std::make_unique<TlsState>(*this, server_->tls);
    }
    server_->handshakes.add(*this, handshakeTimeoutMs);
    updateReading();
    return 0;
}

void Connection::defer() {
    if (!deferQueued_) {
        deferQueued_ = true;
        loop_.defer(this);
    }
}

void Connection::updateReading() {
    bool want = false;
    switch (phase_) {
    case Phase::Handshake:
        want = true;
        break;
    case Phase::Open:
        // Bytes read past the request go first (runDeferred), then new ones.
        want =
            !readingPaused_ && !outputBackpressure_ && !(handshake_ && !handshake_->rest.empty());
        break;
    case Phase::Draining:
        want = true; // to see the peer's close frame and FIN
        break;
    default:
        break;
    }
    if (want && !reading_ && readable_) {
        // Edge-triggered: what arrived while not reading raises no new event.
        // Read it on the next iteration, outside the caller's code.
        defer();
    }
    reading_ = want;
}

void Connection::noteReadable(std::uint32_t events) noexcept {
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) {
        readable_ = true;
    }
}

bool Connection::wantsBatchedRead(std::uint32_t events) noexcept {
    if (closing()) {
        return false;
    }
    noteReadable(events);
    // A connection that carries large frames reads them with one plain read
    // into the loop's buffer: a batched recv would fill its 4 KiB slice, and
    // cost a copy and a second call into TCP for the rest.
    return reading_ && readable_ && !bulkReads_;
}

void Connection::onSocketEvents(std::uint32_t events, std::uint8_t* batchData, int batchResult) {
    if (closing()) {
        return; // closed by an earlier event of the same batch
    }
    Busy busy(*this);
    noteReadable(events);
    if (batchResult != net::IoRing::notMade) {
        takeBatchedRead(batchData, batchResult);
    } else {
        readSocket();
    }
    if (writing_ != nullptr && !closing() && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0) {
        writePending();
    }
}

void Connection::takeBatchedRead(std::uint8_t* data, int result) {
    if (result == -EINTR) {
        readSocket(); // nothing was read, and the edge is still ours to drain
        return;
    }
    if (result == static_cast<int>(LoopData::recvSliceSize)) {
        // The slice is full and the socket may hold more: read that behind
        // it, so that a large frame still arrives in one piece.
        bulkReads_ = true;
        std::memcpy(loop_.readBuffer.get(), data, LoopData::recvSliceSize);
        readSocket(LoopData::recvSliceSize);
        return;
    }
    readable_ = false;
    if (result > 0) {
        // Delivered even if reading was paused meanwhile by another
        // connection's callback: these bytes were read already.
        onBytes(data, static_cast<std::size_t>(result));
    } else if (result == 0) {
        onReadEnd(UV_EOF);
    } else if (result != -EAGAIN) {
        onReadEnd(result);
    }
}

void Connection::readSocket(std::size_t carried) {
    std::uint8_t* buffer = loop_.readBuffer.get();
    for (int i = 0; i < readsPerTurn; ++i) {
        if (!reading_ || !readable_ || closing()) {
            break;
        }
        ssize_t n = ::read(fd_, buffer + carried, LoopData::readBufferSize - carried);
        if (n > 0) {
            std::size_t size = carried + static_cast<std::size_t>(n);
            carried = 0;
            bulkReads_ = size >= LoopData::recvSliceSize;
            // A short read drained the socket; more raises a new edge.
            if (size < LoopData::readBufferSize) {
                readable_ = false;
            }
            onBytes(buffer, size);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        int status = n == 0 ? UV_EOF : -errno;
        readable_ = false;
        if (carried > 0) {
            onBytes(buffer, carried);
            carried = 0;
        }
        if (status != -EAGAIN && status != -EWOULDBLOCK && !closing()) {
            onReadEnd(status);
        }
        return;
    }
    if (carried > 0 && !closing()) {
        onBytes(buffer, carried);
    }
    if (reading_ && readable_ && !closing()) {
        defer(); // the rest after the other sockets' turn
    }
}

void Connection::onBytes(std::uint8_t* data, std::size_t size) {
    Busy busy(*this);
    // Gather every frame written while this batch is processed into one write.
    cork();
    messageDelivered_ = false;
    if (tls_) {
        tls_->session.receive(data, size);
    } else {
        processInput(data, size);
    }
    updateMessageDeadline();
    uncork();
    if (tls_ && !closing()) {
        if (tls_->releaseAfterBatch) {
            // Most connections wait after the upgrade: their TLS record
            // buffers need not stay resident meanwhile (docs/tls.md).
            tls_->releaseAfterBatch = false;
            tls_->session.releaseIdleMemory();
        }
        armTlsIdleDeadline();
    }
}

void Connection::armTlsIdleDeadline() {
    if (phase_ != Phase::Open || draining_ || (linked() && !tlsIdleDeadline_)) {
        return;
    }
    loop_.tlsIdleQueue.add(*this, loop_.tlsIdleReleaseMs);
    tlsIdleDeadline_ = true;
}

void Connection::onTlsIdleDeadline(net::DeadlineEntry& entry) {
    auto& c = static_cast<Connection&>(entry);
    c.tlsIdleDeadline_ = false;
    if (c.tls_ && !c.closing()) {
        c.tls_->session.releaseIdleMemory();
    }
}

void Connection::updateMessageDeadline() {
    if (phase_ != Phase::Open || protocol_.state() == proto::Protocol::State::Closed) {
        return;
    }
    bool incomplete = protocol_.midMessage();
    if (messageDeadline_ && (!incomplete || messageDelivered_)) {
        // The message it timed has ended.
        unlink();
        messageDeadline_ = false;
    }
    if (incomplete && tlsIdleDeadline_) {
        // A message in progress is not quiet; its deadline takes the entry.
        unlink();
        tlsIdleDeadline_ = false;
    }
    if (incomplete && !linked() && messageTimeoutMs != 0) {
        loop_.messageQueue.add(*this, messageTimeoutMs);
        messageDeadline_ = true;
    }
}

void Connection::armCloseDeadline(std::uint64_t timeoutMs) {
    // The entry leaves the message or idle queue, if it was in one.
    messageDeadline_ = false;
    tlsIdleDeadline_ = false;
    loop_.closeQueue.add(*this, timeoutMs);
}

void Connection::onMessageDeadline(net::DeadlineEntry& entry) {
    auto& c = static_cast<Connection&>(entry);
    Busy busy(c);
    c.messageDeadline_ = false;
    c.cork();
    c.protocol_.failConnection(Error::MessageTimeout);
    c.uncork();
}

void Connection::processInput(std::uint8_t* data, std::size_t size) {
    switch (phase_) {
    case Phase::Handshake:
        handshakeInput(data, size);
        break;
    case Phase::Open:
    case Phase::Draining:
        protocol_.receive(data, size);
        break;
    default:
        break;
    }
}

void Connection::handshakeInput(std::uint8_t* data, std::size_t size) {
    std::size_t consumed = 0;
    auto status = handshake_->parser.receive(reinterpret_cast<const char*>(data), size, consumed);
    switch (status) {
    case proto::HandshakeParser::Status::NeedMore:
        return;
    case proto::HandshakeParser::Status::Failed:
        refuse(handshake_->parser.error());
        return;
    case proto::HandshakeParser::Status::Complete:
        completeHandshake(data + consumed, size - consumed);
        return;
    }
}

void Connection::completeHandshake(const std::uint8_t* rest, std::size_t restSize) {
    ServerState& server = *server_;
    proto::HandshakeRequest& request = handshake_->parser.request();
    if (server.originAuthenticationRequired) {
        CorsAuthenticator authenticator(request.origin);
        server.originAuthenticationRequired(authenticator);
        if (phase_ != Phase::Handshake) {
            return; // the server was closed from inside the callback
        }
        if (!authenticator.allowed()) {
            refuse(Error::OriginRefused);
            return;
        }
    }
    if (server.pending.size() >= static_cast<std::size_t>(server.maxPending)) {
        refuse(Error::TooManyPendingConnections);
        return;
    }
    std::string_view subprotocol = proto::chooseSubprotocol(request.protocols, server.subprotocols);
    std::string response = proto::buildAcceptResponse(request.key, subprotocol, server.serverName);
    iovec buf = makeBuf(response.data(), response.size());
    writeBytes(&buf, 1);

    request_.assign(request, subprotocol, server.mode == Server::SslMode::SecureMode);
    if (tls_) {
        tls_->releaseAfterBatch = true;
    }
    handshake_->rest.assign(reinterpret_cast<const char*>(rest), restSize);

    unlink(); // the handshake deadline
    phase_ = Phase::Pending;
    server.pending.push_back(this);
    if (server.newConnection) {
        server.newConnection();
    }
    // Reading stops while the connection waits in the queue, and while bytes
    // read past the request wait for runDeferred. An application that takes
    // the connection inside newConnection, from a client that sent nothing
    // more yet, keeps reading without a pause (two epoll_ctl calls fewer).
    updateReading();
}

void Connection::refuse(Error error) {
    std::string response = proto::buildErrorResponse(error, server_->serverName);
    iovec buf = makeBuf(response.data(), response.size());
    writeBytes(&buf, 1);
    ServerState* server = server_;
    server_ = nullptr;
    handshake_.reset();
    beginDrain(lingerTimeoutMs);
    server->reportHandshakeError(error);
}

void Connection::onHandshakeDeadline(net::DeadlineEntry& entry, void*) {
    auto& c = static_cast<Connection&>(entry);
    Busy busy(c);
    // RFC 7231 §6.5.7: 408 tells a client that is still there why it is dropped.
    std::string response =
        proto::buildErrorResponse(Error::HandshakeTimeout, c.server_->serverName);
    iovec buf = makeBuf(response.data(), response.size());
    if (!c.tls_ || c.tls_->session.handshakeComplete()) {
        c.writeBytes(&buf, 1);
    }
    ServerState* server = c.server_;
    c.server_ = nullptr;
    c.closeHandle();
    server->reportHandshakeError(Error::HandshakeTimeout);
}

void Connection::bind(WebSocket* socket) {
    assert(phase_ == Phase::Pending);
    socket_ = socket;
    server_ = nullptr;
    phase_ = Phase::Open;
    if (handshake_ && !handshake_->rest.empty()) {
        // The bytes read past the request wait for the next loop iteration,
        // so that the application can connect its callbacks first.
        defer();
        return;
    }
    handshake_.reset();
    // Reads come from the poll phase, after the application's code returns.
    updateReading();
}

void Connection::runDeferred() {
    deferQueued_ = false;
    if (phase_ == Phase::HandleClosing) {
        finishClose();
        return;
    }
    if (closing()) {
        return;
    }
    Busy busy(*this);
    if (phase_ == Phase::Open && handshake_) {
        // The bytes read past the request, now that the application has
        // connected its callbacks.
        std::string rest = std::move(handshake_->rest);
        handshake_.reset();
        if (!rest.empty()) {
            cork();
            messageDelivered_ = false;
            processInput(reinterpret_cast<std::uint8_t*>(rest.data()), rest.size());
            updateMessageDeadline();
            uncork();
        }
        updateReading();
    }
    readSocket();
}

void Connection::dropFromServer() {
    Busy busy(*this);
    if (phase_ == Phase::Handshake) {
        server_ = nullptr;
        closeHandle();
        return;
    }
    if (phase_ == Phase::Pending) {
        server_ = nullptr;
        phase_ = Phase::Open;
        handshake_.reset();
        closeInitiated_ = true;
        protocol_.sendClose(static_cast<std::uint16_t>(CloseCode::CloseCodeGoingAway),
                            "server closed");
        beginDrain(lingerTimeoutMs);
        flush();
    }
}

void Connection::detach() {
    socket_ = nullptr;
    Busy busy(*this);
    if (phase_ == Phase::Open && protocol_.state() == proto::Protocol::State::Open) {
        closeInitiated_ = true;
        protocol_.sendClose(static_cast<std::uint16_t>(CloseCode::CloseCodeGoingAway), {});
        armCloseDeadline(lingerTimeoutMs);
        flush();
    }
}

std::size_t Connection::sendMessage(proto::MessageType type, std::string_view data,
                                    std::size_t fragmentSize) {
    if (phase_ != Phase::Open) {
        return 0;
    }
    Busy busy(*this);
    if (!protocol_.sendMessage(type, reinterpret_cast<const std::uint8_t*>(data.data()),
                               data.size(), fragmentSize)) {
        return 0;
    }
    return data.size();
}

void Connection::ping(std::string_view payload) {
    if (phase_ != Phase::Open) {
        return;
    }
    Busy busy(*this);
    if (signals_) {
        signals_->pingSentAt = uv_hrtime();
    }
    protocol_.sendPing(reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size());
}

void Connection::close(CloseCode code, std::string_view reason) {
    if (phase_ != Phase::Open || protocol_.state() != proto::Protocol::State::Open) {
        return;
    }
    Busy busy(*this);
    closeInitiated_ = true;
    emitAboutToClose();
    if (phase_ != Phase::Open || protocol_.state() != proto::Protocol::State::Open) {
        return; // closed from inside aboutToClose
    }
    protocol_.sendClose(static_cast<std::uint16_t>(code), reason);
    armCloseDeadline(closeTimeoutMs);
    emitStateChanged(SocketState::ClosingState);
    flush();
}

void Connection::abort() {
    Busy busy(*this);
    closeHandle();
}

SocketState Connection::socketState() const noexcept {
    if (closing()) {
        return SocketState::UnconnectedState;
    }
    if (phase_ == Phase::Open && protocol_.state() == proto::Protocol::State::Open) {
        return SocketState::ConnectedState;
    }
    return SocketState::ClosingState;
}

std::size_t Connection::bytesToWrite() const noexcept {
    std::size_t queued = loop_.corkOwner == this ? loop_.corkBuffer.size() : 0;
    if (writing_ != nullptr) {
        queued += writing_->waiting();
    }
    if (queued_) {
        queued += loop_.queuedBytes(this);
    }
    return queued;
}

void Connection::setReadingPaused(bool paused) {
    readingPaused_ = paused;
    updateReading();
}

bool Connection::address(bool peer, std::string& host, std::uint16_t& port) const {
    return !closing() && net::socketAddress(fd_, peer, host, port);
}

// Protocol events.

SocketSignals& Connection::signals() {
    if (!signals_) {
        signals_ = std::make_unique<SocketSignals>();
    }
    return *signals_;
}

const WebSocket::HeaderList& Connection::requestHeaders() {
    auto& headers = signals().requestHeaders;
    if (!headers) {
        headers = std::make_unique<WebSocket::HeaderList>(request_.headerList());
    }
    return *headers;
}

void Connection::updateFrameDelivery() noexcept {
    protocol_.setDeliverFrames(signals_ && (signals_->textFrame || signals_->binaryFrame));
}

void Connection::emitStateChanged(SocketState state) {
    if (socket_ != nullptr && signals_ && signals_->stateChanged) {
        signals_->stateChanged(state);
    }
}

void Connection::emitAboutToClose() {
    if (socket_ != nullptr && signals_ && signals_->aboutToClose) {
        signals_->aboutToClose();
    }
}

void Connection::onMessage(proto::MessageType type, std::uint8_t* data, std::size_t size) {
    messageDelivered_ = true;
    auto& callback = type == proto::MessageType::Text ? textMessage : binaryMessage;
    if (socket_ != nullptr && callback) {
        callback(std::string_view(reinterpret_cast<const char*>(data), size));
    }
}

void Connection::onFrame(proto::MessageType type, const std::uint8_t* data, std::size_t size,
                         bool isLastFrame) {
    if (socket_ == nullptr || !signals_) {
        return;
    }
    auto& callback = type == proto::MessageType::Text ? signals_->textFrame : signals_->binaryFrame;
    if (callback) {
        callback(std::string_view(reinterpret_cast<const char*>(data), size), isLastFrame);
    }
}

void Connection::onPing(const std::uint8_t* data, std::size_t size) {
    if (socket_ != nullptr && signals_ && signals_->ping) {
        signals_->ping(std::string_view(reinterpret_cast<const char*>(data), size));
    }
}

void Connection::onPong(const std::uint8_t* data, std::size_t size) {
    if (socket_ == nullptr || !signals_) {
        return;
    }
    std::chrono::microseconds elapsed{0};
    if (signals_->pingSentAt != 0) {
        elapsed = std::chrono::microseconds((uv_hrtime() - signals_->pingSentAt) / 1000);
        signals_->pingSentAt = 0;
    }
    if (signals_->pong) {
        signals_->pong(elapsed, std::string_view(reinterpret_cast<const char*>(data), size));
    }
}

// The reason stays in the protocol; closeReason() reads it from there.
void Connection::onClose(std::uint16_t code, std::string_view /*reason*/) {
    closeCode_ = code;
    reasonFromError_ = false;
    if (!closeInitiated_) {
        // Our close() already reported both when it started the handshake.
        emitAboutToClose();
        emitStateChanged(SocketState::ClosingState);
    }
    beginDrain(lingerTimeoutMs);
}

void Connection::onFailure(Error error) {
    setError(error);
    beginDrain(lingerTimeoutMs);
}

// error_ keeps an Error in a byte.
static_assert(static_cast<int>(Error::OperationNotPermitted) <= UINT8_MAX);

void Connection::setError(Error error) {
    assert(static_cast<int>(error) > 0 && static_cast<int>(error) <= UINT8_MAX);
    error_ = static_cast<std::uint8_t>(error);
    auto code = static_cast<std::uint16_t>(closeCodeFor(error));
    // A failure after a clean close code keeps the more telling code.
    if (code != static_cast<std::uint16_t>(CloseCode::CloseCodeAbnormalDisconnection) ||
        closeCode_ == static_cast<std::uint16_t>(CloseCode::CloseCodeNormal)) {
        closeCode_ = code;
    }
    reasonFromError_ = true;
    if (socket_ != nullptr && signals_ && signals_->error) {
        signals_->error(make_error_code(error));
    }
}

std::error_code Connection::error() const noexcept {
    return error_ == 0 ? std::error_code() : make_error_code(static_cast<Error>(error_));
}

std::string Connection::closeReason() const {
    return reasonFromError_ ? error().message() : protocol_.closeReason();
}

void Connection::sendFrame(const std::uint8_t* header, std::size_t headerSize,
                           const std::uint8_t* payload, std::size_t payloadSize) {
    iovec bufs[2] = {makeBuf(header, headerSize), makeBuf(payload, payloadSize)};
    writeBytes(bufs, payloadSize == 0 ? 1 : 2);
}

// Writes.

void Connection::writeBytes(const iovec* bufs, unsigned count) {
    if (!tls_) {
        socketWrite(bufs, count);
        return;
    }
    for (unsigned i = 0; i < count; ++i) {
        tls_->plaintext.append(static_cast<const char*>(bufs[i].iov_base), bufs[i].iov_len);
    }
    if (!corked_) {
        flushTls();
    }
}

void Connection::flushTls() {
    if (!tls_ || tls_->plaintext.empty() || closing()) {
        return;
    }
    std::string& plaintext = tls_->plaintext;
    bool sent = tls_->session.send(reinterpret_cast<const std::uint8_t*>(plaintext.data()),
                                   plaintext.size());
    plaintext.clear();
    if (plaintext.capacity() > directWriteThreshold) {
        std::string().swap(plaintext);
    }
    if (!sent && tls_->session.failed()) {
        setError(Error::TlsError);
        closeHandle();
    }
}

ClientInfo Connection::clientInfo() const {
    ClientInfo info;
    address(true, info.address, info.port);
    if (tls_) {
        info.serverName = tls_->session.serverName();
    }
    return info;
}

const net::TlsSession* Connection::tlsSession() const noexcept {
    return tls_ ? &tls_->session : nullptr;
}

void Connection::cork() {
    assert(loop_.corkOwner == nullptr);
    loop_.corkOwner = this;
    corked_ = true;
}

void Connection::uncork() {
    corked_ = false;
    loop_.corkOwner = nullptr;
    std::string& cork = loop_.corkBuffer;
    if (!cork.empty()) {
        iovec buf = makeBuf(cork.data(), cork.size());
        // Not corked any more, so this writes (or queues behind a write).
        socketWrite(&buf, 1);
        cork.clear();
    }
    flush();
}

std::ptrdiff_t Connection::sendSome(const iovec* iov, unsigned count) {
    for (;;) {
        ssize_t n = 0;
        if (count == 1) {
            n = ::send(fd_, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
        } else {
            msghdr message{};
            message.msg_iov = const_cast<iovec*>(iov);
            message.msg_iovlen = count;
            n = ::sendmsg(fd_, &message, MSG_NOSIGNAL);
        }
        if (n >= 0) {
            return n;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        if (errno != EINTR) {
            return -errno;
        }
    }
}

void Connection::socketWrite(const iovec* bufs, unsigned count) {
    if (closing()) {
        return;
    }
    if (shutdownStarted_) {
        // Our FIN is out: a write now fails as it would on the socket.
        failWrite(UV_EPIPE);
        return;
    }
    std::size_t total = 0;
    for (unsigned i = 0; i < count; ++i) {
        total += bufs[i].iov_len;
    }
    std::string& cork = loop_.corkBuffer;
    if (writing_ == nullptr && total < directWriteThreshold) {
        if (corked_) {
            for (unsigned i = 0; i < count; ++i) {
                cork.append(static_cast<const char*>(bufs[i].iov_base), bufs[i].iov_len);
            }
            return;
        }
        if (loop_.outboxOpen) {
            // Sent with the other sockets' writes when the wakeup is done.
            if (!loop_.outboxTakes(this, queued_, total)) {
                loop_.submitOutbox();
            }
            if (writing_ == nullptr) {
                loop_.queueWrite(this, bufs, count);
                queued_ = true;
                return;
            }
        }
    }
    if (queued_) {
        // What this connection queued earlier in the wakeup goes first.
        loop_.submitOutbox();
    }
    std::size_t gathered = corked_ ? cork.size() : 0;
    if (writing_ != nullptr) {
        // Behind what waits, in order; EPOLLOUT sends it.
        if (gathered > 0) {
            writing_->data.append(cork);
            cork.clear();
        }
        for (unsigned i = 0; i < count; ++i) {
            writing_->data.append(static_cast<const char*>(bufs[i].iov_base), bufs[i].iov_len);
        }
        checkBackpressure();
        return;
    }
    // Straight to the socket: most writes complete here and nothing is
    // copied. A large frame in a batch goes now, after what the batch
    // gathered so far.
    iovec all[3] = {};
    unsigned n = 0;
    if (gathered > 0) {
        all[n++] = makeBuf(cork.data(), cork.size());
    }
    for (unsigned i = 0; i < count; ++i) {
        all[n++] = bufs[i];
    }
    std::ptrdiff_t rc = sendSome(all, n);
    if (rc < 0) {
        if (gathered > 0) {
            cork.clear();
        }
        failWrite(static_cast<int>(rc));
        return;
    }
    auto written = static_cast<std::size_t>(rc);
    keepUnsent(all, n, written);
    if (gathered > 0) {
        cork.clear();
    }
    reportWritten(written);
}

void Connection::keepUnsent(const iovec* bufs, unsigned count, std::size_t written) {
    std::size_t total = 0;
    for (unsigned i = 0; i < count; ++i) {
        total += bufs[i].iov_len;
    }
    if (written >= total) {
        return;
    }
    // Keep the rest, in order, for when epoll says the socket has room.
    auto* op = new WriteOp;
    if (total - written > directWriteThreshold) {
        op->data.swap(loop_.spareWriteBuffer);
    }
    op->data.reserve(total - written);
    std::size_t skip = written;
    for (unsigned i = 0; i < count; ++i) {
        if (skip >= bufs[i].iov_len) {
            skip -= bufs[i].iov_len;
            continue;
        }
        op->data.append(static_cast<const char*>(bufs[i].iov_base) + skip, bufs[i].iov_len - skip);
        skip = 0;
    }
    writing_ = op;
    checkBackpressure();
}

void Connection::onBatchedSend(const char* data, std::size_t size, int result) {
    queued_ = false;
    if (closing()) {
        return; // closeHandle sends the outbox first; this is not reached
    }
    iovec buf = makeBuf(data, size);
    std::ptrdiff_t rc = result;
    if (result == net::IoRing::notMade || result == -EINTR) {
        rc = sendSome(&buf, 1); // not sent: send it now
    } else if (result == -EAGAIN) {
        rc = 0;
    }
    if (rc < 0) {
        loop_.sendReports.push_back({this, static_cast<int>(rc)});
        return;
    }
    keepUnsent(&buf, 1, static_cast<std::size_t>(rc));
    bool wantsReport = draining_ || (socket_ != nullptr && signals_ && signals_->bytesWritten);
    if (wantsReport) {
        loop_.sendReports.push_back({this, static_cast<int>(rc)});
    }
}

void Connection::afterBatchedSend(int result) {
    if (closing()) {
        return;
    }
    Busy busy(*this);
    if (result < 0) {
        failWrite(result);
        return;
    }
    reportWritten(static_cast<std::size_t>(result));
    if (!closing()) {
        flush();
    }
}

void Connection::reportWritten(std::size_t bytes) {
    if (bytes > 0 && socket_ != nullptr && signals_ && signals_->bytesWritten) {
        signals_->bytesWritten(bytes);
    }
}

void Connection::flush() {
    if (closing()) {
        return;
    }
    flushTls();
    if (draining_ && tls_ && tls_->session.handshakeComplete() &&
        !tls_->session.closeNotifySent() && !tls_->session.failed()) {
        // RFC 5246 §7.2.1: close_notify before our FIN.
        tls_->session.sendCloseNotify();
    }
    // A send still in the loop's outbox comes back through afterBatchedSend.
    if (draining_ && writing_ == nullptr && !queued_ && !corked_ && !shutdownStarted_ &&
        !closing()) {
        if (closeHandshakeDone()) {
            // Our last bytes are in the kernel and go out before the FIN.
            closeHandle();
        } else {
            startShutdown();
        }
    }
}

bool Connection::closeHandshakeDone() const noexcept {
    // Both close frames are through, and every byte before the peer's was
    // read with it; after its close frame a peer sends nothing but its FIN
    // (RFC 6455 §5.5.1), which close(2) does not answer with a reset. So
    // the server closes first (§7.1.1) without waiting for that FIN: no
    // shutdown(2), no last read. Over TLS the peer may still answer our
    // close_notify, so wss:// waits for it.
    return !tls_ && phase_ == Phase::Open && protocol_.state() == proto::Protocol::State::Closed &&
           !readable_;
}

void Connection::writePending() {
    WriteOp* op = writing_;
    std::size_t written = 0;
    while (op->waiting() > 0) {
        iovec buf = makeBuf(op->data.data() + op->sent, op->waiting());
        std::ptrdiff_t rc = sendSome(&buf, 1);
        if (rc < 0) {
            failWrite(static_cast<int>(rc));
            return;
        }
        if (rc == 0) {
            break; // full again: the next EPOLLOUT
        }
        op->sent += static_cast<std::size_t>(rc);
        written += static_cast<std::size_t>(rc);
    }
    if (op->waiting() == 0) {
        writing_ = nullptr;
        releaseWriteOp(op);
    } else if (op->sent > op->data.size() / 2) {
        // Appends go behind; do not let the written part grow with them.
        op->data.erase(0, op->sent);
        op->sent = 0;
    }
    reportWritten(written);
    if (closing()) {
        return;
    }
    checkBackpressure();
    flush();
}

void Connection::checkBackpressure() {
    std::size_t waiting = writing_ != nullptr ? writing_->waiting() : 0;
    bool pause =
        outputBackpressure_ ? waiting > readPauseThreshold / 2 : waiting > readPauseThreshold;
    if (pause != outputBackpressure_) {
        outputBackpressure_ = pause;
        updateReading();
    }
}

void Connection::releaseWriteOp(WriteOp* op) {
    std::string& spare = loop_.spareWriteBuffer;
    if (op->data.capacity() > spare.capacity() &&
        op->data.capacity() <= proto::BufferCache::maxRetained) {
        op->data.clear();
        spare.swap(op->data);
    }
    delete op;
}

void Connection::failWrite(int) {
    if (tls_) {
        tls_->plaintext.clear();
    }
    setError(Error::ConnectionReset);
    closeHandle();
}

// Closing.

void Connection::beginDrain(std::uint64_t timeoutMs) {
    if (closing()) {
        return;
    }
    draining_ = true;
    if (phase_ != Phase::Open && phase_ != Phase::Draining) {
        // A refused handshake has no protocol to keep reading through.
        phase_ = Phase::Draining;
    }
    armCloseDeadline(timeoutMs);
    updateReading();
    if (!corked_) {
        flush();
    }
}

void Connection::startShutdown() {
    shutdownStarted_ = true;
    // Nothing waits to be written (writing_ is null), so the FIN goes now.
    if (::shutdown(fd_, SHUT_WR) < 0) {
        closeHandle();
    }
    // Otherwise keep reading until the peer's FIN (onReadEnd) or the deadline,
    // so that unread bytes do not turn our close into a reset.
}

void Connection::onReadEnd(int status) {
    Busy busy(*this);
    reading_ = false;
    if (phase_ == Phase::Open && protocol_.state() != proto::Protocol::State::Closed) {
        setError(status == UV_EOF ? Error::ClosedWithoutCloseFrame : Error::ConnectionReset);
        closeCode_ = static_cast<std::uint16_t>(CloseCode::CloseCodeAbnormalDisconnection);
    }
    closeHandle();
}

void Connection::onCloseDeadline(net::DeadlineEntry& entry) {
    auto& c = static_cast<Connection&>(entry);
    Busy busy(c);
    if (c.protocol_.state() == proto::Protocol::State::Closing) {
        c.setError(Error::CloseTimeout);
        c.closeCode_ = static_cast<std::uint16_t>(CloseCode::CloseCodeAbnormalDisconnection);
    }
    c.closeHandle();
}

void Connection::closeHandle() {
    if (closing()) {
        return;
    }
    if (queued_) {
        // Its bytes were as good as written: they go before the close.
        loop_.submitOutbox();
    }
    phase_ = Phase::HandleClosing;
    unlink();
    reading_ = false;
    loop_.closeSocket(fd_);
    fd_ = -1;
    if (writing_ != nullptr) {
        releaseWriteOp(writing_);
        writing_ = nullptr;
    }
    ++busy_; // released in finishClose
    defer();
}

void Connection::finishClose() {
    --busy_;
    Busy busy(*this);
    phase_ = Phase::HandleClosed;
    emitStateChanged(SocketState::UnconnectedState);
    if (socket_ != nullptr && disconnected) {
        disconnected();
    }
}

void Connection::maybeFree() {
    if (busy_ == 0 && phase_ == Phase::HandleClosed && socket_ == nullptr) {
        delete this;
    }
}

} // namespace wsgate::detail
