// UTF-8 in text messages over real sockets (RFC 6455 §8.1), as Autobahn's
// category 6, against the echo-server process and an in-process Server.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "support/Utf8.h"

#include "support/EchoTargets.h"
#include "support/RawClient.h"

#include <chrono>
#include <doctest/doctest.h>
#include <string>
#include <utility>
#include <vector>

using namespace wsgate::test;
using namespace std::chrono_literals;

namespace {

RawClient connectTo(std::uint16_t port) {
    RawClient client;
    REQUIRE(client.open(port));
    return client;
}

constexpr auto failTimeout = 3s;

/// "κόσμε", Markus Kuhn's test word: 2-byte characters.
const std::string kosme = bytes({0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5});

struct Sample {
    std::string name;
    std::string text;
};

std::vector<Sample> validSamples() {
    return {
        {"empty", ""},
        {"ASCII", "Hello-World!"},
        {"Latin-1 supplement",
         "Hello-\xC2\xB5@\xC3\x9F\xC3\xB6\xC3\xA4\xC3\xBC\xC3\xA0\xC3\xA1-UTF-8!!"},
        {"2-byte characters", kosme},
        {"NUL", std::string(1, '\0')},
        {"U+007F", bytes({0x7F})},
        {"U+0080", bytes({0xC2, 0x80})},
        {"U+07FF", bytes({0xDF, 0xBF})},
        {"U+0800", bytes({0xE0, 0xA0, 0x80})},
        {"3-byte euro sign", bytes({0xE2, 0x82, 0xAC})},
        {"U+D7FF, below the surrogates", bytes({0xED, 0x9F, 0xBF})},
        {"U+E000, above the surrogates", bytes({0xEE, 0x80, 0x80})},
        {"U+FFFD", bytes({0xEF, 0xBF, 0xBD})},
        {"U+FFFF", bytes({0xEF, 0xBF, 0xBF})},
        {"U+10000", bytes({0xF0, 0x90, 0x80, 0x80})},
        {"4-byte G clef", bytes({0xF0, 0x9D, 0x84, 0x9E})},
        {"U+10FFFF", bytes({0xF4, 0x8F, 0xBF, 0xBF})},
        {"mixed widths", "a" + kosme + bytes({0xE2, 0x82, 0xAC, 0xF0, 0x9D, 0x84, 0x9E}) + "z"},
    };
}

std::vector<Sample> invalidSamples() {
    return {
        // Overlong encodings (RFC 3629 §3: MUST NOT decode them).
        {"overlong NUL in 2 bytes", bytes({0xC0, 0x80})},
        {"overlong '/' in 2 bytes", bytes({0xC0, 0xAF})},
        {"overlong U+007F in 2 bytes (C1)", bytes({0xC1, 0xBF})},
        {"overlong NUL in 3 bytes", bytes({0xE0, 0x80, 0x80})},
        {"overlong U+07FF in 3 bytes", bytes({0xE0, 0x9F, 0xBF})},
        {"overlong NUL in 4 bytes", bytes({0xF0, 0x80, 0x80, 0x80})},
        {"overlong U+FFFF in 4 bytes", bytes({0xF0, 0x8F, 0xBF, 0xBF})},
        // UTF-16 surrogates are not scalar values.
        {"surrogate U+D800", bytes({0xED, 0xA0, 0x80})},
        {"surrogate U+DBFF", bytes({0xED, 0xAF, 0xBF})},
        {"surrogate U+DC00", bytes({0xED, 0xB0, 0x80})},
        {"surrogate U+DFFF", bytes({0xED, 0xBF, 0xBF})},
        {"surrogate pair", bytes({0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80})},
        // Beyond U+10FFFF.
        {"U+110000", bytes({0xF4, 0x90, 0x80, 0x80})},
        {"U+1FFFFF", bytes({0xF7, 0xBF, 0xBF, 0xBF})},
        {"5-byte form", bytes({0xF8, 0x88, 0x80, 0x80, 0x80})},
        {"6-byte form", bytes({0xFC, 0x84, 0x80, 0x80, 0x80, 0x80})},
        // Bytes that never appear.
        {"lone C0", bytes({0xC0})},
        {"lone C1", bytes({0xC1})},
        {"lone F5", bytes({0xF5})},
        {"lone F8", bytes({0xF8})},
        {"lone FE", bytes({0xFE})},
        {"lone FF", bytes({0xFF})},
        {"FE FE FF FF", bytes({0xFE, 0xFE, 0xFF, 0xFF})},
        // Continuation bytes out of place.
        {"stray 80", bytes({0x80})},
        {"stray BF", bytes({0xBF})},
        {"80 BF 80", bytes({0x80, 0xBF, 0x80})},
        {"lead then ASCII", bytes({0xC2, 0x41})},
        {"3-byte lead cut by ASCII", bytes({0xE2, 0x82, 0x41})},
        // Sequences cut off at the end of the message.
        {"C2 at the end", "abc" + bytes({0xC2})},
        {"E2 82 at the end", "abc" + bytes({0xE2, 0x82})},
        {"F0 9D 84 at the end", "abc" + bytes({0xF0, 0x9D, 0x84})},
        {"kosme cut", kosme + bytes({0xCE})},
        // Valid text around an invalid sequence.
        {"surrogate inside text", kosme + bytes({0xED, 0xA0, 0x80}) + "edited"},
        {"F4 90 inside text", "Hello" + bytes({0xF4, 0x90, 0x80, 0x80}) + "World"},
    };
}

} // namespace

