// The opening handshake of RFC 6455 §4, server side, sans I/O: llhttp parses
// the upgrade request, the rules of §4.2.1 validate it, and the response of
// §4.2.2 is built as bytes.
#pragma once

#include "wsgate/Error.h"

#include <llhttp.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate::proto {

/// Request headers are capped before anything is kept: past this many bytes
/// (request line and headers together) the answer is 431.
inline constexpr std::size_t defaultMaxHeaderBytes = 16 * 1024;
/// Past this many header lines the answer is 431 as well.
inline constexpr std::size_t maxHeaderCount = 100;

struct HttpHeader {
    std::string name;  ///< As the client spelled it.
    std::string value; ///< Without leading and trailing whitespace.
};

/// A parsed and validated upgrade request (RFC 6455 §4.2.1).
struct HandshakeRequest {
    /// The resource name: path and query. An absolute-form target
    /// (RFC 7230 §5.3.2) is reduced to its path, and its authority becomes host.
    std::string target;
    std::string host; ///< The Host header.
    /// The Origin header, or the Sec-WebSocket-Origin of drafts 8 to 10 when
    /// Origin is absent; empty when both are.
    std::string origin;
    std::string key; ///< Sec-WebSocket-Key, trimmed.
    /// Sec-WebSocket-Protocol tokens in the client's order, gathered from one
    /// header or several.
    std::vector<std::string> protocols;
    /// Sec-WebSocket-Extensions offers in the client's order, one element per
    /// offer with its parameters, e.g. "permessage-deflate; client_max_window_bits".
    std::vector<std::string> extensions;
    /// Every header as received, in order.
    std::vector<HttpHeader> headers;

    /// The first value of header `name` (case-insensitive), empty when absent.
    std::string_view header(std::string_view name) const noexcept;
};

/// Incremental parser of one upgrade request. Feed it bytes as they arrive;
/// it keeps llhttp's resume point, so any split of the input gives the same
/// result.
class HandshakeParser {
public:
    enum class Status {
        NeedMore, ///< Every byte was consumed; the request is not complete.
        Complete, ///< The request is complete and valid; see request().
        Failed,   ///< The request is invalid; see error(). Feed nothing more.
    };

    explicit HandshakeParser(std::size_t maxHeaderBytes = defaultMaxHeaderBytes);
    HandshakeParser(const HandshakeParser&) = delete;
    HandshakeParser& operator=(const HandshakeParser&) = delete;

    /// Parses `size` bytes. On Complete, `consumed` is the number of bytes
    /// of `data` that belong to the request; the rest belong to the frame
    /// layer (a client may send frames in the same write as its request).
    /// On NeedMore, `consumed == size`. On Failed the input is discarded and
    /// `consumed == size`, on this call and any later one. After Complete,
    /// later calls consume nothing and return Complete.
    Status receive(const char* data, std::size_t size, std::size_t& consumed);

    /// Why the request failed (a handshake Error), valid after Failed.
    Error error() const noexcept { return error_; }

    /// The parsed request, valid after Complete. Movable-from.
    HandshakeRequest& request() noexcept { return request_; }

private:
    // llhttp calls these synchronously from inside receive(); they are
    // noexcept because an exception must not unwind through llhttp's C frames.
    static int onUrl(llhttp_t* parser, const char* at, std::size_t length) noexcept;
    static int onHeaderField(llhttp_t* parser, const char* at, std::size_t length) noexcept;
    static int onHeaderFieldComplete(llhttp_t* parser) noexcept;
    static int onHeaderValue(llhttp_t* parser, const char* at, std::size_t length) noexcept;
    static int onHeaderValueComplete(llhttp_t* parser) noexcept;
    static int onHeadersComplete(llhttp_t* parser) noexcept;
    Status fail(Error error, std::size_t size, std::size_t& consumed) noexcept;
    std::optional<Error> validate();

    llhttp_t parser_{};
    HandshakeRequest request_;
    std::size_t maxHeaderBytes_;
    std::size_t headerBytes_ = 0;        ///< Request bytes given to llhttp so far.
    std::size_t headerCount_ = 0;        ///< Header fields whose name is complete.
    bool inField_ = false;               ///< A header name is being received.
    std::optional<Error> callbackError_; ///< Why a callback stopped llhttp.
    Status status_ = Status::NeedMore;
    Error error_ = Error::MalformedRequest;
};

/// ASCII case-insensitive equality, as header names and tokens compare
/// (RFC 7230 §3.2).
bool equalsIgnoreCase(std::string_view a, std::string_view b) noexcept;

/// Sec-WebSocket-Accept for `key` (RFC 6455 §4.2.2): base64 of the SHA-1 of
/// the key and the GUID 258EAFA5-E914-47DA-95CA-C5AB0DC85B11.
std::string acceptKey(std::string_view key);

/// The subprotocol the server speaks: the first of the client's offers that
/// is in `supported` (Qt's choice), or empty. Never one the client did not offer.
std::string_view chooseSubprotocol(const std::vector<std::string>& offered,
                                   const std::vector<std::string>& supported) noexcept;

/// The 101 response. `subprotocol`, `serverName` and `extensions` are left out
/// when empty; `extensions` is the full value of Sec-WebSocket-Extensions.
std::string buildAcceptResponse(std::string_view key, std::string_view subprotocol,
                                std::string_view serverName, std::string_view extensions = {});

/// The response that refuses a handshake with httpStatusFor(error): a status
/// line, the headers the status needs (426 names `Sec-WebSocket-Version: 13`
/// and `Upgrade: websocket`), `Connection: close`, `Server` when set, and a
/// short text/plain body naming the rule.
std::string buildErrorResponse(Error error, std::string_view serverName);

} // namespace wsgate::proto
