// The closing handshake over real sockets (RFC 6455 §5.5.1, §7), as
// Autobahn's category 7, plus a close started through the API.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "support/ChildProcess.h"
#include "support/EchoTargets.h"
#include "support/RawClient.h"
#include "support/Utf8.h"
#include "wsgate/CloseCode.h"

#include <chrono>
#include <csignal>
#include <doctest/doctest.h>
#include <string>
#include <vector>

using namespace wsgate::test;
using namespace std::chrono_literals;
using wsgate::CloseCode;
using wsgate::SocketState;
using wsgate::WebSocket;
using Clock = std::chrono::steady_clock;

namespace {

RawClient connectTo(std::uint16_t port) {
    RawClient client;
    REQUIRE(client.open(port));
    return client;
}

/// Under the 5 s close timeout: a server that waits for something instead
/// of closing TCP at once fails.
constexpr auto closeWait = 3s;

/// RFC 6455 §7.4.1 and §7.4.2 codes an endpoint may send.
const std::vector<std::uint16_t> validCodes = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                               1010, 1011, 3000, 3999, 4000, 4999};
/// Codes that must not appear in a close frame, as wsgate::isValidCloseCode
/// has it: 1004-1006 and 1015 are reserved, and 1012-1014 are outside RFC
/// 6455's own list.
const std::vector<std::uint16_t> invalidCodes = {0,    999,  1004, 1005, 1006, 1012, 1013, 1014,
                                                 1015, 1016, 1100, 2000, 2999, 5000, 65535};

/// After our close was answered, the server closes TCP first (§7.1.1) and
/// sends nothing more.
void expectServerClosesTcp(RawClient& client) {
    const TcpCloseResult rest = client.expectTcpClosed(serverCloseTimeout);
    CHECK_MESSAGE(rest.frames.empty(), "frames after the close frame, first: ",
                  rest.frames.empty() ? std::string() : rest.frames[0].describe());
    CHECK(rest.trailing.empty());
}

/// The first socket that `server` took, waited for.
WebSocket& firstSocket(InProcessEcho& server) {
    REQUIRE(server.waitForSockets(1));
    return *server.call([](InProcessEcho::State& s) { return s.sockets[0].get(); });
}

std::chrono::milliseconds since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

} // namespace

