// RFC 6455 §5-§8 on the server side: bytes in, events and bytes out. Every
// byte stream also runs split (checkStream): one byte at a time and at every
// split point, each piece ending at a guard page.
#include "proto/Protocol.h"

#include "unit/proto/AllocationCounter.h"
#include "unit/proto/ProtoTestSupport.h"

#include <cstdint>
#include <doctest/doctest.h>
#include <string>
#include <vector>

using namespace wsgate;
using namespace wsgate::proto;
using namespace wsgate::proto::test;

namespace {

Bytes text(std::string_view s, bool fin = true) {
    return clientFrame(Opcode::Text, s, fin);
}
Bytes binary(std::string_view s, bool fin = true) {
    return clientFrame(Opcode::Binary, s, fin);
}
Bytes continuation(std::string_view s, bool fin = true) {
    return clientFrame(Opcode::Continuation, s, fin);
}
Bytes ping(std::string_view s) {
    return clientFrame(Opcode::Ping, s);
}
Bytes pong(std::string_view s) {
    return clientFrame(Opcode::Pong, s);
}
Bytes close(std::string_view body = {}) {
    return clientFrame(Opcode::Close, body);
}

Bytes serverPong(std::string_view s) {
    return serverFrame(Opcode::Pong, s);
}
Bytes serverClose(std::string_view body = {}) {
    return serverFrame(Opcode::Close, body);
}

// Checks that `input` fails the connection with `error`, whole and split.
void checkFailure(const Bytes& input, Error error, const Setup& setup = {},
                  std::vector<std::string> before = {}, Bytes sentBefore = {}) {
    before.push_back(failEvent(error));
    const Outcome outcome =
        checkStream(input, setup, before, sentBefore + failureCloseFrame(error));
    CHECK(outcome.state == Protocol::State::Closed);
    CHECK(outcome.closeCode == static_cast<std::uint16_t>(closeCodeFor(error)));
    CHECK(outcome.closeReason == make_error_code(error).message());
}

Bytes repeat(std::string_view unit, std::size_t times) {
    Bytes out;
    for (std::size_t i = 0; i < times; ++i) {
        out.append(unit);
    }
    return out;
}

// A handler that records nothing and allocates nothing: it counts, and
// echoes every message back.
class EchoCounter final : public ProtocolHandler {
public:
    void onMessage(MessageType type, std::uint8_t* data, std::size_t size) override {
        ++messages;
        protocol->sendMessage(type, data, size);
    }
    void onFrame(MessageType, const std::uint8_t*, std::size_t, bool) override { ++frames; }
    void onPing(const std::uint8_t*, std::size_t) override {}
    void onPong(const std::uint8_t*, std::size_t) override {}
    void onClose(std::uint16_t, std::string_view) override {}
    void onFailure(Error) override { ++failures; }
    void sendFrame(const std::uint8_t*, std::size_t headerSize, const std::uint8_t*,
                   std::size_t payloadSize) override {
        bytesSent += headerSize + payloadSize;
        ++framesSent;
    }

    Protocol* protocol = nullptr;
    std::size_t messages = 0;
    std::size_t frames = 0;
    std::size_t failures = 0;
    std::size_t framesSent = 0;
    std::size_t bytesSent = 0;
};

} // namespace

TEST_SUITE("5.1 Overview") {
    TEST_CASE("a masked client frame is unmasked") {
        checkStream(text("Hello"), {textMessage("Hello")});
        const std::uint8_t zeroMask[4] = {0, 0, 0, 0};
        checkStream(rawClientFrame(0x81, "Hello", 0, zeroMask), {textMessage("Hello")});
        const std::uint8_t ones[4] = {0xff, 0xff, 0xff, 0xff};
        checkStream(rawClientFrame(0x82, "\x01\x02\x03", 0, ones), {binaryMessage("\x01\x02\x03")});
    }

    TEST_CASE("an unmasked client frame fails the connection with 1002") {
        checkFailure(rawClientFrame(0x81, "Hello", 0, nullptr), Error::UnmaskedClientFrame);
        checkFailure(ping("a") + rawClientFrame(0x89, "", 0, nullptr), Error::UnmaskedClientFrame,
                     {}, {pingEvent("a")}, serverPong("a"));
    }

    TEST_CASE("server frames are not masked") {
        const Outcome outcome = checkStream(ping("abc"), {pingEvent("abc")}, serverPong("abc"));
        REQUIRE(outcome.sent.size() == 5);
        CHECK((static_cast<std::uint8_t>(outcome.sent[1]) & 0x80) == 0);
    }
}

