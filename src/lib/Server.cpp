#include "wsgate/Server.h"

#include "lib/ServerState.h"
#include "net/Connection.h"
#include "net/LoopData.h"
#include "net/SocketAddress.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>

namespace wsgate {
namespace detail {
namespace {

/// The kernel caps this at net.core.somaxconn.
constexpr int listenBacklog = 4096;

/// Connections accepted per turn of the loop before other work runs.
constexpr int acceptsPerTurn = 128;

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

void ServerState::onListenerReadable(uv_poll_t* poll, int status, int) {
    auto* self = static_cast<ServerState*>(poll->data);
    if (status < 0) {
        self->setError(CloseCode::CloseCodeAbnormalDisconnection, uv_strerror(status));
        if (self->acceptError) {
            self->acceptError(uvError(status));
        }
        return;
    }
    self->acceptConnections();
}

void ServerState::acceptConnections() {
    // The listener is level-triggered: what is left waits for the next turn.
    int accepted = 0;
    // Rounds of accepts in one system call each, their sockets watched in
    // another; a round twice the size of the last while every accept of it
    // found a connection, since each accept that finds none costs a little.
    unsigned round = 2;
    while (accepted < acceptsPerTurn && listener != nullptr && !paused && loop.ring.usable() &&
           loop.ring.acceptsInline()) {
        round = std::min(
            {round, net::IoRing::capacity, static_cast<unsigned>(acceptsPerTurn - accepted)});
        for (unsigned i = 0; i < round; ++i) {
            loop.ring.prepareAccept(listenFd, i);
        }
        int results[net::IoRing::capacity];
        loop.ring.runByTag(results, round);
        int fds[net::IoRing::capacity];
        unsigned count = 0;
        int error = 0; // the first failed accept's result
        for (unsigned i = 0; i < round; ++i) {
            if (results[i] >= 0) {
                fds[count++] = results[i];
            } else if (error == 0) {
                error = results[i];
            }
        }
        accepted += static_cast<int>(count);
        Connection::acceptAll(*this, fds, count, results);
        for (unsigned i = 0; i < count; ++i) {
            if (results[i] < 0) {
                reportAcceptError(results[i]);
            }
        }
        if (error == net::IoRing::notMade) {
            break; // the ring was given up: plain calls from here
        }
        if (error != 0 && !handleAcceptError(-error)) {
            return; // none waiting, or out of descriptors
        }
        round *= 2;
    }
    for (; accepted < acceptsPerTurn && listener != nullptr && !paused; ++accepted) {
        int fd = ::accept4(listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (handleAcceptError(errno)) {
                continue;
            }
            return;
        }
        int rc = Connection::accept(*this, fd);
        if (rc < 0) {
            reportAcceptError(rc);
        }
    }
}

bool ServerState::handleAcceptError(int error) {
    if (error == EAGAIN || error == EWOULDBLOCK) {
        return false;
    }
    if (error == EINTR || error == ECONNABORTED) {
        return true;
    }
    if (error == EMFILE || error == ENFILE) {
        shedConnections();
        return false;
    }
    setError(CloseCode::CloseCodeAbnormalDisconnection, std::strerror(error));
    if (acceptError) {
        acceptError(std::error_code(error, std::generic_category()));
    }
    return false;
}

void ServerState::reportAcceptError(int rc) {
    setError(CloseCode::CloseCodeAbnormalDisconnection, uv_strerror(rc));
    if (acceptError) {
        acceptError(uvError(rc));
    }
}

void ServerState::shedConnections() {
    if (loop.reserveFd < 0) {
        return;
    }
    ::close(loop.reserveFd);
    loop.reserveFd = -1;
    for (;;) {
        int fd = ::accept4(listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            break;
        }
        ::close(fd);
    }
    loop.reserveFd = ::open("/", O_RDONLY | O_CLOEXEC);
}

void ServerState::updateAccepting() {
    if (listener == nullptr) {
        return;
    }
    if (paused) {
        uv_poll_stop(listener);
    } else {
        uv_poll_start(listener, UV_READABLE, onListenerReadable);
    }
}

bool ServerState::startListening(int fd) {
    int rc = 0;
    if (loop.reserveFd < 0) {
        loop.reserveFd = ::open("/", O_RDONLY | O_CLOEXEC);
    }
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
    // setsockopt here instead of one per connection.
    int on = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (::listen(fd, listenBacklog) < 0) {
        rc = -errno;
    } else {
        listener = new uv_poll_t;
        rc = uv_poll_init_socket(loop.loop, listener, fd);
        if (rc < 0) {
            delete listener;
            listener = nullptr;
        }
    }
    if (rc < 0) {
        ::close(fd);
        setError(CloseCode::CloseCodeAbnormalDisconnection, uv_strerror(rc));
        return false;
    }
    listener->data = this;
    listenFd = fd;
    listening = true;
    updateAccepting();
    return true;
}

void ServerState::closeListener() {
    if (listener == nullptr) {
        return;
    }
    listening = false;
    ++openHandles;
    uv_close(reinterpret_cast<uv_handle_t*>(listener), onHandleClosed);
    // libuv has stopped watching it: the descriptor can go now.
    ::close(listenFd);
    listenFd = -1;
    listener = nullptr;
}

void ServerState::onHandleClosed(uv_handle_t* handle) {
    auto* state = static_cast<ServerState*>(handle->data);
    if (handle->type == UV_POLL) {
        delete reinterpret_cast<uv_poll_t*>(handle);
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
    int fd = ::socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 && errno == EAFNOSUPPORT && address.empty()) {
        // No IPv6 on this host: the IPv4 any address instead.
        uv_ip4_addr("0.0.0.0", port, reinterpret_cast<sockaddr_in*>(&storage));
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    }
    if (fd < 0) {
        s.setError(CloseCode::CloseCodeAbnormalDisconnection, std::strerror(errno));
        return false;
    }
    // A restarted server can bind while the last one's connections linger.
    int on = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    const socklen_t length = sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (::bind(fd, sa, length) < 0) {
        s.setError(CloseCode::CloseCodeAbnormalDisconnection, std::strerror(errno));
        ::close(fd);
        return false;
    }
    return s.startListening(fd);
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
        net::socketAddress(state_->listenFd, false, host, port);
    }
    return host;
}

std::uint16_t Server::serverPort() const {
    std::string host;
    std::uint16_t port = 0;
    if (state_->listener != nullptr) {
        net::socketAddress(state_->listenFd, false, host, port);
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
    state_->updateAccepting();
}

void Server::resumeAccepting() {
    state_->paused = false;
    state_->updateAccepting();
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
    int flags = fd < 0 ? -1 : ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        s.setError(CloseCode::CloseCodeAbnormalDisconnection, std::strerror(errno));
        return false;
    }
    return s.startListening(fd);
}

int Server::socketDescriptor() const {
    return state_->listenFd;
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
