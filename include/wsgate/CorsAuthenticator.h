// The origin check of a handshake, as QWebSocketCorsAuthenticator.
#pragma once

#include <string>
#include <utility>

namespace wsgate {

/// Passed to Server::onOriginAuthenticationRequired for each handshake. The
/// handler looks at origin() and calls setAllowed(false) to refuse it; a
/// refused handshake is answered 403 Forbidden. Allowed by default.
class CorsAuthenticator {
public:
    explicit CorsAuthenticator(std::string origin) : origin_(std::move(origin)) {}

    /// The Origin header of the request, empty when the client sent none.
    const std::string& origin() const noexcept { return origin_; }
    void setAllowed(bool allowed) noexcept { allowed_ = allowed; }
    bool allowed() const noexcept { return allowed_; }

private:
    std::string origin_;
    bool allowed_ = true;
};

} // namespace wsgate
