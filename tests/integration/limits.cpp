// Large messages and size limits over real sockets (Autobahn 9, within
// reason), and outgoing fragmentation (RFC 6455 §5.4).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "support/EchoTargets.h"
#include "support/RawClient.h"

#include <chrono>
#include <doctest/doctest.h>
#include <string>
#include <vector>

using namespace wsgate::test;
using namespace std::chrono_literals;
using wsgate::WebSocket;

namespace {

RawClient connectTo(std::uint16_t port) {
    RawClient client;
    REQUIRE(client.open(port));
    return client;
}

constexpr auto failTimeout = 3s;
/// Large echoes under the sanitizers take a while; they must not hang either.
constexpr auto largeTimeout = 30s;

WebSocket& firstSocket(InProcessEcho& server) {
    REQUIRE(server.waitForSockets(1));
    return *server.call([](InProcessEcho::State& s) { return s.sockets[0].get(); });
}

/// Frames up to the end of one message, each checked to be a data frame.
std::vector<ReceivedFrame> readMessageFrames(RawClient& client) {
    std::vector<ReceivedFrame> frames;
    for (;;) {
        ReceivedFrame f = client.readFrame();
        INFO("got: ", f.describe());
        REQUIRE(f.isFrame());
        REQUIRE((f.opcode & 0x8) == 0);
        const bool fin = f.fin;
        frames.push_back(std::move(f));
        if (fin) {
            return frames;
        }
    }
}

} // namespace

TEST_SUITE("Autobahn 9 large messages") {
    TEST_CASE_TEMPLATE("large text and binary messages are echoed intact", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        client.setTimeout(largeTimeout);
        for (std::size_t size : {64 * 1024, 1024 * 1024, 4 * 1024 * 1024}) {
            CAPTURE(size);
            const std::string text = randomUtf8(size);
            CHECK(client.sendText(text));
            CHECK(client.expectText(text, largeTimeout));
            const std::string binary = randomBytes(size);
            CHECK(client.sendBinary(binary));
            CHECK(client.expectBinary(binary, largeTimeout));
        }
    }

    TEST_CASE_TEMPLATE("a large message in 64 KiB fragments is echoed intact", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        client.setTimeout(largeTimeout);
        const std::string binary = randomBytes(1024 * 1024);
        constexpr std::size_t piece = 64 * 1024;
        std::string wire;
        for (std::size_t at = 0; at < binary.size(); at += piece) {
            wire += frame(at == 0 ? opcode::binary : opcode::continuation, binary.substr(at, piece),
                          at + piece >= binary.size());
        }
        CHECK(client.sendChunked(wire, 4093, 0ms));
        CHECK(client.expectBinary(binary, largeTimeout));
    }
}

TEST_SUITE("RFC 6455 10.4 size limits") {
    TEST_CASE_TEMPLATE("a message over --max-message is 1009", Target, ProcessEcho, InProcessEcho) {
        EchoOptions options;
        options.maxMessage = 1000;
        Target server(options);
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        bool fails = true;

        SUBCASE("1000 bytes pass, in one frame and in fragments, again and again") {
            const std::string text(1000, 't');
            for (int i = 0; i < 3; ++i) {
                CHECK(client.sendText(text));
                CHECK(client.expectText(text));
                CHECK(client.send(frame(opcode::text, text.substr(0, 400), false) +
                                  frame(opcode::ping, "control frames do not count") +
                                  frame(opcode::continuation, text.substr(400))));
                CHECK(client.expectPong("control frames do not count"));
                CHECK(client.expectText(text));
            }
            CHECK(client.sendClose(1000));
            CHECK(client.expectClose(1000).isClose());
            fails = false;
        }
        SUBCASE("1001 bytes in one frame") {
            CHECK(client.sendBinary(std::string(1001, 'b')));
        }
        SUBCASE("1001 bytes as 600 + 401") {
            CHECK(client.sendText(std::string(600, 't'), false));
            CHECK(client.sendContinuation(std::string(401, 't'), true));
        }
        SUBCASE("1001 one-byte fragments") {
            std::string wire = frame(opcode::binary, "b", false);
            for (int i = 1; i < 1001; ++i) {
                wire += frame(opcode::continuation, "b", i == 1000);
            }
            CHECK(client.send(wire));
        }
        SUBCASE("a header announcing 1001 bytes, with no payload sent") {
            FrameSpec s;
            s.opcode = opcode::binary;
            s.announcedLength = 1001;
            CHECK(client.sendFrame(s));
        }
        SUBCASE("a second fragment whose header pushes the message over") {
            CHECK(client.sendText(std::string(900, 't'), false));
            FrameSpec s;
            s.opcode = opcode::continuation;
            s.announcedLength = 101;
            CHECK(client.sendFrame(s));
        }
        if (fails) {
            // §7.4.1: 1009, "a message that is too big for it to process".
            CHECK(client.expectFailure(1009, failTimeout));
        }
    }

    TEST_CASE_TEMPLATE("a frame announcing a huge length is 1009 at once", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        FrameSpec s;
        s.opcode = opcode::binary;
        SUBCASE("2^62 bytes") {
            s.announcedLength = 1ULL << 62;
        }
        SUBCASE("2^63 - 1 bytes") {
            s.announcedLength = (1ULL << 63) - 1;
        }
        SUBCASE("just over the default 16 MiB") {
            s.announcedLength = 16ULL * 1024 * 1024 + 1;
        }
        SUBCASE("2^62 bytes of text as the second fragment") {
            CHECK(client.sendText("start", false));
            s.opcode = opcode::continuation;
            s.announcedLength = 1ULL << 62;
        }
        // Only the header is sent: the server must decide from it alone,
        // and must not allocate what it announces.
        CHECK(client.sendFrame(s));
        CHECK(client.expectFailure(1009, failTimeout));
    }

    TEST_CASE("per-connection frame and message limits") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        SUBCASE("a frame limit lets a message of smaller frames through") {
            server.thread().call([&] { ws.setMaxAllowedIncomingFrameSize(100); });
            const std::string binary = randomBytes(300);
            CHECK(client.send(frame(opcode::binary, binary.substr(0, 100), false) +
                              frame(opcode::continuation, binary.substr(100, 100), false) +
                              frame(opcode::continuation, binary.substr(200))));
            CHECK(client.expectBinary(binary));
            CHECK(client.sendBinary(std::string(101, 'b')));
            CHECK(client.expectFailure(1009, failTimeout));
        }
        SUBCASE("a message limit set on the socket") {
            server.thread().call([&] {
                ws.setMaxAllowedIncomingMessageSize(10);
                CHECK(ws.maxAllowedIncomingMessageSize() == 10);
            });
            CHECK(client.sendText("0123456789"));
            CHECK(client.expectText("0123456789"));
            CHECK(client.sendText("0123456789A"));
            CHECK(client.expectFailure(1009, failTimeout));
        }
    }
}

