#include "wsgate/WebSocket.h"

#include "net/Connection.h"

#include <algorithm>
#include <cstdint>

namespace wsgate {

using detail::Connection;

WebSocket::WebSocket(Connection* connection) : connection_(connection) {
}

WebSocket::~WebSocket() {
    connection_->detach();
}

std::size_t WebSocket::sendTextMessage(std::string_view message) {
    return connection_->sendMessage(proto::MessageType::Text, message,
                                    connection_->outgoingFrameSize);
}

std::size_t WebSocket::sendBinaryMessage(std::string_view data) {
    return connection_->sendMessage(proto::MessageType::Binary, data,
                                    connection_->outgoingFrameSize);
}

void WebSocket::ping(std::string_view payload) {
    connection_->ping(payload);
}

void WebSocket::close(CloseCode code, std::string_view reason) {
    connection_->close(code, reason);
}

void WebSocket::abort() {
    connection_->abort();
}

SocketState WebSocket::state() const noexcept {
    return connection_->socketState();
}

CloseCode WebSocket::closeCode() const noexcept {
    return connection_->closeCode();
}

std::string WebSocket::closeReason() const {
    return connection_->closeReason();
}

std::error_code WebSocket::error() const noexcept {
    return connection_->error();
}

std::string WebSocket::errorString() const {
    auto e = connection_->error();
    return e ? e.message() : std::string();
}

std::uint64_t WebSocket::outgoingFrameSize() const noexcept {
    return connection_->outgoingFrameSize;
}

void WebSocket::setCloseTimeout(std::chrono::milliseconds timeout) noexcept {
    connection_->closeTimeoutMs = net::toTimeoutMs(timeout);
}

void WebSocket::setMessageTimeout(std::chrono::milliseconds timeout) noexcept {
    connection_->messageTimeoutMs = net::toTimeoutMs(timeout);
}

std::chrono::milliseconds WebSocket::messageTimeout() const noexcept {
    return std::chrono::milliseconds(connection_->messageTimeoutMs);
}

std::chrono::milliseconds WebSocket::closeTimeout() const noexcept {
    return std::chrono::milliseconds(connection_->closeTimeoutMs);
}

std::string WebSocket::requestUrl() const {
    const auto& request = connection_->request();
    if (request.host().empty()) {
        return {};
    }
    std::string url = request.secure() ? "wss://" : "ws://";
    url.append(request.host()).append(request.target());
    return url;
}

std::string WebSocket::resourceName() const {
    return std::string(connection_->request().target());
}

std::string WebSocket::origin() const {
    return std::string(connection_->request().origin());
}

std::string WebSocket::subprotocol() const {
    return std::string(connection_->request().subprotocol());
}

const WebSocket::HeaderList& WebSocket::requestHeaders() const {
    return connection_->requestHeaders();
}

std::string WebSocket::requestHeader(std::string_view name) const {
    return std::string(connection_->request().header(name));
}

std::string WebSocket::peerAddress() const {
    std::string host;
    std::uint16_t port = 0;
    connection_->address(true, host, port);
    return host;
}

std::uint16_t WebSocket::peerPort() const {
    std::string host;
    std::uint16_t port = 0;
    connection_->address(true, host, port);
    return port;
}

std::string WebSocket::localAddress() const {
    std::string host;
    std::uint16_t port = 0;
    connection_->address(false, host, port);
    return host;
}

std::uint16_t WebSocket::localPort() const {
    std::string host;
    std::uint16_t port = 0;
    connection_->address(false, host, port);
    return port;
}

std::size_t WebSocket::bytesToWrite() const noexcept {
    return connection_->bytesToWrite();
}

void WebSocket::pauseReading() {
    connection_->setReadingPaused(true);
}

void WebSocket::resumeReading() {
    connection_->setReadingPaused(false);
}

bool WebSocket::isReadingPaused() const noexcept {
    return connection_->readingPaused();
}

void WebSocket::setMaxAllowedIncomingFrameSize(std::uint64_t size) {
    auto limits = connection_->protocol().limits();
    limits.maxFrameSize = std::min(size, maxIncomingFrameSize());
    connection_->protocol().setLimits(limits);
}

std::uint64_t WebSocket::maxAllowedIncomingFrameSize() const noexcept {
    return connection_->protocol().limits().maxFrameSize;
}

void WebSocket::setMaxAllowedIncomingMessageSize(std::uint64_t size) {
    auto limits = connection_->protocol().limits();
    limits.maxMessageSize = std::min(size, maxIncomingMessageSize());
    connection_->protocol().setLimits(limits);
}

std::uint64_t WebSocket::maxAllowedIncomingMessageSize() const noexcept {
    return connection_->protocol().limits().maxMessageSize;
}

bool WebSocket::setOutgoingFrameSize(std::uint64_t size) {
    // Qt crashes on 0; a frame size must leave room for progress.
    if (size == 0 || size > maxOutgoingFrameSize()) {
        return false;
    }
    connection_->outgoingFrameSize = static_cast<std::uint32_t>(size);
    return true;
}

void WebSocket::onTextMessageReceived(std::function<void(std::string_view)> f) {
    connection_->textMessage = std::move(f);
}

void WebSocket::onBinaryMessageReceived(std::function<void(std::string_view)> f) {
    connection_->binaryMessage = std::move(f);
}

void WebSocket::onTextFrameReceived(std::function<void(std::string_view, bool)> f) {
    connection_->signals().textFrame = std::move(f);
    connection_->updateFrameDelivery();
}

void WebSocket::onBinaryFrameReceived(std::function<void(std::string_view, bool)> f) {
    connection_->signals().binaryFrame = std::move(f);
    connection_->updateFrameDelivery();
}

void WebSocket::onPong(std::function<void(std::chrono::microseconds, std::string_view)> f) {
    connection_->signals().pong = std::move(f);
}

void WebSocket::onPingReceived(std::function<void(std::string_view)> f) {
    connection_->signals().ping = std::move(f);
}

void WebSocket::onDisconnected(std::function<void()> f) {
    connection_->disconnected = std::move(f);
}

void WebSocket::onError(std::function<void(std::error_code)> f) {
    connection_->signals().error = std::move(f);
}

void WebSocket::onBytesWritten(std::function<void(std::size_t)> f) {
    connection_->signals().bytesWritten = std::move(f);
}

void WebSocket::onStateChanged(std::function<void(SocketState)> f) {
    connection_->signals().stateChanged = std::move(f);
}

void WebSocket::onAboutToClose(std::function<void()> f) {
    connection_->signals().aboutToClose = std::move(f);
}

} // namespace wsgate

