// Frames over real sockets (RFC 6455 §5), grouped as Autobahn's categories
// 1-5, against the echo-server process and an in-process Server alike.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "support/EchoTargets.h"
#include "support/RawClient.h"

#include <chrono>
#include <doctest/doctest.h>
#include <string>
#include <thread>
#include <vector>

using namespace wsgate::test;
using namespace std::chrono_literals;

namespace {

/// A client that has finished its handshake with `port`.
RawClient connectTo(std::uint16_t port) {
    RawClient client;
    REQUIRE(client.open(port));
    return client;
}

/// A frame spec with the given opcode and payload, masked with a random key.
FrameSpec spec(std::uint8_t op, std::string payload, bool fin = true) {
    FrameSpec s;
    s.opcode = op;
    s.payload = std::move(payload);
    s.fin = fin;
    return s;
}

/// How long to wait for a failure; well under the 5 s close timeout, so a
/// server that waits for our close frame instead of closing TCP fails.
constexpr auto failTimeout = 3s;

} // namespace

TEST_SUITE("Autobahn 1 framing") {
    TEST_CASE_TEMPLATE("text and binary messages of boundary lengths are echoed", Target,
                       ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        for (std::size_t length : {0, 125, 126, 127, 128, 65535, 65536}) {
            CAPTURE(length);
            const std::string text(length, '*');
            CHECK(client.sendText(text));
            CHECK(client.expectText(text));
            const std::string binary(length, '\xFE');
            CHECK(client.sendBinary(binary));
            CHECK(client.expectBinary(binary));
        }
    }

    TEST_CASE_TEMPLATE("a message that arrives in chunks is echoed", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        SUBCASE("65536 bytes of text in chunks of 997") {
            const std::string text = randomUtf8(65536);
            CHECK(client.sendChunked(frame(opcode::text, text), 997, 0ms));
            CHECK(client.expectText(text));
        }
        SUBCASE("65536 bytes of binary in chunks of 997") {
            const std::string binary = randomBytes(65536);
            CHECK(client.sendChunked(frame(opcode::binary, binary), 997, 0ms));
            CHECK(client.expectBinary(binary));
        }
        SUBCASE("a 130-byte frame byte by byte") {
            const std::string binary = randomBytes(130);
            CHECK(client.sendByteByByte(frame(opcode::binary, binary), 1ms));
            CHECK(client.expectBinary(binary));
        }
    }

    TEST_CASE_TEMPLATE("a frame split at any point is echoed", Target, ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        // 16-bit length: the 8-byte header has a cut at every one of its bytes.
        const std::string payload = randomBytes(130);
        const std::string bytes = frame(opcode::binary, payload);
        for (std::size_t cut = 1; cut < bytes.size(); cut += (cut < 12 ? 1 : 29)) {
            CAPTURE(cut);
            CHECK(client.sendSplit(bytes, {cut}, 3ms));
            CHECK(client.expectBinary(payload));
        }
    }

    TEST_CASE_TEMPLATE("masking keys of every kind are removed", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        const std::vector<std::array<std::uint8_t, 4>> keys = {
            {0, 0, 0, 0}, {0xFF, 0xFF, 0xFF, 0xFF}, {1, 2, 3, 4}, {0x80, 0, 0, 0x7F}};
        for (const auto& key : keys) {
            // Lengths around word and vector widths catch a wrong unmasking tail.
            for (std::size_t length : {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 1000}) {
                CAPTURE(length);
                FrameSpec s = spec(opcode::binary, randomBytes(length));
                s.maskKey = key;
                CHECK(client.sendFrame(s));
                CHECK(client.expectBinary(s.payload));
            }
        }
    }
}