TEST_SUITE("RFC 6455 5.4 outgoing fragmentation") {
    TEST_CASE("messages are cut into frames of outgoingFrameSize") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        CHECK(server.thread().call([&] { return ws.setOutgoingFrameSize(1000); }));

        struct Case {
            std::size_t size;
            std::size_t frames;
        };
        for (const Case c : {Case{5000, 5}, Case{4500, 5}, Case{1000, 1}, Case{1001, 2}}) {
            for (bool text : {true, false}) {
                CAPTURE(c.size);
                CAPTURE(text);
                const std::string message = text ? randomUtf8(c.size) : randomBytes(c.size);
                const std::size_t accepted = server.thread().call([&] {
                    return text ? ws.sendTextMessage(message) : ws.sendBinaryMessage(message);
                });
                CHECK(accepted == c.size);
                const std::vector<ReceivedFrame> frames = readMessageFrames(client);
                REQUIRE(frames.size() == c.frames);
                std::string joined;
                for (std::size_t i = 0; i < frames.size(); ++i) {
                    CAPTURE(i);
                    // §5.4: the first frame has the message's opcode, the
                    // rest are continuations; only the last has FIN.
                    CHECK(int(frames[i].opcode) == int(i == 0
                                                           ? (text ? opcode::text : opcode::binary)
                                                           : opcode::continuation));
                    CHECK(frames[i].fin == (i + 1 == frames.size()));
                    CHECK(frames[i].payload.size() ==
                          std::min<std::size_t>(1000, c.size - i * 1000));
                    joined += frames[i].payload;
                }
                CHECK_MESSAGE(joined == message, describeDifference(message, joined));
            }
        }
        // An empty message is still one frame.
        CHECK(server.thread().call([&] { return ws.sendTextMessage(""); }) == 0);
        const std::vector<ReceivedFrame> empty = readMessageFrames(client);
        REQUIRE(empty.size() == 1);
        CHECK(empty[0].payload.empty());
        CHECK(int(empty[0].opcode) == int(opcode::text));
    }

    TEST_CASE("setOutgoingFrameSize refuses 0 and sizes over the maximum") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        WebSocket& ws = firstSocket(server);
        server.thread().call([&] {
            const std::uint64_t before = ws.outgoingFrameSize();
            CHECK_FALSE(ws.setOutgoingFrameSize(0));
            CHECK(ws.outgoingFrameSize() == before);
            CHECK_FALSE(ws.setOutgoingFrameSize(WebSocket::maxOutgoingFrameSize() + 1));
            CHECK(ws.outgoingFrameSize() == before);
            CHECK(ws.setOutgoingFrameSize(WebSocket::maxOutgoingFrameSize()));
            CHECK(ws.outgoingFrameSize() == WebSocket::maxOutgoingFrameSize());
            CHECK(ws.setOutgoingFrameSize(1));
            CHECK(ws.outgoingFrameSize() == 1);
            ws.sendBinaryMessage("abc");
        });
        const std::vector<ReceivedFrame> frames = readMessageFrames(client);
        CHECK(frames.size() == 3);
    }
}
