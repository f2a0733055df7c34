// The key for a PSK cipher suite, as QSslPreSharedKeyAuthenticator.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

namespace wsgate {

/// Passed to Server::onPreSharedKeyAuthenticationRequired while a client
/// negotiates a PSK suite. Set the key for identity(); leave it empty to
/// refuse the client. mbedTLS 2.28 sends no identity hint, so
/// identityHint() is what the configuration holds, for the record only.
class PreSharedKeyAuthenticator {
public:
    PreSharedKeyAuthenticator(std::string identity, std::string identityHint,
                              std::size_t maximumLength)
        : identity_(std::move(identity)), identityHint_(std::move(identityHint)),
          maximumLength_(maximumLength) {}

    const std::string& identity() const noexcept { return identity_; }
    const std::string& identityHint() const noexcept { return identityHint_; }
    /// Longer keys are refused (mbedTLS 2.28: 32 bytes).
    std::size_t maximumPreSharedKeyLength() const noexcept { return maximumLength_; }
    void setPreSharedKey(std::string_view key) { key_.assign(key); }
    const std::string& preSharedKey() const noexcept { return key_; }

private:
    std::string identity_;
    std::string identityHint_;
    std::size_t maximumLength_;
    std::string key_;
};

} // namespace wsgate