TEST_SUITE("5.2 Base Framing Protocol") {
    TEST_CASE("text and binary frames of every length encoding") {
        checkStream(text(""), {textMessage("")});
        checkStream(binary(""), {binaryMessage("")});
        checkStream(text("Hello"), {textMessage("Hello")});
        const Bytes b125 = repeat("x", 125);
        const Bytes b126 = repeat("y", 126);
        const Bytes b65535 = repeat("0123456789abcde", 4369);
        const Bytes b65536 = repeat("z", 65536);
        checkStream(binary(b125), {binaryMessage(b125)});
        checkStream(binary(b126), {binaryMessage(b126)});
        checkStream(binary(b65535), {binaryMessage(b65535)});
        checkStream(text(b65536), {textMessage(b65536)});
    }

    TEST_CASE("every binary byte value passes unchanged") {
        Bytes all;
        for (int i = 0; i < 256; ++i) {
            all.push_back(static_cast<char>(i));
        }
        checkStream(binary(all), {binaryMessage(all)});
    }

    TEST_CASE("many frames in one buffer") {
        checkStream(text("a") + binary("bc") + text("") + text("def"),
                    {textMessage("a"), binaryMessage("bc"), textMessage(""), textMessage("def")},
                    {});
    }

    TEST_CASE("RSV1, RSV2 and RSV3 without an extension fail with 1002") {
        checkFailure(clientFrame(Opcode::Text, "a", true, 0x40), Error::ReservedBitsSet);
        checkFailure(clientFrame(Opcode::Text, "a", true, 0x20), Error::ReservedBitsSet);
        checkFailure(clientFrame(Opcode::Binary, "a", true, 0x10), Error::ReservedBitsSet);
        checkFailure(clientFrame(Opcode::Ping, "", true, 0x70), Error::ReservedBitsSet);
        checkFailure(text("ok") + clientFrame(Opcode::Text, "a", true, 0x20),
                     Error::ReservedBitsSet, {}, {textMessage("ok")});
    }

    TEST_CASE("RSV1 with an extension: first data frame only") {
        Setup setup;
        setup.rsv1Allowed = true;
        checkStream(clientFrame(Opcode::Binary, "\x01\x02", true, 0x40), setup,
                    {binaryMessage("\x01\x02")}, {});
        // RSV2 and RSV3 stay reserved.
        checkFailure(clientFrame(Opcode::Binary, "a", true, 0x60), Error::ReservedBitsSet, setup);
        // Not on a continuation frame (RFC 7692 §6.1) ...
        checkFailure(clientFrame(Opcode::Binary, "a", false, 0x40) +
                         clientFrame(Opcode::Continuation, "b", true, 0x40),
                     Error::ReservedBitsSet, setup);
        // ... nor on a control frame.
        checkFailure(clientFrame(Opcode::Ping, "", true, 0x40), Error::ReservedBitsSet, setup);
        checkFailure(clientFrame(Opcode::Close, "", true, 0x40), Error::ReservedBitsSet, setup);
    }

    TEST_CASE("reserved opcodes fail with 1002") {
        for (int opcode : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
            CAPTURE(opcode);
            checkFailure(rawClientFrame(static_cast<std::uint8_t>(0x80 | opcode), "x"),
                         Error::ReservedOpcode);
        }
        // Between the fragments of a message too.
        checkFailure(text("a", false) + rawClientFrame(0x83, ""), Error::ReservedOpcode);
    }

    TEST_CASE("a length not in its shortest form fails with 1002") {
        checkFailure(rawClientFrame(0x82, "abc", 16), Error::NonCanonicalLength);
        checkFailure(rawClientFrame(0x82, repeat("a", 125), 16), Error::NonCanonicalLength);
        checkFailure(rawClientFrame(0x82, "abc", 64), Error::NonCanonicalLength);
        checkFailure(rawClientFrame(0x82, repeat("b", 65535), 64), Error::NonCanonicalLength);
        checkStream(rawClientFrame(0x82, repeat("c", 126), 16), {binaryMessage(repeat("c", 126))},
                    {});
    }

    TEST_CASE("a 64-bit length with its top bit set fails with 1002") {
        Bytes frame = rawClientFrame(0x82, "", 64);
        frame[2] = static_cast<char>(0x80);
        checkFailure(frame, Error::LengthTopBitSet);
    }

    TEST_CASE("a partial header is kept across reads") {
        const Bytes input = text("one") + binary(repeat("q", 300)) + text(repeat("r", 70000));
        checkStream(
            input,
            {textMessage("one"), binaryMessage(repeat("q", 300)), textMessage(repeat("r", 70000))},
            {});
    }
}

