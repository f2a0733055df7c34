// Which client a server signal is about, before it has a WebSocket.
#pragma once

#include <cstdint>
#include <string>

namespace wsgate {

/// Names the connection a TLS or handshake signal concerns (Qt's TLS
/// signals name none). Compare with WebSocket::peerAddress() and peerPort()
/// once the connection is accepted.
struct ClientInfo {
    std::string address; ///< The peer's address as text (IPv6 without brackets).
    std::uint16_t port = 0;
    std::string serverName; ///< The SNI name the client asked for, empty if none or not TLS.
};

} // namespace wsgate
