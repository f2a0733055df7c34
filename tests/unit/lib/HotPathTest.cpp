// The whole stack on a real socket: a Server on an EventLoop, a loopback
// client in the same thread. Receiving and echoing small messages allocates
// nothing, and the per-connection objects stay small.
#include "net/Connection.h"
#include "unit/proto/AllocationCounter.h"
#include "wsgate/EventLoop.h"
#include "wsgate/Server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <doctest/doctest.h>
#include <memory>
#include <string>
#include <vector>

namespace {

/// A masked client text frame of `payload`, written into `out`.
void appendFrame(std::string& out, const std::string& payload) {
    const std::uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};
    out.push_back(static_cast<char>(0x81));
    out.push_back(static_cast<char>(0x80 | payload.size()));
    out.append(reinterpret_cast<const char*>(mask), 4);
    for (std::size_t i = 0; i < payload.size(); ++i) {
        out.push_back(static_cast<char>(payload[i] ^ static_cast<char>(mask[i % 4])));
    }
}

int connectTo(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    return fd;
}

/// Reads what is there without blocking into `buffer`; returns the count.
std::size_t drain(int fd, std::array<char, 1 << 16>& buffer) {
    std::size_t total = 0;
    for (;;) {
        const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n <= 0) {
            return total;
        }
        total += static_cast<std::size_t>(n);
    }
}

} // namespace

TEST_SUITE("The hot path, end to end") {
    TEST_CASE("echoing 1000 small messages through Server and WebSocket allocates nothing") {
        wsgate::EventLoop loop;
        auto server =
            std::make_unique<wsgate::Server>("", wsgate::Server::SslMode::NonSecureMode, loop);
        std::unique_ptr<wsgate::WebSocket> socket;
        std::size_t received = 0;
        server->onNewConnection([&] {
            socket = server->nextPendingConnection();
            auto* ws = socket.get();
            ws->onTextMessageReceived([ws, &received](std::string_view m) {
                ++received;
                ws->sendTextMessage(m);
            });
        });
        REQUIRE(server->listen("127.0.0.1", 0));
        const int fd = connectTo(server->serverPort());
        const std::string request = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                                    "Connection: Upgrade\r\n"
                                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                    "Sec-WebSocket-Version: 13\r\n\r\n";
        REQUIRE(::send(fd, request.data(), request.size(), 0) ==
                static_cast<ssize_t>(request.size()));
        for (int i = 0; i < 200 && !socket; ++i) {
            loop.runOnce(false);
            ::poll(nullptr, 0, 1);
        }
        REQUIRE(socket);

        std::string batch;
        for (int i = 0; i < 1000; ++i) {
            appendFrame(batch, "message number " + std::to_string(i % 10) + " of the batch!");
        }
        std::array<char, 1 << 16> buffer{};
        auto run = [&](std::size_t target) {
            REQUIRE(::send(fd, batch.data(), batch.size(), 0) ==
                    static_cast<ssize_t>(batch.size()));
            for (int i = 0; i < 2000 && received < target; ++i) {
                loop.runOnce(false);
                drain(fd, buffer);
                ::poll(nullptr, 0, 0);
            }
            drain(fd, buffer);
        };
        // A first batch warms up the buffers that are kept (the loop's cork
        // buffer); then a batch must allocate nothing at all.
        run(1000);
        REQUIRE(received == 1000);
        wsgate::test::AllocationStats stats;
        {
            wsgate::test::AllocationScope scope;
            run(2000);
            stats = scope.stats();
        }
        CHECK(received == 2000);
        CHECK(stats.count == 0);
        CHECK(stats.bytes == 0);

        ::close(fd);
        for (int i = 0; i < 200 && socket->state() != wsgate::SocketState::UnconnectedState; ++i) {
            loop.runOnce(false);
            ::poll(nullptr, 0, 1);
        }
        socket.reset();
        server.reset();
        while (loop.runOnce(false)) {
        }
    }

    TEST_CASE("per-connection objects stay small") {
        // A WebSocket is one pointer; everything else is in the connection.
        CHECK(sizeof(wsgate::WebSocket) == sizeof(void*));
        MESSAGE("sizeof(Connection) = " << sizeof(wsgate::detail::Connection));
        // No libuv handle inside (a uv_tcp_t alone is 248 bytes): at 328
        // bytes a connection is a 336-byte malloc chunk; any growth goes to
        // the next, 352.
        CHECK(sizeof(wsgate::detail::Connection) <= 328);
    }
}