TEST_SUITE("5.4 Fragmentation") {
    TEST_CASE("a fragmented text message is delivered once, whole") {
        checkStream(text("Hel", false) + continuation("lo, ", false) + continuation("world"),
                    {textMessage("Hello, world")});
        checkStream(binary("\x01", false) + continuation("\x02"), {binaryMessage("\x01\x02")});
    }

    TEST_CASE("empty fragments") {
        checkStream(text("", false) + continuation("abc"), {textMessage("abc")});
        checkStream(text("abc", false) + continuation(""), {textMessage("abc")});
        checkStream(text("", false) + continuation("", false) + continuation(""),
                    {textMessage("")});
    }

    TEST_CASE("control frames between fragments (Autobahn 5.6-5.20)") {
        checkStream(
            text("frag1", false) + ping("ping1") + continuation("frag2", false) + pong("pong1") +
                ping("") + continuation("frag3"),
            {pingEvent("ping1"), pongEvent("pong1"), pingEvent(""), textMessage("frag1frag2frag3")},
            serverPong("ping1") + serverPong(""));
        checkStream(text("frag1", false) + ping("p") + continuation("frag2") + text("next"),
                    {pingEvent("p"), textMessage("frag1frag2"), textMessage("next")},
                    serverPong("p"));
    }

    TEST_CASE("a close frame between fragments ends the connection") {
        checkStream(text("frag1", false) + close(closeBody(1000)) + continuation("frag2"),
                    {closeEvent(1000)}, serverClose(closeBody(1000)));
    }

    TEST_CASE("a continuation frame with nothing to continue fails with 1002") {
        checkFailure(continuation("abc"), Error::UnexpectedContinuation);
        checkFailure(continuation("abc", false), Error::UnexpectedContinuation);
        checkFailure(text("a") + continuation("b"), Error::UnexpectedContinuation, {},
                     {textMessage("a")});
    }

    TEST_CASE("a new data frame inside a fragmented message fails with 1002") {
        checkFailure(text("a", false) + text("b"), Error::ExpectedContinuation);
        checkFailure(binary("a", false) + binary("b", false), Error::ExpectedContinuation);
        checkFailure(text("a", false) + ping("x") + binary("b"), Error::ExpectedContinuation, {},
                     {pingEvent("x")}, serverPong("x"));
    }

    TEST_CASE("frames are delivered when asked, then the message") {
        Setup setup;
        setup.deliverFrames = true;
        checkStream(text("Hel", false) + ping("p") + continuation("lo, ", false) +
                        continuation("world"),
                    setup,
                    {frameEvent(MessageType::Text, "Hel", false), pingEvent("p"),
                     frameEvent(MessageType::Text, "lo, ", false),
                     frameEvent(MessageType::Text, "world", true), textMessage("Hello, world")},
                    serverPong("p"));
        checkStream(binary("single"), setup,
                    {frameEvent(MessageType::Binary, "single", true), binaryMessage("single")}, {});
        const Bytes big = repeat("0123456789", 700);
        checkStream(binary(big, false) + continuation(big), setup,
                    {frameEvent(MessageType::Binary, big, false),
                     frameEvent(MessageType::Binary, big, true), binaryMessage(big + big)},
                    {});
    }

    TEST_CASE("a text frame fails on invalid UTF-8 before it is delivered as a frame") {
        Setup setup;
        setup.deliverFrames = true;
        checkFailure(text("ok", false) + continuation("\xff", false), Error::InvalidUtf8, setup,
                     {frameEvent(MessageType::Text, "ok", false)});
        // A frame that ends inside a character is fine if the message goes on.
        checkStream(text("\xc3", false) + continuation("\xa9"), setup,
                    {frameEvent(MessageType::Text, "\xc3", false),
                     frameEvent(MessageType::Text, "\xa9", true), textMessage("\xc3\xa9")},
                    {});
    }
}

