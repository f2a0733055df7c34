// wsgate's errors: one value per violated rule, with a std::error_category.
#pragma once

#include "wsgate/CloseCode.h"

#include <system_error>

namespace wsgate {

/// Every way a connection can fail. Each value names the rule that was
/// broken; errorMessage() gives its text, closeCodeFor() the close code sent
/// for it and httpStatusFor() the status a refused handshake is answered with.
enum class Error {
    // Opening handshake (RFC 6455 §4.2.1), answered with an HTTP status.
    MalformedRequest = 1,      ///< Not a parseable HTTP/1.1 request (400).
    MethodNotGet,              ///< The method is not GET (405).
    BadHttpVersion,            ///< The version is below HTTP/1.1 (400).
    MissingHost,               ///< No Host header (400).
    MissingUpgrade,            ///< No `Upgrade: websocket` (426).
    MissingConnectionUpgrade,  ///< `Connection` lacks the `upgrade` token (400).
    BadKey,                    ///< Sec-WebSocket-Key is not base64 of 16 bytes (400).
    UnsupportedVersion,        ///< Sec-WebSocket-Version is not 13 (426).
    RequestHasBody,            ///< The upgrade request carries a body (400).
    HeadersTooLarge,           ///< The request's headers pass the limit (431).
    OriginRefused,             ///< The origin was refused by the application (403).
    TooManyPendingConnections, ///< The pending queue is full (503).
    HandshakeTimeout,          ///< The handshake did not finish in time (408).

    // Frames and messages (RFC 6455 §5), answered with a close code.
    ReservedBitsSet,        ///< RSV1–3 set without an extension that owns them (1002).
    ReservedOpcode,         ///< Opcode 3–7 or 0xB–0xF (1002).
    UnmaskedClientFrame,    ///< A client frame without a mask (1002).
    NonCanonicalLength,     ///< A length not in its shortest encoding (1002).
    LengthTopBitSet,        ///< A 64-bit length with its top bit set (1002).
    ControlFrameTooLong,    ///< A control frame over 125 bytes (1002).
    FragmentedControlFrame, ///< A control frame without FIN (1002).
    UnexpectedContinuation, ///< A continuation frame with no message to continue (1002).
    ExpectedContinuation,   ///< A new data frame inside a fragmented message (1002).
    InvalidUtf8,            ///< A text message that is not UTF-8 (1007).
    BadClosePayload,        ///< A close frame with a 1-byte payload (1002).
    InvalidCloseCode,       ///< A close code that may not be sent (1002).
    InvalidCloseReason,     ///< A close reason that is not UTF-8 (1007).
    FrameTooLarge,          ///< A frame over maxAllowedIncomingFrameSize (1009).
    MessageTooLarge,        ///< A message over maxAllowedIncomingMessageSize (1009).
    InflateFailed,          ///< Compressed data that does not inflate (1007).

    // The connection.
    ConnectionReset,         ///< The TCP connection failed or was reset (1006).
    ClosedWithoutCloseFrame, ///< The peer closed TCP without a close frame (1006).
    CloseTimeout,            ///< The peer did not answer our close frame in time (1006).
    SlowConsumer,            ///< The peer reads too slowly; its output passed the limit (1008).
    MessageTimeout,          ///< A message was not complete within the message timeout (1008).
    TlsHandshakeFailed,      ///< The TLS handshake failed (1015).
    TlsError,                ///< A TLS record failed after the handshake (1006).
    OperationNotPermitted,   ///< The call is not allowed in the current state.
};

/// Conditions that group the errors: every handshake error compares equal to
/// HandshakeFailed, every frame or message error to ProtocolViolation.
enum class ErrorCondition {
    HandshakeFailed = 1,
    ProtocolViolation,
};

const std::error_category& errorCategory() noexcept;
const std::error_category& errorConditionCategory() noexcept;

inline std::error_code make_error_code(Error e) noexcept {
    return {static_cast<int>(e), errorCategory()};
}
inline std::error_condition make_error_condition(ErrorCondition c) noexcept {
    return {static_cast<int>(c), errorConditionCategory()};
}

/// The close code a failed connection sends for `e` (RFC 6455 §7.4.1).
CloseCode closeCodeFor(Error e) noexcept;

/// The HTTP status a refused handshake is answered with, or 0 when `e` is
/// not a handshake error.
int httpStatusFor(Error e) noexcept;

} // namespace wsgate

template <>
struct std::is_error_code_enum<wsgate::Error> : std::true_type {};
template <>
struct std::is_error_condition_enum<wsgate::ErrorCondition> : std::true_type {};
