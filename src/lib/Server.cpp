#include "wsgate/Server.h"

#include "lib/ServerState.h"
#include "net/Connection.h"
#include "net/LoopData.h"
#include "net/SocketAddress.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <climits>
#include <cstdint>

namespace wsgate {
namespace detail {
namespace {

/// The kernel caps this at net.core.somaxconn.
constexpr int listenBacklog = 4096;

std::error_code uvError(int rc) {
    return {-rc, std::generic_category()};
}

} // namespace

ServerState::ServerState(std::string name, Server::SslMode secureMode, LoopData& loopData)
    : loop(loopData), handshakes(loopData.loop, &Connection::onHandshakeDeadline, this),
      serverName(std::move(name)), mode(secureMode) {
}

void ServerState::setError(CloseCode code, std::string text) {
    error = code;
    errorText = std::move(text);
}

void ServerState::reportHandshakeError(Error e) {
    // Qt reports handshake failures as close codes: a request that breaks
    // the protocol as 1002, a refused origin as 1008, the rest as 1006.
    CloseCode code = CloseCode::CloseCodeAbnormalDisconnection;
    switch (e) {
    case Error::OriginRefused:
        code = CloseCode::CloseCodePolicyViolated;
        break;
    case Error::TooManyPendingConnections:
    case Error::HandshakeTimeout:
        break;
    case Error::TlsHandshakeFailed:
        code = CloseCode::CloseCodeTlsHandshakeFailed;
        break;
    default:
        code = CloseCode::CloseCodeProtocolError;
        break;
    }
    setError(code, make_error_code(e).message());
    if (serverError) {
        serverError(code);
    }
}

void ServerState::onConnection(uv_stream_t* stream, int status) {
    auto* self = static_cast<ServerState*>(stream->data);
    if (status < 0) {
        self->setError(CloseCode::CloseCodeAbnormalDisconnection, uv_strerror(status));
        if (self->acceptError) {
            self->acceptError(uvError(status));
        }
        return;
    }
    if (self->paused) {
        // Not accepting leaves the connection with libuv, which stops watching
        // the listener until uv_accept is called again in resumeAccepting.
        return;
    }
    int rc = Connection::accept(*self, stream);
    if (rc < 0 && rc != UV_EAGAIN) {
        self->setError(CloseCode::CloseCodeAbnormalDisconnection, uv_strerror(rc));
        if (self->acceptError) {
            self->acceptError(uvError(rc));
        }
    }
}

bool ServerState::openListener() {
    listener = new uv_tcp_t;
    int rc = uv_tcp_init(loop.loop, listener);
    if (rc < 0) {
        delete listener;
        listener = nullptr;
        setError(CloseCode::CloseCodeAbnormalDisconnection, uv_strerror(rc));
        return false;
    }
    listener->data = this;
    return true;
}

bool ServerState::startListening(int rc) {
    if (rc == 0) {
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux:
        // one setsockopt here instead of one per connection.
        uv_tcp_nodelay(listener, 1);
        rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener), listenBacklog, onConnection);
    }
    if (rc < 0) {
        closeListener();
        setError(CloseCode::CloseCodeAbnormalDisconnection, uv_strerror(rc));
        return false;
    }
    listening = true;
    return true;
}

void ServerState::closeListener() {
    if (listener == nullptr) {
        return;
    }
    listening = false;
    ++openHandles;
    uv_close(reinterpret_cast<uv_handle_t*>(listener), onHandleClosed);
    listener = nullptr;
}

void ServerState::onHandleClosed(uv_handle_t* handle) {
    auto* state = static_cast<ServerState*>(handle->data);
    if (handle->type == UV_TCP) {
        delete reinterpret_cast<uv_tcp_t*>(handle);
    }
    if (--state->openHandles == 0 && state->destroyed) {
        delete state;
    }
}

void ServerState::destroy() {
    destroyed = true;
    closeListener();
    // The timer's close callback, the last one, frees the state.
    handshakes.timer().data = this;
    uv_close(reinterpret_cast<uv_handle_t*>(&handshakes.timer()), onHandleClosed);
}

} // namespace detail

using detail::Connection;
using detail::ServerState;

Server::Server(std::string serverName, SslMode secureMode, EventLoop& loop)
    : state_(std::make_unique<ServerState>(std::move(serverName), secureMode, loop.data())) {
}

Server::~Server() {
    close();
    state_.release()->destroy();
}