TEST_SUITE("5.5 Control Frames") {
    TEST_CASE("a ping is answered with a pong carrying its payload") {
        checkStream(ping("Hello"), {pingEvent("Hello")}, serverPong("Hello"));
        checkStream(ping(""), {pingEvent("")}, serverPong(""));
        const Bytes max = repeat("\xfe", 125);
        checkStream(ping(max), {pingEvent(max)}, serverPong(max));
        checkStream(ping("a") + ping("b"), {pingEvent("a"), pingEvent("b")},
                    serverPong("a") + serverPong("b"));
    }

    TEST_CASE("a pong is reported and not answered") {
        checkStream(pong("x"), {pongEvent("x")}, {});
        checkStream(pong(""), {pongEvent("")}, {});
    }

    TEST_CASE("a control frame over 125 bytes fails with 1002") {
        checkFailure(ping(repeat("a", 126)), Error::ControlFrameTooLong);
        checkFailure(pong(repeat("a", 126)), Error::ControlFrameTooLong);
        checkFailure(close(closeBody(1000, repeat("a", 124))), Error::ControlFrameTooLong);
        // Even when the length is announced in 64 bits.
        checkFailure(rawClientFrame(0x89, repeat("a", 10), 64), Error::ControlFrameTooLong);
    }

    TEST_CASE("a fragmented control frame fails with 1002") {
        checkFailure(clientFrame(Opcode::Ping, "a", false), Error::FragmentedControlFrame);
        checkFailure(clientFrame(Opcode::Pong, "a", false), Error::FragmentedControlFrame);
        checkFailure(clientFrame(Opcode::Close, "", false), Error::FragmentedControlFrame);
    }

    TEST_CASE("sendPing sends a ping, cut to 125 bytes") {
        RecordingHandler handler;
        Protocol protocol(handler, {});
        CHECK(protocol.sendPing(u8("abc"), 3));
        const Bytes long200 = repeat("p", 200);
        CHECK(protocol.sendPing(u8(long200), long200.size()));
        CHECK(quote(handler.sent) == quote(serverFrame(Opcode::Ping, "abc") +
                                           serverFrame(Opcode::Ping, repeat("p", 125))));
        CHECK(protocol.sendClose(1000, ""));
        CHECK_FALSE(protocol.sendPing(u8("abc"), 3));
    }

    TEST_CASE("after we sent a close frame, a ping is reported but not answered") {
        RecordingHandler handler;
        Protocol protocol(handler, {});
        CHECK(protocol.sendClose(1001, ""));
        handler.sent.clear();
        Bytes input = ping("p") + pong("q");
        protocol.receive(reinterpret_cast<std::uint8_t*>(input.data()), input.size());
        CHECK(handler.events == std::vector<std::string>{pingEvent("p"), pongEvent("q")});
        CHECK(handler.sent.empty());
        CHECK(protocol.state() == Protocol::State::Closing);
    }
}

TEST_SUITE("5.5.1 Close") {
    TEST_CASE("a close frame without a body is answered with an empty one; code 1005") {
        const Outcome outcome = checkStream(close(), {closeEvent(1005)}, serverClose());
        CHECK(outcome.state == Protocol::State::Closed);
        CHECK(outcome.closeCode == 1005);
        CHECK(outcome.closeReason.empty());
    }

    TEST_CASE("a close frame is echoed with its code and reason") {
        const Outcome outcome =
            checkStream(close(closeBody(1000, "bye")), {closeEvent(1000, "bye")},
                        serverClose(closeBody(1000, "bye")));
        CHECK(outcome.closeCode == 1000);
        CHECK(outcome.closeReason == "bye");
        const Bytes reason = repeat("\xc3\xa9", 61) + "x";
        checkStream(close(closeBody(4000, reason)), {closeEvent(4000, reason)},
                    serverClose(closeBody(4000, reason)));
    }

    TEST_CASE("a 1-byte close payload fails with 1002") {
        checkFailure(close("\x03"), Error::BadClosePayload);
    }

    TEST_CASE("a close reason that is not UTF-8 fails with 1007") {
        checkFailure(close(closeBody(1000, "\xff")), Error::InvalidCloseReason);
        checkFailure(close(closeBody(1000, "ok\xed\xa0\x80")), Error::InvalidCloseReason);
        checkFailure(close(closeBody(1000, "cut\xc3")), Error::InvalidCloseReason);
    }

    TEST_CASE("nothing is read after the close frame") {
        checkStream(close(closeBody(1000)) + text("late") + ping("late") + Bytes("\xff\xff"),
                    {closeEvent(1000)}, serverClose(closeBody(1000)));
    }

    TEST_CASE("our close frame, then the peer's: nothing more is sent") {
        RecordingHandler handler;
        Protocol protocol(handler, {});
        CHECK(protocol.sendClose(1000, "done"));
        CHECK(protocol.state() == Protocol::State::Closing);
        CHECK(protocol.closeExpected());
        CHECK_FALSE(protocol.sendClose(1000, "again"));
        CHECK_FALSE(protocol.sendMessage(MessageType::Text, u8("x"), 1));
        CHECK(quote(handler.sent) == quote(serverClose(closeBody(1000, "done"))));
        handler.sent.clear();
        // Data still arrives until the peer's close frame.
        Bytes input = text("still") + close(closeBody(1000)) + text("never");
        protocol.receive(reinterpret_cast<std::uint8_t*>(input.data()), input.size());
        CHECK(handler.events == std::vector<std::string>{textMessage("still"), closeEvent(1000)});
        CHECK(handler.sent.empty());
        CHECK(protocol.state() == Protocol::State::Closed);
        CHECK_FALSE(protocol.closeExpected());
    }

    TEST_CASE("sendClose with a code that may not be sent sends an empty close frame") {
        for (std::uint16_t code : {0, 999, 1004, 1005, 1006, 1015, 2999, 5000}) {
            RecordingHandler handler;
            Protocol protocol(handler, {});
            CHECK(protocol.sendClose(code, "reason"));
            CHECK(quote(handler.sent) == quote(serverClose()));
        }
    }

    TEST_CASE("sendClose cuts the reason at a character boundary to fit 125 bytes") {
        const Bytes reason = "a" + repeat("\xe2\x82\xac", 50); // 151 bytes
        RecordingHandler handler;
        Protocol protocol(handler, {});
        CHECK(protocol.sendClose(1001, reason));
        // 123 bytes would end inside a euro sign: 1 + 3 * 40 = 121 are sent.
        CHECK(quote(handler.sent) ==
              quote(serverClose(closeBody(1001, "a" + repeat("\xe2\x82\xac", 40)))));
        RecordingHandler exact;
        Protocol second(exact, {});
        CHECK(second.sendClose(3000, repeat("b", 123)));
        CHECK(quote(exact.sent) == quote(serverClose(closeBody(3000, repeat("b", 123)))));
    }
}