TEST_SUITE("Autobahn 2 pings and pongs") {
    TEST_CASE_TEMPLATE("pings of 0 to 125 bytes get pongs with the same payload", Target,
                       ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        for (std::size_t length = 0; length <= 125; ++length) {
            CAPTURE(length);
            const std::string payload = randomBytes(length);
            CHECK(client.sendPing(payload));
            CHECK(client.expectPong(payload));
        }
    }

    TEST_CASE_TEMPLATE("a ping of 126 bytes is a protocol error", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        // §5.5: control frames carry at most 125 bytes.
        CHECK(client.sendPing(std::string(126, 'x')));
        CHECK(client.expectFailure(1002, failTimeout));
    }

    TEST_CASE_TEMPLATE("unsolicited pongs are ignored", Target, ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        CHECK(client.sendPong());
        CHECK(client.sendPong("unsolicited pong payload"));
        CHECK(client.sendText("after the pongs"));
        // The echo is the next frame: no answer to a pong (§5.5.3).
        CHECK(client.expectText("after the pongs"));
        CHECK(client.sendPong("one more"));
        CHECK(client.sendPing("and a ping"));
        CHECK(client.expectPong("and a ping"));
        CHECK(client.quietFor(100ms));
    }

    TEST_CASE_TEMPLATE("ten pings in one write get ten pongs in order", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        std::string bytes;
        for (int i = 0; i < 10; ++i) {
            bytes += frame(opcode::ping, "payload-" + std::to_string(i));
        }
        CHECK(client.send(bytes));
        for (int i = 0; i < 10; ++i) {
            CAPTURE(i);
            CHECK(client.expectPong("payload-" + std::to_string(i)));
        }
        CHECK(client.quietFor(100ms));
    }

    TEST_CASE_TEMPLATE("a ping sent byte by byte gets its pong", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        const std::string payload = randomBytes(125);
        CHECK(client.sendByteByByte(frame(opcode::ping, payload), 0ms));
        CHECK(client.expectPong(payload));
    }
}

TEST_SUITE("Autobahn 3 reserved bits") {
    TEST_CASE_TEMPLATE("a text frame with reserved bits set is a protocol error", Target,
                       ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        // §5.2: without a negotiated extension every RSV bit MUST be 0.
        for (int bits = 1; bits <= 7; ++bits) {
            CAPTURE(bits);
            RawClient client = connectTo(server.port());
            FrameSpec s = spec(opcode::text, "Hello, world!");
            s.rsv1 = (bits & 4) != 0;
            s.rsv2 = (bits & 2) != 0;
            s.rsv3 = (bits & 1) != 0;
            CHECK(client.sendFrame(s));
            CHECK(client.expectFailure(1002, failTimeout));
        }
    }

    TEST_CASE_TEMPLATE("reserved bits after a valid message: the echo comes first", Target,
                       ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        FrameSpec bad = spec(opcode::text, "bad");
        bad.rsv2 = true;
        SUBCASE("in one write") {
            CHECK(client.send(frame(opcode::text, "valid") + buildFrame(bad) +
                              frame(opcode::ping, "never answered")));
        }
        SUBCASE("in separate writes") {
            CHECK(client.sendText("valid"));
            std::this_thread::sleep_for(20ms);
            CHECK(client.sendFrame(bad));
            CHECK(client.sendPing("never answered"));
        }
        CHECK(client.expectText("valid"));
        CHECK(client.expectFailure(1002, failTimeout));
    }

    TEST_CASE_TEMPLATE("reserved bits on other frames are a protocol error", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        for (std::uint8_t op : {opcode::binary, opcode::ping, opcode::pong, opcode::close}) {
            CAPTURE(int(op));
            RawClient client = connectTo(server.port());
            FrameSpec s = spec(op, op == opcode::close ? closePayload(1000) : "payload");
            s.rsv1 = op == opcode::binary || op == opcode::ping;
            s.rsv3 = !s.rsv1;
            CHECK(client.sendFrame(s));
            CHECK(client.expectFailure(1002, failTimeout));
        }
    }

    TEST_CASE_TEMPLATE("reserved bits on a continuation are a protocol error", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        CHECK(client.sendText("first half", false));
        FrameSpec s = spec(opcode::continuation, "second half");
        s.rsv1 = true;
        CHECK(client.sendFrame(s));
        CHECK(client.expectFailure(1002, failTimeout));
    }
}

TEST_SUITE("Autobahn 4 reserved opcodes") {
    TEST_CASE_TEMPLATE("reserved opcodes are a protocol error", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        for (std::uint8_t op : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
            CAPTURE(int(op));
            for (const char* payload : {"", "reserved opcode payload"}) {
                RawClient client = connectTo(server.port());
                CHECK(client.sendFrame(spec(op, payload)));
                CHECK(client.expectFailure(1002, failTimeout));
            }
        }
    }

    TEST_CASE_TEMPLATE("a reserved opcode after a valid message: the echo comes first", Target,
                       ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        for (std::uint8_t op : {5, 0xD}) {
            CAPTURE(int(op));
            RawClient client = connectTo(server.port());
            CHECK(client.send(frame(opcode::text, "valid") + buildFrame(spec(op, "bad")) +
                              frame(opcode::ping, "never answered")));
            CHECK(client.expectText("valid"));
            CHECK(client.expectFailure(1002, failTimeout));
        }
    }
}

