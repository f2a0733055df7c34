// A peer that sends but does not read must not grow the server's memory:
// past 1 MiB waiting to be written, the server stops reading it (and the
// peer's own sends stall in TCP), until it reads again.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "support/EchoTargets.h"
#include "support/LoopThread.h"
#include "support/RawClient.h"
#include "wsgate/Server.h"
#include "wsgate/WebSocket.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <doctest/doctest.h>
#include <memory>
#include <string>
#include <vector>

using namespace wsgate::test;
using namespace std::chrono_literals;

namespace {

struct EchoServer {
    std::unique_ptr<wsgate::Server> server;
    std::vector<std::unique_ptr<wsgate::WebSocket>> sockets;
    LoopThread thread;
    std::uint16_t port = 0;

    EchoServer() {
        thread.addTeardown([this] {
            sockets.clear();
            server.reset();
        });
        port = thread.call([&] {
            server = std::make_unique<wsgate::Server>(
                "backpressure", wsgate::Server::SslMode::NonSecureMode, thread.loop());
            server->onNewConnection([this] {
                while (auto ws = server->nextPendingConnection()) {
                    InProcessEcho::makeEcho(*ws);
                    sockets.push_back(std::move(ws));
                }
            });
            REQUIRE(server->listen("127.0.0.1", 0));
            return server->serverPort();
        });
    }
    ~EchoServer() { thread.finish(); }

    std::size_t bytesToWrite() {
        return thread.call([&] { return sockets.empty() ? 0 : sockets[0]->bytesToWrite(); });
    }
};

/// Sends `chunk` again and again without ever reading, until `limit` bytes
/// went out or the socket stays full for `stall`. Returns the bytes sent.
std::size_t floodWithoutReading(int fd, const std::string& chunk, std::size_t limit,
                                std::chrono::milliseconds stall, bool& stalled) {
    std::size_t sent = 0;
    std::size_t offset = 0;
    stalled = false;
    while (sent < limit) {
        const ssize_t n =
            ::send(fd, chunk.data() + offset, chunk.size() - offset, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            offset = (offset + static_cast<std::size_t>(n)) % chunk.size();
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd p{fd, POLLOUT, 0};
            if (::poll(&p, 1, static_cast<int>(stall.count())) == 0) {
                stalled = true;
                break;
            }
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        break;
    }
    return sent;
}

} // namespace

TEST_SUITE("backpressure") {
    TEST_CASE("a peer that pings and never reads is stopped being read, not buffered") {
        EchoServer s;
        RawClient client;
        REQUIRE(client.open(s.port));

        std::string chunk;
        for (int i = 0; i < 500; ++i) {
            chunk += frame(opcode::ping, std::string(125, 'p'));
        }
        bool stalled = false;
        const std::size_t limit = 64u * 1024 * 1024;
        const std::size_t sent = floodWithoutReading(client.fd(), chunk, limit, 500ms, stalled);
        MESSAGE("sent " << sent << " bytes of pings before the socket stalled");
        // Without backpressure the server reads on and queues every pong.
        CHECK(stalled);
        CHECK(sent < limit);
        const std::size_t queued = s.bytesToWrite();
        MESSAGE("server has " << queued << " bytes waiting");
        CHECK(queued <= 2u * 1024 * 1024);

        // Once the client reads, the server reads again: the rest of the pings
        // are answered and a message sent last comes back. The flood may have
        // stopped inside a frame: finish it first.
        const std::size_t frameSize = chunk.size() / 500;
        const std::size_t partial = sent % frameSize;
        if (partial != 0) {
            REQUIRE(client.send(chunk.substr(partial, frameSize - partial)));
        }
        REQUIRE(client.sendText("still here"));
        client.setTimeout(5s);
        std::size_t pongs = 0;
        bool echoed = false;
        for (std::size_t i = 0; i < 4'000'000 && !echoed; ++i) {
            ReceivedFrame f = client.readFrame(5s);
            if (!f.isFrame()) {
                break;
            }
            if (f.opcode == opcode::pong) {
                ++pongs;
            } else {
                echoed = f.opcode == opcode::text && f.payload == "still here";
                CHECK(echoed);
            }
        }
        CHECK(echoed);
        CHECK(pongs == (sent + frameSize - 1) / frameSize);
    }
}