TEST_SUITE("5.6 Data Frames") {
    TEST_CASE("text must be UTF-8, binary may be anything") {
        checkStream(text("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"),
                    {textMessage("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")});
        checkStream(binary("\xff\xfe\xc0\x80"), {binaryMessage("\xff\xfe\xc0\x80")});
        checkFailure(text("\xff\xfe"), Error::InvalidUtf8);
    }

    TEST_CASE("a message in one frame and one read is a view into the read buffer") {
        Setup setup;
        const std::uint8_t* seen = nullptr;
        setup.onMessage = [&seen](Protocol&, MessageType, std::uint8_t* data, std::size_t) {
            seen = data;
            data[0] = 'J'; // the handler may modify it in place
        };
        RecordingHandler handler(setup);
        Protocol protocol(handler, {});
        handler.attach(protocol);
        Bytes input = text("Hello");
        auto* buffer = reinterpret_cast<std::uint8_t*>(input.data());
        protocol.receive(buffer, input.size());
        CHECK(seen == buffer + 6);
        CHECK(input.substr(6) == "Jello");
    }
}

TEST_SUITE("7.1.7 Fail the WebSocket Connection") {
    TEST_CASE("a failure sends a close frame with the code and a reason, then discards input") {
        const Outcome outcome = checkStream(rawClientFrame(0x83, "") + text("ignored") + close(),
                                            {failEvent(Error::ReservedOpcode)},
                                            failureCloseFrame(Error::ReservedOpcode));
        CHECK(outcome.state == Protocol::State::Closed);
        CHECK(outcome.closeCode == 1002);
        CHECK(outcome.closeReason == "reserved opcode");
    }

    TEST_CASE("no close frame is sent when ours has already gone out") {
        RecordingHandler handler;
        Protocol protocol(handler, {});
        CHECK(protocol.sendClose(1000, ""));
        handler.sent.clear();
        Bytes input = rawClientFrame(0x83, "") + text("ignored");
        protocol.receive(reinterpret_cast<std::uint8_t*>(input.data()), input.size());
        CHECK(handler.events == std::vector<std::string>{failEvent(Error::ReservedOpcode)});
        CHECK(handler.sent.empty());
        CHECK(protocol.state() == Protocol::State::Closed);
        CHECK(protocol.closeCode() == 1002);
        // Everything after is discarded.
        Bytes more = ping("x");
        protocol.receive(reinterpret_cast<std::uint8_t*>(more.data()), more.size());
        CHECK(handler.events.size() == 1);
        CHECK(handler.sent.empty());
        CHECK_FALSE(protocol.sendMessage(MessageType::Binary, u8(""), 0));
        CHECK_FALSE(protocol.sendPing(u8(""), 0));
        CHECK_FALSE(protocol.sendClose(1000, ""));
    }

    TEST_CASE("a peer's invalid close frame after ours fails without a second close frame") {
        RecordingHandler handler;
        Protocol protocol(handler, {});
        CHECK(protocol.sendClose(1000, ""));
        handler.sent.clear();
        Bytes input = close(closeBody(1005));
        protocol.receive(reinterpret_cast<std::uint8_t*>(input.data()), input.size());
        CHECK(handler.events == std::vector<std::string>{failEvent(Error::InvalidCloseCode)});
        CHECK(handler.sent.empty());
    }
}

TEST_SUITE("7.4 Status Codes") {
    TEST_CASE("close codes that may be received") {
        for (std::uint16_t code :
             {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999}) {
            CAPTURE(code);
            checkStream(close(closeBody(code, "r")), {closeEvent(code, "r")},
                        serverClose(closeBody(code, "r")));
        }
    }

    TEST_CASE("close codes that may not be received fail with 1002") {
        for (std::uint16_t code : {0, 1, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100,
                                   2000, 2999, 5000, 65535}) {
            CAPTURE(code);
            checkFailure(close(closeBody(code)), Error::InvalidCloseCode);
        }
    }
}

