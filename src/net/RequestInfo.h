// The request of an accepted connection, kept for the WebSocket's getters
// (requestUrl, resourceName, origin, subprotocol, requestHeader,
// requestHeaders) for as long as the connection lives.
//
// Why it is packed: this block is the only part of the request an open
// connection keeps, and most connections sit idle, so its size is paid once
// per connection, a million times over on a busy gateway. Stored as plain
// NUL-terminated text, the load generator's request (Host, Upgrade,
// Connection, Sec-WebSocket-Key, Sec-WebSocket-Version, no Origin) took 134
// bytes, a 144-byte malloc chunk; coded as below it takes 53, which glibc
// serves from a 64-byte chunk (up to 56 bytes fit one), so an idle
// connection holds 80 bytes less. A browser's request, with more well-known
// headers, sheds about a third of its size (636 bytes to 424 in the unit
// test's example).
//
// Layout: one allocation of exactly the bytes needed.
//
//   byte 0   the header count (at most proto::maxHeaderCount)
//   byte 1   the index of the header whose value is the host; 0xFE when the
//            host is empty, 0xFF when it follows the headers
//   byte 2   the same for the origin
//   byte 3   1 when the connection came over TLS, else 0
//   then     target NUL, subprotocol NUL
//   then     each header in order, as one of
//              0x01-0x03   a whole header, name and value: "Upgrade:
//                          websocket", "Connection: Upgrade" or
//                          "Sec-WebSocket-Version: 13", which nearly every
//                          client sends
//              0x04-0x1F   a well-known name (User-Agent, Origin, Cookie, ...),
//                          then value NUL
//              otherwise   name NUL value NUL, as received
//   then     host NUL if byte 1 is 0xFF, then origin NUL if byte 2 is 0xFF
//
// Host and origin are nearly always header values, so they are found there
// rather than stored twice; an empty one (no Origin sent) takes no byte, and
// only one that is neither (the authority of an absolute-form target) follows
// the headers.
//
// A code cannot be mistaken for the first byte of a name: names are HTTP
// tokens (RFC 7230 §3.2.6), which the handshake parser checks, and tokens are
// printable ASCII. A name takes a code only when it is spelled exactly as in
// the table, and a pair only when its value matches too, so every getter
// gives back the bytes the parser produced, the client's case included.
#pragma once

#include "proto/Handshake.h"
#include "wsgate/WebSocket.h"

#include <cstddef>
#include <memory>
#include <string_view>

namespace wsgate::detail {

class RequestInfo {
public:
    /// Replaces what is stored with `request`, the subprotocol chosen for it
    /// and whether it came over TLS. Nothing of `request` is referenced later.
    void assign(const proto::HandshakeRequest& request, std::string_view subprotocol, bool secure);
    /// The views below stay valid until the next assign() or the destructor.
    std::string_view target() const noexcept;
    std::string_view host() const noexcept;
    std::string_view origin() const noexcept;
    std::string_view subprotocol() const noexcept;
    bool secure() const noexcept { return data_ && data_[secureAt] != 0; }
    /// The first value of header `name` (case-insensitive), empty when absent.
    std::string_view header(std::string_view name) const noexcept;
    /// Every header, in order.
    WebSocket::HeaderList headerList() const;
    /// The size of the block, 0 before the first assign().
    std::size_t storedBytes() const noexcept;

private:
    static constexpr std::size_t countAt = 0;
    static constexpr std::size_t hostAt = 1;
    static constexpr std::size_t originAt = 2;
    static constexpr std::size_t secureAt = 3;
    static constexpr std::size_t fieldsAt = 4;

    std::size_t headerCount() const noexcept { return static_cast<unsigned char>(data_[countAt]); }
    /// Where the first header starts.
    const char* firstHeader() const noexcept;
    /// Where the host and origin that are no header's value start.
    const char* extras() const noexcept;
    /// The value of the header whose index is at `at`, or else the `extra`th
    /// string after the headers.
    std::string_view headerOrExtra(std::size_t at, std::size_t extra) const noexcept;
    /// Calls visit(name, value) for each header in order while it returns true.
    template <class Visit>
    void forEachHeader(Visit visit) const;

    std::unique_ptr<char[]> data_;
};

} // namespace wsgate::detail
