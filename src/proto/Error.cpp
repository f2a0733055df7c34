#include "wsgate/Error.h"

#include <string>

namespace wsgate {
namespace {

struct ErrorInfo {
    const char* message;
    CloseCode closeCode;
    int httpStatus;
};

// The one table of error texts, close codes and HTTP statuses, indexed by
// the Error value. Handshake errors close nothing (1006 is what serverError
// reports for them), frame errors answer no HTTP status.
constexpr ErrorInfo errorTable[] = {
    {"unknown error", CloseCode::CloseCodeAbnormalDisconnection, 0},
    {"malformed HTTP request", CloseCode::CloseCodeAbnormalDisconnection, 400},
    {"method is not GET", CloseCode::CloseCodeAbnormalDisconnection, 405},
    {"HTTP version is below 1.1", CloseCode::CloseCodeAbnormalDisconnection, 400},
    {"missing Host header", CloseCode::CloseCodeAbnormalDisconnection, 400},
    {"missing 'Upgrade: websocket' header", CloseCode::CloseCodeAbnormalDisconnection, 426},
    {"Connection header lacks the 'upgrade' token", CloseCode::CloseCodeAbnormalDisconnection, 400},
    {"Sec-WebSocket-Key is not base64 of 16 bytes", CloseCode::CloseCodeAbnormalDisconnection, 400},
    {"unsupported Sec-WebSocket-Version (13 is supported)",
     CloseCode::CloseCodeAbnormalDisconnection, 426},
    {"upgrade request has a body", CloseCode::CloseCodeAbnormalDisconnection, 400},
    {"request headers too large", CloseCode::CloseCodeAbnormalDisconnection, 431},
    {"origin refused", CloseCode::CloseCodeAbnormalDisconnection, 403},
    {"too many pending connections", CloseCode::CloseCodeAbnormalDisconnection, 503},
    {"handshake timed out", CloseCode::CloseCodeAbnormalDisconnection, 408},
    {"reserved bits set without a negotiated extension", CloseCode::CloseCodeProtocolError, 0},
    {"reserved opcode", CloseCode::CloseCodeProtocolError, 0},
    {"client frame is not masked", CloseCode::CloseCodeProtocolError, 0},
    {"payload length not in its shortest encoding", CloseCode::CloseCodeProtocolError, 0},
    {"64-bit payload length has its top bit set", CloseCode::CloseCodeProtocolError, 0},
    {"control frame payload over 125 bytes", CloseCode::CloseCodeProtocolError, 0},
    {"fragmented control frame", CloseCode::CloseCodeProtocolError, 0},
    {"continuation frame without a message to continue", CloseCode::CloseCodeProtocolError, 0},
    {"new data frame inside a fragmented message", CloseCode::CloseCodeProtocolError, 0},
    {"invalid UTF-8 in a text message", CloseCode::CloseCodeWrongDatatype, 0},
    {"close frame with a 1-byte payload", CloseCode::CloseCodeProtocolError, 0},
    {"invalid close code", CloseCode::CloseCodeProtocolError, 0},
    {"close reason is not UTF-8", CloseCode::CloseCodeWrongDatatype, 0},
    {"frame too large", CloseCode::CloseCodeTooMuchData, 0},
    {"message too large", CloseCode::CloseCodeTooMuchData, 0},
    {"compressed data does not inflate", CloseCode::CloseCodeWrongDatatype, 0},
    {"connection reset", CloseCode::CloseCodeAbnormalDisconnection, 0},
    {"peer closed the connection without a close frame", CloseCode::CloseCodeAbnormalDisconnection,
     0},
    {"peer did not answer the close frame in time", CloseCode::CloseCodeAbnormalDisconnection, 0},
    {"peer reads too slowly", CloseCode::CloseCodePolicyViolated, 0},
    {"message not complete within the message timeout", CloseCode::CloseCodePolicyViolated, 0},
    {"TLS handshake failed", CloseCode::CloseCodeTlsHandshakeFailed, 0},
    {"TLS error", CloseCode::CloseCodeAbnormalDisconnection, 0},
    {"operation not permitted in this state", CloseCode::CloseCodeAbnormalDisconnection, 0},
};

constexpr int errorCount = static_cast<int>(sizeof(errorTable) / sizeof(errorTable[0]));
static_assert(errorCount == static_cast<int>(Error::OperationNotPermitted) + 1,
              "every Error has a row in errorTable");

const ErrorInfo& infoFor(int value) noexcept {
    if (value <= 0 || value >= errorCount) {
        return errorTable[0];
    }
    return errorTable[value];
}

bool isHandshakeError(int value) noexcept {
    return value >= static_cast<int>(Error::MalformedRequest) &&
           value <= static_cast<int>(Error::HandshakeTimeout);
}

bool isProtocolViolation(int value) noexcept {
    return value >= static_cast<int>(Error::ReservedBitsSet) &&
           value <= static_cast<int>(Error::InflateFailed);
}

class ErrorCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "wsgate"; }
    std::string message(int value) const override { return infoFor(value).message; }
    bool equivalent(int value, const std::error_condition& condition) const noexcept override {
        if (condition == ErrorCondition::HandshakeFailed) {
            return isHandshakeError(value);
        }
        if (condition == ErrorCondition::ProtocolViolation) {
            return isProtocolViolation(value);
        }
        return default_error_condition(value) == condition;
    }
};

class ErrorConditionCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "wsgate.condition"; }
    std::string message(int value) const override {
        switch (static_cast<ErrorCondition>(value)) {
        case ErrorCondition::HandshakeFailed:
            return "handshake failed";
        case ErrorCondition::ProtocolViolation:
            return "protocol violation";
        }
        return "unknown condition";
    }
};

} // namespace

const std::error_category& errorCategory() noexcept {
    static const ErrorCategory category;
    return category;
}

const std::error_category& errorConditionCategory() noexcept {
    static const ErrorConditionCategory category;
    return category;
}

CloseCode closeCodeFor(Error e) noexcept {
    return infoFor(static_cast<int>(e)).closeCode;
}

int httpStatusFor(Error e) noexcept {
    return infoFor(static_cast<int>(e)).httpStatus;
}

} // namespace wsgate