TEST_SUITE("Autobahn 6 UTF-8 handling") {
    TEST_CASE("the test's own UTF-8 samples are what they claim") {
        for (const auto& sample : validSamples()) {
            CAPTURE(sample.name);
            CHECK(isValidUtf8(sample.text));
        }
        for (const auto& sample : invalidSamples()) {
            CAPTURE(sample.name);
            CHECK_FALSE(isValidUtf8(sample.text));
        }
    }

    TEST_CASE_TEMPLATE("valid text is echoed whole", Target, ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        for (const auto& sample : validSamples()) {
            CAPTURE(sample.name);
            CHECK(client.sendText(sample.text));
            CHECK(client.expectText(sample.text));
        }
    }

    TEST_CASE_TEMPLATE("valid text split into two fragments at every byte is echoed whole", Target,
                       ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        const std::string text =
            "Hello-\xC2\xB5@\xC3\x9F-" + kosme +
            bytes({0xE2, 0x82, 0xAC, 0xF0, 0x9D, 0x84, 0x9E, 0xF4, 0x8F, 0xBF, 0xBF}) + "!";
        REQUIRE(isValidUtf8(text));
        for (std::size_t cut = 0; cut <= text.size(); ++cut) {
            CAPTURE(cut);
            CHECK(client.send(frame(opcode::text, text.substr(0, cut), false) +
                              frame(opcode::continuation, text.substr(cut))));
            CHECK(client.expectText(text));
        }
    }

    TEST_CASE_TEMPLATE("valid text in one-byte fragments and one-byte writes is echoed whole",
                       Target, ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        const std::string text = kosme + bytes({0xE2, 0x82, 0xAC, 0xF0, 0x9D, 0x84, 0x9E});
        SUBCASE("one fragment per byte") {
            std::string wire = frame(opcode::text, text.substr(0, 1), false);
            for (std::size_t i = 1; i < text.size(); ++i) {
                wire += frame(opcode::continuation, text.substr(i, 1), i + 1 == text.size());
            }
            CHECK(client.send(wire));
        }
        SUBCASE("one frame, one byte per write") {
            CHECK(client.sendByteByByte(frame(opcode::text, text), 1ms));
        }
        CHECK(client.expectText(text));
    }

    TEST_CASE_TEMPLATE("binary messages are not checked for UTF-8", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        for (const auto& sample : invalidSamples()) {
            CAPTURE(sample.name);
            CHECK(client.sendBinary(sample.text));
            CHECK(client.expectBinary(sample.text));
        }
    }

    TEST_CASE_TEMPLATE("invalid text fails the connection with 1007", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        for (const auto& sample : invalidSamples()) {
            CAPTURE(sample.name);
            {
                INFO("in one frame");
                RawClient client = connectTo(server.port());
                CHECK(client.sendText(sample.text));
                // §8.1: invalid UTF-8 in a text message fails the connection (1007, §7.4.1).
                CHECK(client.expectFailure(1007, failTimeout));
            }
            {
                INFO("split into two fragments in the middle");
                RawClient client = connectTo(server.port());
                const std::size_t cut = sample.text.size() / 2;
                CHECK(client.send(frame(opcode::text, sample.text.substr(0, cut), false) +
                                  frame(opcode::continuation, sample.text.substr(cut))));
                CHECK(client.expectFailure(1007, failTimeout));
            }
            {
                INFO("one byte per fragment");
                RawClient client = connectTo(server.port());
                std::string wire = frame(opcode::text, sample.text.substr(0, 1), false);
                for (std::size_t i = 1; i < sample.text.size(); ++i) {
                    wire += frame(opcode::continuation, sample.text.substr(i, 1),
                                  i + 1 == sample.text.size());
                }
                if (sample.text.size() == 1) {
                    wire += frame(opcode::continuation, "");
                }
                CHECK(client.send(wire));
                CHECK(client.expectFailure(1007, failTimeout));
            }
        }
    }

    TEST_CASE_TEMPLATE("invalid text in a first fragment fails fast", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        // The rest of the message is never sent: the server must not wait for it.
        SUBCASE("an overlong in the first fragment") {
            CHECK(client.sendText(kosme + bytes({0xC0, 0xAF}) + "more", false));
        }
        SUBCASE("F4 90, impossible from its second byte on") {
            CHECK(client.sendText("Hello" + bytes({0xF4, 0x90}), false));
        }
        SUBCASE("a surrogate's first two bytes") {
            CHECK(client.sendText(kosme + bytes({0xED, 0xA0}), false));
        }
        SUBCASE("a sequence completed wrongly by the second fragment") {
            CHECK(client.sendText(kosme + bytes({0xF4}), false));
            CHECK(client.sendContinuation(bytes({0x90, 0x80, 0x80}), false));
        }
        SUBCASE("the first fragment valid, the second not") {
            CHECK(client.sendText(kosme, false));
            CHECK(client.sendContinuation(bytes({0xFF}) + "tail", false));
        }
        SUBCASE("inside a single frame whose end has not arrived") {
            // Autobahn 6.4.3: the invalid bytes come in a TCP chunk of their
            // own, and the rest of the frame never does.
            const std::string payload = kosme + bytes({0xF4, 0x90, 0x80, 0x80}) + "edited";
            const std::string wire = frame(opcode::text, payload);
            const std::size_t header = wire.size() - payload.size();
            CHECK(client.send(wire.substr(0, header + kosme.size())));
            CHECK(client.quietFor(50ms));
            CHECK(client.send(wire.substr(header + kosme.size(), 2)));
        }
        CHECK(client.expectFailure(1007, failTimeout));
    }

    TEST_CASE_TEMPLATE("a sequence cut at the end of a message fails even when fragments ended "
                       "on a boundary before",
                       Target, ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client = connectTo(server.port());
        CHECK(client.sendText(kosme, false));
        CHECK(client.sendContinuation(bytes({0xE2, 0x82}), false));
        CHECK(client.quietFor(50ms)); // a truncated sequence mid-message is fine so far
        CHECK(client.sendContinuation("", true));
        CHECK(client.expectFailure(1007, failTimeout));
    }
}