namespace wsgate {

bool WebSocket::isSecure() const noexcept {
    return connection_->tlsSession() != nullptr;
}

std::optional<SslCertificate> WebSocket::peerCertificate() const {
    const auto* session = connection_->tlsSession();
    if (session == nullptr) {
        return std::nullopt;
    }
    auto certificate = session->peerCertificate();
    if (!certificate) {
        return std::nullopt;
    }
    return SslCertificate{certificate->subject,      certificate->issuer,
                          certificate->serialNumber, certificate->notBefore,
                          certificate->notAfter,     std::move(certificate->der)};
}

std::string WebSocket::sslProtocol() const {
    const auto* session = connection_->tlsSession();
    return session != nullptr ? std::string(session->protocolVersion()) : std::string();
}

std::string WebSocket::sslCipher() const {
    const auto* session = connection_->tlsSession();
    return session != nullptr ? std::string(session->cipherSuite()) : std::string();
}

std::string WebSocket::sslServerName() const {
    const auto* session = connection_->tlsSession();
    return session != nullptr ? std::string(session->serverName()) : std::string();
}

std::string WebSocket::sslNextProtocol() const {
    const auto* session = connection_->tlsSession();
    return session != nullptr ? std::string(session->alpnProtocol()) : std::string();
}

bool WebSocket::sslSessionResumed() const noexcept {
    const auto* session = connection_->tlsSession();
    return session != nullptr && session->sessionResumed();
}

} // namespace wsgate