TEST_SUITE("Autobahn 5 fragmentation") {
    TEST_CASE_TEMPLATE("a fragmented control frame is a protocol error", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        for (std::uint8_t op : {opcode::ping, opcode::pong, opcode::close}) {
            CAPTURE(int(op));
            RawClient client = connectTo(server.port());
            // §5.5: control frames MUST NOT be fragmented.
            const std::string first = op == opcode::close ? closePayload(1000) : "frag 1";
            CHECK(client.send(frame(op, first, false) + frame(opcode::continuation, "frag 2")));
            CHECK(client.expectFailure(1002, failTimeout));
        }
    }

    TEST_CASE_TEMPLATE("fragmented messages are echoed whole", Target, ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        SUBCASE("text in two fragments in one write") {
            CHECK(client.send(frame(opcode::text, "fragment1", false) +
                              frame(opcode::continuation, "fragment2")));
            CHECK(client.expectText("fragment1fragment2"));
        }
        SUBCASE("text in two fragments with a pause between") {
            CHECK(client.sendText("fragment1", false));
            std::this_thread::sleep_for(50ms);
            CHECK(client.quietFor(20ms));
            CHECK(client.sendContinuation("fragment2", true));
            CHECK(client.expectText("fragment1fragment2"));
        }
        SUBCASE("binary in three fragments") {
            const std::string a = randomBytes(1000);
            const std::string b = randomBytes(70000);
            const std::string c = randomBytes(3);
            CHECK(client.sendBinary(a, false));
            CHECK(client.sendContinuation(b, false));
            CHECK(client.sendContinuation(c, true));
            CHECK(client.expectBinary(a + b + c));
        }
        SUBCASE("empty fragments at both ends") {
            CHECK(client.send(frame(opcode::text, "", false) +
                              frame(opcode::continuation, "middle", false) +
                              frame(opcode::continuation, "")));
            CHECK(client.expectText("middle"));
        }
        SUBCASE("only empty fragments") {
            CHECK(client.send(frame(opcode::binary, "", false) +
                              frame(opcode::continuation, "", false) +
                              frame(opcode::continuation, "")));
            CHECK(client.expectBinary(""));
        }
        SUBCASE("a thousand one-byte fragments") {
            const std::string text = randomUtf8(1000);
            std::string bytes = frame(opcode::text, text.substr(0, 1), false);
            for (std::size_t i = 1; i < text.size(); ++i) {
                bytes += frame(opcode::continuation, text.substr(i, 1), i + 1 == text.size());
            }
            CHECK(client.send(bytes));
            CHECK(client.expectText(text));
        }
        SUBCASE("a thousand one-byte binary fragments, each in its own write") {
            const std::string binary = randomBytes(1000);
            CHECK(client.sendBinary(binary.substr(0, 1), false));
            for (std::size_t i = 1; i < binary.size(); ++i) {
                CHECK(client.sendContinuation(binary.substr(i, 1), i + 1 == binary.size()));
            }
            CHECK(client.expectBinary(binary));
        }
        // The connection is still good for the next message.
        CHECK(client.sendText("next"));
        CHECK(client.expectText("next"));
    }

    TEST_CASE_TEMPLATE("pings between fragments are answered at once", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        SUBCASE("in one write") {
            CHECK(client.send(frame(opcode::text, "fragment1", false) +
                              frame(opcode::ping, "ping payload") +
                              frame(opcode::continuation, "fragment2")));
            CHECK(client.expectPong("ping payload"));
            CHECK(client.expectText("fragment1fragment2"));
        }
        SUBCASE("each pong before the next fragment is sent") {
            // §5.4: control frames MAY be injected in the middle of a
            // fragmented message, and are handled then, not at its end.
            CHECK(client.sendText("f1", false));
            CHECK(client.sendContinuation("f2", false));
            CHECK(client.sendPing("pongme 1!"));
            CHECK(client.expectPong("pongme 1!"));
            CHECK(client.sendContinuation("f3", false));
            CHECK(client.sendPing("pongme 2!"));
            CHECK(client.expectPong("pongme 2!"));
            CHECK(client.sendPong("unsolicited in between"));
            CHECK(client.sendContinuation("f4", true));
            CHECK(client.expectText("f1f2f3f4"));
        }
    }

    TEST_CASE_TEMPLATE("fragmentation errors are protocol errors", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        SUBCASE("a final continuation with no message") {
            CHECK(client.sendContinuation("orphan", true));
        }
        SUBCASE("a non-final continuation with no message") {
            CHECK(client.send(frame(opcode::continuation, "orphan 1", false) +
                              frame(opcode::text, "then text")));
        }
        SUBCASE("a continuation after a complete message") {
            CHECK(client.sendText("complete"));
            CHECK(client.expectText("complete"));
            CHECK(client.sendContinuation("orphan", true));
        }
        SUBCASE("a new text frame inside a fragmented message") {
            CHECK(client.send(frame(opcode::text, "start", false) + frame(opcode::text, "again")));
        }
        SUBCASE("a binary frame inside a fragmented text message") {
            CHECK(client.send(frame(opcode::text, "start", false) +
                              frame(opcode::binary, "again", false)));
        }
        SUBCASE("a text frame inside a fragmented binary message, after a ping") {
            CHECK(client.send(frame(opcode::binary, "start", false) + frame(opcode::ping, "p")));
            CHECK(client.expectPong("p"));
            CHECK(client.sendText("again"));
        }
        CHECK(client.expectFailure(1002, failTimeout));
    }
}