bool Server::listen(const std::string& address, std::uint16_t port) {
    ServerState& s = *state_;
    if (s.listener != nullptr) {
        s.setError(CloseCode::CloseCodeAbnormalDisconnection, "already listening");
        return false;
    }
    if (s.mode == SslMode::SecureMode && !s.tls) {
        s.setError(CloseCode::CloseCodeAbnormalDisconnection,
                   "SecureMode needs an SslConfiguration (setSslConfiguration)");
        return false;
    }
    sockaddr_storage storage{};
    auto* sa = reinterpret_cast<sockaddr*>(&storage);
    std::string host = address.empty() ? "::" : address;
    int rc = uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&storage));
    if (rc < 0) {
        rc = uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&storage));
    }
    if (rc < 0) {
        s.setError(CloseCode::CloseCodeAbnormalDisconnection, "invalid address: " + address);
        return false;
    }
    if (!s.openListener()) {
        return false;
    }
    rc = uv_tcp_bind(s.listener, sa, 0);
    if (rc == UV_EAFNOSUPPORT && address.empty()) {
        // No IPv6 on this host: the socket was not made, so the handle can
        // bind the IPv4 any address instead.
        uv_ip4_addr("0.0.0.0", port, reinterpret_cast<sockaddr_in*>(&storage));
        rc = uv_tcp_bind(s.listener, sa, 0);
    }
    return s.startListening(rc);
}

void Server::close() {
    ServerState& s = *state_;
    bool wasListening = s.listener != nullptr;
    s.closeListener();
    // Handshakes in progress are dropped: Qt lets them finish after close().
    while (!s.handshakes.empty()) {
        auto* front = s.handshakes.front();
        static_cast<Connection*>(front)->dropFromServer();
    }
    while (!s.pending.empty()) {
        Connection* c = s.pending.front();
        s.pending.pop_front();
        c->dropFromServer();
    }
    if (wasListening && s.closed) {
        s.closed();
    }
}

bool Server::isListening() const noexcept {
    return state_->listening;
}

std::string Server::serverAddress() const {
    std::string host;
    std::uint16_t port = 0;
    if (state_->listener != nullptr) {
        net::socketAddress(state_->listener, false, host, port);
    }
    return host;
}

std::uint16_t Server::serverPort() const {
    std::string host;
    std::uint16_t port = 0;
    if (state_->listener != nullptr) {
        net::socketAddress(state_->listener, false, host, port);
    }
    return port;
}

std::string Server::serverUrl() const {
    std::string host = serverAddress();
    if (host.empty()) {
        return {};
    }
    if (host.find(':') != std::string::npos) {
        host = "[" + host + "]";
    }
    const char* scheme = state_->mode == SslMode::SecureMode ? "wss://" : "ws://";
    return scheme + host + ":" + std::to_string(serverPort());
}

void Server::setServerName(std::string name) {
    state_->serverName = std::move(name);
}

const std::string& Server::serverName() const noexcept {
    return state_->serverName;
}

Server::SslMode Server::secureMode() const noexcept {
    return state_->mode;
}

void Server::pauseAccepting() {
    state_->paused = true;
}

void Server::resumeAccepting() {
    ServerState& s = *state_;
    if (!s.paused) {
        return;
    }
    s.paused = false;
    if (s.listener != nullptr) {
        // Take the connection libuv held while paused; uv_accept also makes
        // libuv watch the listener again. UV_EAGAIN: none was held.
        Connection::accept(s, reinterpret_cast<uv_stream_t*>(s.listener));
    }
}

bool Server::setMaxPendingConnections(int n) {
    if (n < 1 || n > 65535) {
        return false;
    }
    state_->maxPending = n;
    return true;
}

int Server::maxPendingConnections() const noexcept {
    return state_->maxPending;
}

bool Server::hasPendingConnections() const noexcept {
    return !state_->pending.empty();
}

std::unique_ptr<WebSocket> Server::nextPendingConnection() {
    ServerState& s = *state_;
    if (s.pending.empty()) {
        return nullptr;
    }
    Connection* c = s.pending.front();
    s.pending.pop_front();
    std::unique_ptr<WebSocket> socket(new WebSocket(c));
    c->bind(socket.get());
    return socket;
}

void Server::setHandshakeTimeout(std::chrono::milliseconds timeout) noexcept {
    state_->handshakeTimeoutMs = timeout.count() < 0 ? -1 : timeout.count();
}

std::chrono::milliseconds Server::handshakeTimeout() const noexcept {
    return std::chrono::milliseconds(state_->handshakeTimeoutMs);
}

