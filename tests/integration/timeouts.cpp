// Deadlines on an open connection: a message must be complete within the
// message timeout from its first byte, however slowly its bytes trickle in
// (Qt resets its timer per byte, so a peer that sends a byte every 4 s keeps
// a frame open forever).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "support/EchoTargets.h"
#include "support/LoopThread.h"
#include "support/RawClient.h"
#include "wsgate/Server.h"
#include "wsgate/WebSocket.h"

#include <chrono>
#include <doctest/doctest.h>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace wsgate::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

/// An echo server on a loop thread with a short message timeout.
struct TimeoutServer {
    std::unique_ptr<wsgate::Server> server;
    std::vector<std::unique_ptr<wsgate::WebSocket>> sockets;
    std::vector<std::error_code> errors;
    LoopThread thread;
    std::uint16_t port = 0;

    explicit TimeoutServer(std::chrono::milliseconds messageTimeout) {
        thread.addTeardown([this] {
            sockets.clear();
            server.reset();
        });
        port = thread.call([&] {
            server = std::make_unique<wsgate::Server>(
                "timeouts", wsgate::Server::SslMode::NonSecureMode, thread.loop());
            server->setMessageTimeout(messageTimeout);
            server->onNewConnection([this] {
                while (auto ws = server->nextPendingConnection()) {
                    InProcessEcho::makeEcho(*ws);
                    ws->onError([this](std::error_code e) { errors.push_back(e); });
                    sockets.push_back(std::move(ws));
                }
            });
            REQUIRE(server->listen("127.0.0.1", 0));
            return server->serverPort();
        });
    }
    ~TimeoutServer() { thread.finish(); }
};

} // namespace

TEST_SUITE("message timeout") {
    TEST_CASE("a frame trickled a byte at a time is failed with 1008 at the deadline") {
        TimeoutServer s(400ms);
        RawClient client;
        REQUIRE(client.open(s.port));
        const std::string bytes = frame(opcode::text, std::string(100, 'x'));
        const auto start = Clock::now();
        // The header and a few bytes, then one byte every 100 ms: each byte
        // would reset a per-byte idle timer; the deadline must not move.
        REQUIRE(client.send(bytes.substr(0, 10)));
        ReceivedFrame answer;
        for (std::size_t i = 10; i < bytes.size(); ++i) {
            answer = client.readFrame(100ms);
            if (answer.status != ReadStatus::Timeout) {
                break;
            }
            if (!client.send(bytes.substr(i, 1))) {
                break;
            }
        }
        const auto elapsed = Clock::now() - start;
        REQUIRE(answer.isClose());
        CHECK(answer.closeCode() == 1008);
        CHECK(elapsed >= 350ms);
        CHECK(elapsed < 2s);
        CHECK(client.expectTcpClosed(3s).closed);
        CHECK(s.thread.waitUntil([&] { return !s.errors.empty(); }));
        s.thread.call([&] { CHECK(s.errors.at(0) == wsgate::Error::MessageTimeout); });
    }

    TEST_CASE("a fragmented message whose fragments stop coming is failed too") {
        TimeoutServer s(300ms);
        RawClient client;
        REQUIRE(client.open(s.port));
        REQUIRE(client.sendText("first part ", false));
        // Pings keep arriving, but the message does not advance.
        for (int i = 0; i < 3; ++i) {
            REQUIRE(client.sendPing("p"));
            CHECK(client.expectPong("p", 1s));
        }
        CHECK(client.expectFailure(1008, 2s));
    }

    TEST_CASE("back-to-back messages that each complete in time are not cut") {
        TimeoutServer s(300ms);
        RawClient client;
        REQUIRE(client.open(s.port));
        // Each message is split across two writes 50 ms apart, so one is
        // always incomplete between reads, for far longer than the timeout
        // in all; only the age of each message counts.
        const auto until = Clock::now() + 1200ms;
        int count = 0;
        while (Clock::now() < until) {
            const std::string payload = "message " + std::to_string(count);
            const std::string bytes = frame(opcode::text, payload);
            REQUIRE(client.send(bytes.substr(0, 4)));
            std::this_thread::sleep_for(50ms);
            REQUIRE(client.send(bytes.substr(4)));
            REQUIRE(client.expectText(payload, 1s));
            ++count;
        }
        CHECK(count > 10);
        s.thread.call([&] { CHECK(s.errors.empty()); });
    }

    TEST_CASE("an idle connection between messages has no deadline") {
        TimeoutServer s(200ms);
        RawClient client;
        REQUIRE(client.open(s.port));
        REQUIRE(client.sendText("before"));
        REQUIRE(client.expectText("before"));
        CHECK(client.quietFor(600ms));
        REQUIRE(client.sendText("after"));
        CHECK(client.expectText("after"));
    }

    TEST_CASE("a zero timeout disables the deadline") {
        TimeoutServer s(0ms);
        RawClient client;
        REQUIRE(client.open(s.port));
        const std::string bytes = frame(opcode::binary, std::string(50, 'y'));
        REQUIRE(client.send(bytes.substr(0, 20)));
        CHECK(client.quietFor(500ms));
        REQUIRE(client.send(bytes.substr(20)));
        CHECK(client.expectBinary(std::string(50, 'y')));
    }
}