TEST_SUITE("RFC 6455 5.1 masking and 5.2 lengths") {
    TEST_CASE_TEMPLATE("an unmasked client frame is a protocol error", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        for (std::uint8_t op : {opcode::text, opcode::binary, opcode::ping, opcode::close}) {
            CAPTURE(int(op));
            RawClient client = connectTo(server.port());
            // §5.1: the server MUST close the connection on an unmasked frame.
            FrameSpec s = spec(op, op == opcode::close ? closePayload(1000) : "unmasked");
            s.masked = false;
            CHECK(client.sendFrame(s));
            CHECK(client.expectFailure(1002, failTimeout));
        }
    }

    TEST_CASE_TEMPLATE("a length not in its shortest form is a protocol error", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        // §5.2: "the minimal number of bytes MUST be used to encode the length".
        SUBCASE("5 bytes in 16 bits") {
            FrameSpec s = spec(opcode::text, "hello");
            s.lengthEncoding = LengthEncoding::Bits16;
            CHECK(client.sendFrame(s));
        }
        SUBCASE("125 bytes in 16 bits") {
            FrameSpec s = spec(opcode::binary, std::string(125, 'b'));
            s.lengthEncoding = LengthEncoding::Bits16;
            CHECK(client.sendFrame(s));
        }
        SUBCASE("5 bytes in 64 bits") {
            FrameSpec s = spec(opcode::text, "hello");
            s.lengthEncoding = LengthEncoding::Bits64;
            CHECK(client.sendFrame(s));
        }
        SUBCASE("65535 bytes in 64 bits") {
            FrameSpec s = spec(opcode::binary, std::string(65535, 'b'));
            s.lengthEncoding = LengthEncoding::Bits64;
            CHECK(client.sendFrame(s));
        }
        SUBCASE("a ping's 5 bytes in 16 bits") {
            FrameSpec s = spec(opcode::ping, "hello");
            s.lengthEncoding = LengthEncoding::Bits16;
            CHECK(client.sendFrame(s));
        }
        CHECK(client.expectFailure(1002, failTimeout));
    }

    TEST_CASE_TEMPLATE("a 64-bit length with its top bit set is a protocol error", Target,
                       ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        // §5.2: "the most significant bit MUST be 0". No payload follows: the
        // header alone must be enough to fail.
        FrameSpec s = spec(opcode::binary, "");
        s.announcedLength = (1ULL << 63) | 5;
        CHECK(client.sendFrame(s));
        CHECK(client.expectFailure(1002, failTimeout));
    }
}