TEST_SUITE("Autobahn 7 closing handshake") {
    TEST_CASE("the code lists agree with wsgate::isValidCloseCode") {
        for (auto code : validCodes) {
            CAPTURE(code);
            CHECK(wsgate::isValidCloseCode(code));
        }
        for (auto code : invalidCodes) {
            CAPTURE(code);
            CHECK_FALSE(wsgate::isValidCloseCode(code));
        }
    }

    TEST_CASE_TEMPLATE("each valid close code is echoed and the server closes TCP", Target,
                       ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        for (auto code : validCodes) {
            CAPTURE(code);
            RawClient client = connectTo(server.port());
            CHECK(client.sendClose(code, "reason"));
            // §5.5.1: the answer "typically echos the status code it received";
            // the reason comes back too, as from Qt.
            const ReceivedFrame answer = client.expectClose(code);
            CHECK(answer.isClose());
            CHECK(answer.closeReason() == "reason");
            expectServerClosesTcp(client);
        }
    }

    TEST_CASE_TEMPLATE("invalid close codes are a protocol error", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        for (auto code : invalidCodes) {
            CAPTURE(code);
            RawClient client = connectTo(server.port());
            CHECK(client.sendClose(code));
            CHECK(client.expectFailure(1002, closeWait));
        }
    }

    TEST_CASE_TEMPLATE("malformed close payloads", Target, ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        SUBCASE("one byte is a protocol error") {
            CHECK(client.send(frame(opcode::close, "\x03")));
            CHECK(client.expectFailure(1002, closeWait));
        }
        SUBCASE("over 125 bytes is a protocol error") {
            CHECK(client.sendClose(1000, std::string(124, 'r')));
            CHECK(client.expectFailure(1002, closeWait));
        }
        SUBCASE("a reason that is not UTF-8 is 1007") {
            // κόσμε, then a surrogate (Autobahn 7.5.1).
            const std::string reason =
                bytes({0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE,
                       0xB5, 0xED, 0xA0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64});
            CHECK(client.sendClose(1000, reason));
            CHECK(client.expectFailure(1007, closeWait));
        }
        SUBCASE("a reason cut inside a character is 1007") {
            CHECK(client.sendClose(1000, "ok" + bytes({0xE2, 0x82})));
            CHECK(client.expectFailure(1007, closeWait));
        }
    }

    TEST_CASE_TEMPLATE("well-formed close payloads are answered", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        SUBCASE("an empty close gets an empty close or 1000") {
            CHECK(client.sendEmptyClose());
            const ReceivedFrame f = client.readFrame();
            INFO("got: ", f.describe());
            REQUIRE(f.isClose());
            CHECK((f.payload.empty() || f.closeCode() == 1000));
        }
        SUBCASE("a code without a reason") {
            CHECK(client.sendClose(1000));
            CHECK(client.expectClose(1000).isClose());
        }
        SUBCASE("a 123-byte reason, the most that fits") {
            CHECK(client.sendClose(1000, std::string(123, 'r')));
            CHECK(client.expectClose(1000).isClose());
        }
        SUBCASE("a UTF-8 reason") {
            CHECK(client.sendClose(1001, "bye \xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"));
            CHECK(client.expectClose(1001).isClose());
        }
        SUBCASE("a close sent byte by byte") {
            CHECK(client.sendByteByByte(frame(opcode::close, closePayload(1000, "slow")), 1ms));
            CHECK(client.expectClose(1000).isClose());
        }
        expectServerClosesTcp(client);
    }

    TEST_CASE_TEMPLATE("what follows a close frame is ignored", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        SUBCASE("a message and a ping") {
            CHECK(client.send(frame(opcode::text, "before") +
                              frame(opcode::close, closePayload(1000)) +
                              frame(opcode::text, "after") + frame(opcode::ping, "after")));
            CHECK(client.expectText("before"));
        }
        SUBCASE("a second close") {
            CHECK(client.send(frame(opcode::close, closePayload(1000)) +
                              frame(opcode::close, closePayload(1001))));
        }
        SUBCASE("the end of a fragmented message") {
            CHECK(client.send(frame(opcode::text, "start", false) +
                              frame(opcode::close, closePayload(1000)) +
                              frame(opcode::continuation, "end")));
        }
        SUBCASE("garbage that is not even a frame") {
            CHECK(client.send(frame(opcode::close, closePayload(1000)) + randomBytes(100)));
        }
        CHECK(client.expectClose(1000).isClose());
        expectServerClosesTcp(client);
    }

    TEST_CASE_TEMPLATE("a close after a large message: the echo comes first", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        const std::string text = randomUtf8(256 * 1024);
        CHECK(client.send(frame(opcode::text, text) + frame(opcode::close, closePayload(1000))));
        CHECK(client.expectText(text));
        CHECK(client.expectClose(1000).isClose());
        expectServerClosesTcp(client);
    }
}