void Server::setMessageTimeout(std::chrono::milliseconds timeout) noexcept {
    state_->messageTimeoutMs = net::toTimeoutMs(timeout);
}

std::chrono::milliseconds Server::messageTimeout() const noexcept {
    return std::chrono::milliseconds(state_->messageTimeoutMs);
}

void Server::setSupportedSubprotocols(std::vector<std::string> protocols) {
    state_->subprotocols = std::move(protocols);
}

const std::vector<std::string>& Server::supportedSubprotocols() const noexcept {
    return state_->subprotocols;
}

void Server::setMaxAllowedIncomingFrameSize(std::uint64_t size) {
    state_->limits.maxFrameSize = std::min(size, WebSocket::maxIncomingFrameSize());
}

std::uint64_t Server::maxAllowedIncomingFrameSize() const noexcept {
    return state_->limits.maxFrameSize;
}

void Server::setMaxAllowedIncomingMessageSize(std::uint64_t size) {
    state_->limits.maxMessageSize = std::min(size, WebSocket::maxIncomingMessageSize());
}

std::uint64_t Server::maxAllowedIncomingMessageSize() const noexcept {
    return state_->limits.maxMessageSize;
}

void Server::setMaxHandshakeSize(std::size_t bytes) {
    state_->maxHandshakeSize = bytes;
}

std::size_t Server::maxHandshakeSize() const noexcept {
    return state_->maxHandshakeSize;
}

bool Server::setSocketDescriptor(int fd) {
    ServerState& s = *state_;
    if (s.listener != nullptr) {
        s.setError(CloseCode::CloseCodeAbnormalDisconnection, "already listening");
        return false;
    }
    if (!s.openListener()) {
        return false;
    }
    return s.startListening(uv_tcp_open(s.listener, fd));
}

int Server::socketDescriptor() const {
    if (state_->listener == nullptr) {
        return -1;
    }
    uv_os_fd_t fd = -1;
    if (uv_fileno(reinterpret_cast<const uv_handle_t*>(state_->listener), &fd) < 0) {
        return -1;
    }
    return fd;
}

bool Server::handleConnection(int fd) {
    int rc = Connection::adopt(*state_, fd);
    if (rc < 0) {
        state_->setError(CloseCode::CloseCodeAbnormalDisconnection, uv_strerror(rc));
        return false;
    }
    return true;
}

bool Server::setSslConfiguration(const SslConfiguration& configuration) {
    std::string why;
    auto context = net::TlsContext::create(configuration, why);
    if (!context) {
        state_->setError(CloseCode::CloseCodeTlsHandshakeFailed, "SSL configuration: " + why);
        return false;
    }
    state_->tls = std::move(context);
    state_->sslConfiguration = configuration;
    return true;
}

SslConfiguration Server::sslConfiguration() const {
    return state_->sslConfiguration;
}

CloseCode Server::error() const noexcept {
    return state_->error;
}

std::string Server::errorString() const {
    return state_->errorText;
}

void Server::onAcceptError(std::function<void(std::error_code)> f) {
    state_->acceptError = std::move(f);
}

void Server::onClosed(std::function<void()> f) {
    state_->closed = std::move(f);
}

void Server::onNewConnection(std::function<void()> f) {
    state_->newConnection = std::move(f);
}

void Server::onOriginAuthenticationRequired(std::function<void(CorsAuthenticator&)> f) {
    state_->originAuthenticationRequired = std::move(f);
}

void Server::onServerError(std::function<void(CloseCode)> f) {
    state_->serverError = std::move(f);
}

void Server::onPeerVerifyError(std::function<void(const ClientInfo&, const SslError&)> f) {
    state_->peerVerifyError = std::move(f);
}

void Server::onSslErrors(std::function<bool(const ClientInfo&, const std::vector<SslError>&)> f) {
    state_->sslErrors = std::move(f);
}

void Server::onHandshakeInterruptedOnError(
    std::function<bool(const ClientInfo&, const SslError&)> f) {
    state_->handshakeInterruptedOnError = std::move(f);
}

void Server::onPreSharedKeyAuthenticationRequired(
    std::function<void(const ClientInfo&, PreSharedKeyAuthenticator&)> f) {
    state_->preSharedKeyAuthenticationRequired = std::move(f);
}

void Server::onAlertReceived(std::function<void(const ClientInfo&, const SslAlert&)> f) {
    state_->alertReceived = std::move(f);
}

void Server::onAlertSent(std::function<void(const ClientInfo&, const SslAlert&)> f) {
    state_->alertSent = std::move(f);
}

} // namespace wsgate
