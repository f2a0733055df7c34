// The address of a TCP socket's end, as text and port.
#pragma once

#include <cstdint>
#include <string>

namespace wsgate::net {

/// The peer's (`peer`) or the local address of socket `fd`: text (IPv6
/// without brackets) and port. False, changing nothing, when it has none.
bool socketAddress(int fd, bool peer, std::string& host, std::uint16_t& port);

} // namespace wsgate::net