TEST_SUITE("RFC 6455 7.1.2 closing through the API") {
    TEST_CASE("close(code, reason) sends them and TCP closes once the client answers") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        server.thread().call([&] {
            ws.close(static_cast<CloseCode>(4000), "server bye");
            CHECK(ws.state() == SocketState::ClosingState);
        });
        const ReceivedFrame f = client.expectClose(4000);
        CHECK(f.closeReason() == "server bye");
        CHECK(client.sendClose(4000));
        expectServerClosesTcp(client);
        client.close(); // so that the server need not wait for our FIN
        CHECK(
            server.thread().waitUntil([&] { return ws.state() == SocketState::UnconnectedState; }));
    }

    TEST_CASE("a close reason over 123 bytes is cut at a character boundary") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        std::string reason;
        std::string expected;
        SUBCASE("4-byte characters") {
            // 31 × U+1D11E is 124 bytes; 123 would cut the last one.
            for (int i = 0; i < 31; ++i) {
                reason += bytes({0xF0, 0x9D, 0x84, 0x9E});
            }
            expected = reason.substr(0, 120);
        }
        SUBCASE("ASCII") {
            reason = std::string(200, 'x');
            expected = std::string(123, 'x');
        }
        SUBCASE("2-byte characters ending exactly at 123 bytes") {
            reason = "a";
            for (int i = 0; i < 70; ++i) {
                reason += "\xC3\xA9";
            }
            expected = reason.substr(0, 123);
        }
        server.thread().call([&] { ws.close(CloseCode::CloseCodeNormal, reason); });
        const ReceivedFrame f = client.expectClose(1000);
        CHECK(f.payload.size() <= 125);
        CHECK(isValidUtf8(f.closeReason()));
        CHECK_MESSAGE(f.closeReason() == expected, describeDifference(expected, f.closeReason()));
        CHECK(client.sendClose(1000));
        expectServerClosesTcp(client);
    }

    TEST_CASE("close codes that may not be sent give a close frame with no code") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        CloseCode code = CloseCode::CloseCodeMissingStatusCode;
        SUBCASE("1005") {
            code = CloseCode::CloseCodeMissingStatusCode;
        }
        SUBCASE("1006") {
            code = CloseCode::CloseCodeAbnormalDisconnection;
        }
        SUBCASE("1015") {
            code = CloseCode::CloseCodeTlsHandshakeFailed;
        }
        SUBCASE("1004") {
            code = CloseCode::CloseCodeReserved1004;
        }
        SUBCASE("999") {
            code = static_cast<CloseCode>(999);
        }
        CAPTURE(static_cast<int>(code));
        server.thread().call([&] { ws.close(code, "ignored without a code"); });
        const ReceivedFrame f = client.expectClose(1005);
        // §5.5.1: a reason may only follow a code.
        CHECK(f.payload.empty());
        CHECK(client.sendEmptyClose());
        expectServerClosesTcp(client);
    }

    TEST_CASE("a peer that never answers the close is dropped after closeTimeout") {
        bool disconnected = false; // outlives the server, whose callbacks set it
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        const auto start = Clock::now();
        server.thread().call([&] {
            ws.onDisconnected([&] { disconnected = true; });
            ws.setCloseTimeout(300ms);
            ws.close(CloseCode::CloseCodeGoingAway, "going");
        });
        CHECK(client.expectClose(1001).isClose());
        // The client keeps the connection open and says nothing.
        const TcpCloseResult rest = client.expectTcpClosed(5s);
        const auto elapsed = since(start);
        INFO("TCP closed after ", elapsed.count(), " ms");
        CHECK(rest.frames.empty());
        CHECK(elapsed >= 250ms);
        CHECK(elapsed < 3s);
        CHECK(server.thread().waitUntil([&] { return disconnected; }));
        server.thread().call([&] {
            CHECK(ws.state() == SocketState::UnconnectedState);
            CHECK(ws.error() == wsgate::Error::CloseTimeout);
        });
    }

    TEST_CASE("nothing is sent after close()") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        server.thread().call([&] {
            ws.close(CloseCode::CloseCodeNormal, "done");
            // §5.5.1: no data frames after a close frame.
            CHECK(ws.sendTextMessage("too late") == 0);
            CHECK(ws.sendBinaryMessage("too late") == 0);
            ws.ping("too late");
        });
        CHECK(client.expectClose(1000).isClose());
        CHECK(client.quietFor(100ms));
        // Our message in flight before our close is still read; the answer ends it.
        CHECK(client.sendText("crossing"));
        CHECK(client.sendClose(1000));
        expectServerClosesTcp(client);
    }

    TEST_CASE("the peer's close code and reason are reported") {
        int disconnects = 0; // outlives the server, whose callbacks count here
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        server.thread().call([&] { ws.onDisconnected([&] { ++disconnects; }); });
        SUBCASE("with a code and reason") {
            CHECK(client.sendClose(4321, "client bye"));
            CHECK(client.expectClose(4321).isClose());
            expectServerClosesTcp(client);
            client.close(); // so that the server need not wait for our FIN
            CHECK(server.thread().waitUntil([&] { return disconnects > 0; }));
            server.thread().call([&] {
                CHECK(static_cast<int>(ws.closeCode()) == 4321);
                CHECK(ws.closeReason() == "client bye");
            });
        }
        SUBCASE("with no code") {
            CHECK(client.sendEmptyClose());
            CHECK(client.readFrame().isClose());
            expectServerClosesTcp(client);
            client.close(); // so that the server need not wait for our FIN
            CHECK(server.thread().waitUntil([&] { return disconnects > 0; }));
            server.thread().call(
                [&] { CHECK(ws.closeCode() == CloseCode::CloseCodeMissingStatusCode); });
        }
        SUBCASE("dropping TCP without a close frame") {
            client.close();
            CHECK(server.thread().waitUntil([&] { return disconnects > 0; }));
            server.thread().call(
                [&] { CHECK(ws.closeCode() == CloseCode::CloseCodeAbnormalDisconnection); });
        }
        SUBCASE("resetting TCP") {
            client.abort();
            CHECK(server.thread().waitUntil([&] { return disconnects > 0; }));
            server.thread().call(
                [&] { CHECK(ws.closeCode() == CloseCode::CloseCodeAbnormalDisconnection); });
        }
        server.thread().call([&] {
            CHECK(disconnects == 1);
            CHECK(ws.state() == SocketState::UnconnectedState);
        });
    }

    TEST_CASE("abort() drops TCP without a close frame") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        server.thread().call([&] { ws.abort(); });
        const TcpCloseResult rest = client.expectTcpClosed(serverCloseTimeout);
        CHECK(rest.frames.empty());
    }
}