TEST_SUITE("8.1 Handling Errors in UTF-8") {
    const std::vector<Bytes> invalid = {
        "\x80",
        "\xbf",
        "\xc0\xaf",
        "\xc1\xbf",
        "\xe0\x80\xaf",
        "\xe0\x9f\xbf",
        "\xf0\x80\x80\xaf",
        "\xf0\x8f\xbf\xbf",
        "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80",
        "\xf8\x88\x80\x80\x80",
        "\xfc\x84\x80\x80\x80\x80",
        "\xfe",
        "\xff",
        "\xed\xa0\x80",
        "\xed\xbf\xbf",
        "\xed\xa0\x80\xed\xb0\x80",
        "\xc2\x20",
        "\xe1\x80\x20",
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64",
    };
    const std::vector<Bytes> valid = {
        "",
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
        "\x00\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
        "\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbd\xef\xbf\xbe",
        "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
    };

    TEST_CASE("invalid UTF-8 in a text message fails with 1007") {
        for (const Bytes& bytes : invalid) {
            CAPTURE(quote(bytes));
            checkFailure(text(bytes), Error::InvalidUtf8);
        }
        // A message that ends inside a character.
        checkFailure(text("ab\xe2\x82"), Error::InvalidUtf8);
        checkFailure(text("ab\xe2", false) + continuation("\x82"), Error::InvalidUtf8);
    }

    TEST_CASE("sequences split at every byte across fragments") {
        for (const Bytes& bytes : valid) {
            for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
                CAPTURE(quote(bytes));
                CAPTURE(cut);
                checkStream(text(bytes.substr(0, cut), false) + continuation(bytes.substr(cut)),
                            {textMessage(bytes)});
                // And in three fragments, with a ping in between.
                const std::size_t second = (cut + bytes.size()) / 2;
                checkStream(text(bytes.substr(0, cut), false) + ping("") +
                                continuation(bytes.substr(cut, second - cut), false) +
                                continuation(bytes.substr(second)),
                            {pingEvent(""), textMessage(bytes)}, serverPong(""));
            }
        }
        for (const Bytes& bytes : invalid) {
            for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
                CAPTURE(quote(bytes));
                CAPTURE(cut);
                checkFailure(text(bytes.substr(0, cut), false) + continuation(bytes.substr(cut)),
                             Error::InvalidUtf8);
            }
        }
    }

    TEST_CASE("fail fast: an invalid first fragment fails before the rest arrives") {
        // Autobahn 6.4.1-6.4.2: the message never finishes.
        checkFailure(text("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", false),
                     Error::InvalidUtf8);
        // Autobahn 6.4.3-6.4.4: one frame, only its first part has arrived.
        const Bytes frame =
            text("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74");
        const Bytes firstPart = frame.substr(0, 6 + 13);
        checkFailure(firstPart, Error::InvalidUtf8);
        // Fed the header and the payload up to the bad byte, it has not failed yet.
        const Outcome before = feed(frame.substr(0, 6 + 12), {6});
        CHECK(before.events.empty());
        CHECK(before.state == Protocol::State::Open);
    }

    TEST_CASE("a valid text message split across reads at every point") {
        for (const Bytes& bytes : valid) {
            checkStream(text(bytes), {textMessage(bytes)});
        }
    }
}

TEST_SUITE("10.4 Limits") {
    TEST_CASE("a frame over maxFrameSize fails with 1009 at its header") {
        Setup setup;
        setup.limits.maxFrameSize = 10;
        checkStream(binary(repeat("a", 10)), setup, {binaryMessage(repeat("a", 10))}, {});
        checkFailure(binary(repeat("a", 11)), Error::FrameTooLarge, setup);
        // The header alone is enough to fail.
        checkFailure(clientHeader(Opcode::Binary, 11), Error::FrameTooLarge, setup);
        // Control frames are bounded by §5.5 only.
        checkStream(ping(repeat("p", 20)), setup, {pingEvent(repeat("p", 20))},
                    serverPong(repeat("p", 20)));
    }

    TEST_CASE("a message over maxMessageSize fails with 1009 at the header that passes it") {
        Setup setup;
        setup.limits.maxMessageSize = 10;
        checkStream(text("12345", false) + continuation("67890"), setup,
                    {textMessage("1234567890")}, {});
        checkFailure(text("12345", false) + continuation("678901"), Error::MessageTooLarge, setup);
        checkFailure(text("12345", false) + clientHeader(Opcode::Continuation, 6),
                     Error::MessageTooLarge, setup);
        checkFailure(clientHeader(Opcode::Text, 11), Error::MessageTooLarge, setup);
    }

    TEST_CASE("announcing 2^62 bytes allocates nothing for them") {
        const Bytes header = clientHeader(Opcode::Binary, 1ULL << 62);
        Bytes input = header;
        {
            RecordingHandler handler;
            Protocol protocol(handler, {});
            wsgate::test::AllocationScope scope;
            protocol.receive(reinterpret_cast<std::uint8_t*>(input.data()), input.size());
            const wsgate::test::AllocationStats stats = scope.stats();
            CHECK(stats.largest < 1024);
            CHECK(protocol.state() == Protocol::State::Closed);
            CHECK(protocol.closeCode() == 1009);
        }
        // Without limits, the buffer grows only with the bytes that arrive.
        Setup setup;
        setup.limits.maxFrameSize = UINT64_MAX;
        setup.limits.maxMessageSize = UINT64_MAX;
        RecordingHandler handler(setup);
        Protocol protocol(handler, setup.limits);
        wsgate::test::AllocationScope scope;
        input = header + repeat("x", 3000);
        protocol.receive(reinterpret_cast<std::uint8_t*>(input.data()), input.size());
        const wsgate::test::AllocationStats stats = scope.stats();
        CHECK(stats.largest <= 8192);
        CHECK(stats.bytes <= 16384);
        CHECK(protocol.state() == Protocol::State::Open);
        CHECK(handler.events.empty());
    }
}

