// The address of a TCP handle's end, as text and port.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

namespace wsgate::net {

/// The peer's (`peer`) or the local address of `handle`: text (IPv6 without
/// brackets) and port. False, changing nothing, when the socket has none.
bool socketAddress(const uv_tcp_t* handle, bool peer, std::string& host, std::uint16_t& port);

} // namespace wsgate::net
