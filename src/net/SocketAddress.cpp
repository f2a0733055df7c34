#include "net/SocketAddress.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

namespace wsgate::net {

bool socketAddress(int fd, bool peer, std::string& host, std::uint16_t& port) {
    sockaddr_storage storage{};
    socklen_t length = sizeof storage;
    auto* sa = reinterpret_cast<sockaddr*>(&storage);
    int rc = peer ? ::getpeername(fd, sa, &length) : ::getsockname(fd, sa, &length);
    if (rc < 0) {
        return false;
    }
    char text[64] = {};
    if (storage.ss_family == AF_INET6) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
        uv_ip6_name(in6, text, sizeof text);
        port = ntohs(in6->sin6_port);
    } else {
        auto* in4 = reinterpret_cast<sockaddr_in*>(&storage);
        uv_ip4_name(in4, text, sizeof text);
        port = ntohs(in4->sin_port);
    }
    host = text;
    return true;
}

} // namespace wsgate::net