TEST_SUITE("Re-entrancy") {
    TEST_CASE("closing from inside onMessage") {
        Setup setup;
        setup.onMessage = [](Protocol& protocol, MessageType, std::uint8_t* data, std::size_t) {
            if (data[0] == 'a') {
                CHECK(protocol.sendClose(1000, "bye"));
            }
        };
        const Outcome outcome = checkStream(
            text("a") + text("b") + ping("p") + close(closeBody(1000)) + text("c"), setup,
            {textMessage("a"), textMessage("b"), pingEvent("p"), closeEvent(1000)},
            serverClose(closeBody(1000, "bye")));
        CHECK(outcome.state == Protocol::State::Closed);
    }

    TEST_CASE("echoing from inside onMessage and onPing") {
        Setup setup;
        setup.echo = true;
        setup.onPing = [](Protocol& protocol, const std::uint8_t* data, std::size_t size) {
            protocol.sendPing(data, size);
        };
        checkStream(
            text("one") + binary("two", false) + ping("p") + continuation("!") + text(""), setup,
            {textMessage("one"), pingEvent("p"), binaryMessage("two!"), textMessage("")},
            serverFrame(Opcode::Text, "one") + serverPong("p") + serverFrame(Opcode::Ping, "p") +
                serverFrame(Opcode::Binary, "two!") + serverFrame(Opcode::Text, ""));
    }

    TEST_CASE("closing from inside onFrame stops nothing but sending") {
        Setup setup;
        setup.deliverFrames = true;
        setup.onMessage = [](Protocol& protocol, MessageType, std::uint8_t*, std::size_t) {
            protocol.sendClose(4000, "");
        };
        checkStream(text("x", false) + continuation("y") + text("z"), setup,
                    {frameEvent(MessageType::Text, "x", false),
                     frameEvent(MessageType::Text, "y", true), textMessage("xy"),
                     frameEvent(MessageType::Text, "z", true), textMessage("z")},
                    serverClose(closeBody(4000)));
    }
    TEST_CASE("a close frame fed from inside a callback stops the outer receive") {
        // The glue might feed queued input from a callback; whatever closes
        // the connection there ends the outer receive() too.
        auto feedClose = [](Protocol& protocol) {
            Bytes closeFrame = close(closeBody(1000));
            protocol.receive(reinterpret_cast<std::uint8_t*>(closeFrame.data()), closeFrame.size());
        };
        const std::vector<std::string> closed = {closeEvent(1000)};
        const Bytes echo = serverClose(closeBody(1000));

        Setup onMessage;
        onMessage.onMessage = [&](Protocol& protocol, MessageType, std::uint8_t*, std::size_t) {
            feedClose(protocol);
        };
        checkStream(text("one") + text("two"), onMessage, {textMessage("one"), closeEvent(1000)},
                    echo);
        checkStream(text("o", false) + continuation("ne") + text("two"), onMessage,
                    {textMessage("one"), closeEvent(1000)}, echo);

        Setup onFrame;
        onFrame.deliverFrames = true;
        onFrame.onFrame = [&](Protocol& protocol, const std::uint8_t*, std::size_t) {
            feedClose(protocol);
        };
        checkStream(text("one") + text("two"), onFrame,
                    {frameEvent(MessageType::Text, "one", true), closeEvent(1000)}, echo);
        checkStream(text("o", false) + continuation("ne"), onFrame,
                    {frameEvent(MessageType::Text, "o", false), closeEvent(1000)}, echo);
        checkStream(binary(repeat("b", 300)) + text("two"), onFrame,
                    {frameEvent(MessageType::Binary, repeat("b", 300), true), closeEvent(1000)},
                    echo);
    }
}