TEST_SUITE("echo-server on SIGTERM and SIGINT") {
    TEST_CASE("SIGTERM closes the listener, sends 1001 to every client, and the exit follows "
              "their answers") {
        ProcessEcho server;
        REQUIRE(server.started());
        RawClient answering = connectTo(server.port());
        RawClient leaving = connectTo(server.port());
        CHECK(answering.sendText("before"));
        CHECK(answering.expectText("before"));
        REQUIRE(::kill(server.process().pid(), SIGTERM) == 0);
        const ReceivedFrame goingAway = answering.expectClose(1001);
        CHECK(goingAway.isClose());
        CHECK(goingAway.closeReason() == "server shutting down");
        // The listener closed before the close frames went out.
        RawClient late;
        CHECK_FALSE(late.connect(server.port(), "127.0.0.1", 2s));
        CHECK(leaving.expectClose(1001).isClose());
        CHECK(answering.sendClose(1001));
        expectServerClosesTcp(answering);
        // One client answers, the other just goes: neither waits for the
        // server's 5 s close timeout.
        const auto start = Clock::now();
        leaving.close();
        const int status = server.process().waitForExit(4s);
        INFO("exit after ", since(start).count(), " ms: ", describeStatus(status));
        CHECK(exitedWithZero(status));
    }

    TEST_CASE("a second signal drops the clients that have not answered, at once") {
        ProcessEcho server;
        REQUIRE(server.started());
        RawClient silent = connectTo(server.port());
        REQUIRE(::kill(server.process().pid(), SIGINT) == 0);
        CHECK(silent.expectClose(1001).isClose());
        const auto start = Clock::now();
        REQUIRE(::kill(server.process().pid(), SIGINT) == 0);
        CHECK(silent.expectTcpClosed(2s).closed);
        const int status = server.process().waitForExit(2s);
        INFO("exit after ", since(start).count(), " ms: ", describeStatus(status));
        CHECK(exitedWithZero(status));
        CHECK(since(start) < 2s); // under the close timeout of 5 s
    }

    TEST_CASE("SIGTERM with no client exits at once") {
        ProcessEcho server;
        REQUIRE(server.started());
        REQUIRE(::kill(server.process().pid(), SIGTERM) == 0);
        const int status = server.process().waitForExit(2s);
        INFO(describeStatus(status));
        CHECK(exitedWithZero(status));
    }
}
