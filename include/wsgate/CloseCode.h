// Close codes of RFC 6455 §7.4, under the names of QWebSocketProtocol::CloseCode.
#pragma once

#include <cstdint>

namespace wsgate {

/// A WebSocket close code (RFC 6455 §7.4.1). The enumerators are the codes
/// that Qt names; any other value in 3000–4999 is valid too and is carried as
/// is, e.g. `static_cast<CloseCode>(4000)`.
enum class CloseCode : std::uint16_t {
    CloseCodeNormal = 1000,
    CloseCodeGoingAway = 1001,
    CloseCodeProtocolError = 1002,
    CloseCodeDatatypeNotSupported = 1003,
    CloseCodeReserved1004 = 1004,
    /// Never sent on the wire: reported when a close frame had no code.
    CloseCodeMissingStatusCode = 1005,
    /// Never sent on the wire: reported when the connection dropped without a
    /// close frame, and by Server::serverError when a handshake is refused.
    CloseCodeAbnormalDisconnection = 1006,
    CloseCodeWrongDatatype = 1007,
    CloseCodePolicyViolated = 1008,
    CloseCodeTooMuchData = 1009,
    CloseCodeMissingExtension = 1010,
    CloseCodeBadOperation = 1011,
    /// Never sent on the wire: reported when the TLS handshake failed.
    CloseCodeTlsHandshakeFailed = 1015,
};

/// True for a code that an endpoint may put in a close frame (RFC 6455
/// §7.4.1 and §7.4.2): 1000–1003, 1007–1011, 3000–4999. 1004–1006, 1015 and
/// the other unassigned codes below 3000 are not.
constexpr bool isValidCloseCode(std::uint16_t code) noexcept {
    if (code >= 3000 && code <= 4999) {
        return true;
    }
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011);
}

} // namespace wsgate