TEST_SUITE("Sending") {
    TEST_CASE("sendMessage sends one frame, or fragments") {
        RecordingHandler handler;
        Protocol protocol(handler, {});
        CHECK(protocol.sendMessage(MessageType::Text, u8("Hello"), 5));
        CHECK(protocol.sendMessage(MessageType::Binary, u8(""), 0));
        CHECK(protocol.sendMessage(MessageType::Binary, u8(""), 0, 4));
        CHECK(protocol.sendMessage(MessageType::Text, u8("Hello"), 5, 2));
        CHECK(protocol.sendMessage(MessageType::Binary, u8("abcd"), 4, 2));
        CHECK(protocol.sendMessage(MessageType::Binary, u8("abcd"), 4, 4));
        CHECK(protocol.sendMessage(MessageType::Binary, u8("abcd"), 4, 100));
        const Bytes big = repeat("b", 70000);
        CHECK(protocol.sendMessage(MessageType::Binary, u8(big), big.size()));
        CHECK(quote(handler.sent) ==
              quote(serverFrame(Opcode::Text, "Hello") + serverFrame(Opcode::Binary, "") +
                    serverFrame(Opcode::Binary, "") + serverFrame(Opcode::Text, "He", false) +
                    serverFrame(Opcode::Continuation, "ll", false) +
                    serverFrame(Opcode::Continuation, "o") +
                    serverFrame(Opcode::Binary, "ab", false) +
                    serverFrame(Opcode::Continuation, "cd") + serverFrame(Opcode::Binary, "abcd") +
                    serverFrame(Opcode::Binary, "abcd") + serverFrame(Opcode::Binary, big)));
    }

    TEST_CASE("what we send, a client-side parse reads back") {
        // Our own frames, masked as a client would, come back as the message.
        RecordingHandler handler;
        Protocol protocol(handler, {});
        CHECK(protocol.sendMessage(MessageType::Text, u8("round trip"), 10, 3));
        Bytes wire;
        std::size_t at = 0;
        while (at < handler.sent.size()) {
            const auto b0 = static_cast<std::uint8_t>(handler.sent[at]);
            const std::size_t length = static_cast<std::uint8_t>(handler.sent[at + 1]);
            wire += rawClientFrame(b0, std::string_view(handler.sent).substr(at + 2, length));
            at += 2 + length;
        }
        checkStream(wire, {textMessage("round trip")});
    }
}

TEST_SUITE("The hot path") {
    TEST_CASE("the protocol object is small") {
        MESSAGE("sizeof(Protocol) = ", sizeof(Protocol));
        CHECK(sizeof(Protocol) <= 128);
    }

    TEST_CASE("1000 small messages in one buffer, echoed, allocate nothing") {
        Bytes input;
        for (int i = 0; i < 1000; ++i) {
            input += (i % 2 == 0) ? text("hello " + std::to_string(i))
                                  : binary("\x01\x02\x03" + std::to_string(i));
        }
        input += ping("keepalive");
        EchoCounter handler;
        Protocol protocol(handler, {});
        handler.protocol = &protocol;
        wsgate::test::AllocationStats stats;
        {
            wsgate::test::AllocationScope scope;
            protocol.receive(reinterpret_cast<std::uint8_t*>(input.data()), input.size());
            stats = scope.stats();
        }
        CHECK(stats.count == 0);
        CHECK(handler.messages == 1000);
        CHECK(handler.framesSent == 1001);
        CHECK(handler.failures == 0);
    }

    TEST_CASE("a small fragmented message reuses the buffer; a large one releases it") {
        EchoCounter handler;
        Protocol protocol(handler, {});
        handler.protocol = &protocol;
        auto receive = [&protocol](Bytes input) {
            wsgate::test::AllocationScope scope;
            protocol.receive(reinterpret_cast<std::uint8_t*>(input.data()), input.size());
            return scope.stats().count;
        };
        const Bytes small = text(repeat("s", 100), false) + continuation(repeat("t", 100));
        const Bytes large = binary(repeat("l", 10000), false) + continuation(repeat("m", 10000));
        CHECK(receive(small) > 0);
        CHECK(receive(small) == 0);
        CHECK(receive(large) > 0);
        CHECK(receive(small) > 0);
        CHECK(handler.messages == 4);
    }

    TEST_CASE("a frame split across reads is assembled and delivered once") {
        Setup setup;
        const Bytes payload = repeat("abcdefgh", 1000);
        const Bytes input = binary(payload);
        const Outcome outcome = feed(input, {1, 2, 3, 100, 4000}, setup);
        CHECK(outcome.events == std::vector<std::string>{binaryMessage(payload)});
    }
}
