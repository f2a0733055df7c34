// RFC 6455 §8.1 (and RFC 3629): incremental UTF-8 validation.
#include "proto/Utf8Validator.h"

#include "unit/proto/ProtoTestSupport.h"

#include <cstdint>
#include <doctest/doctest.h>
#include <string>
#include <vector>

using namespace wsgate::proto;
using namespace wsgate::proto::test;

namespace {

// RFC 3629 written as a decoder, independent of the DFA under test.
bool referenceValid(const std::uint8_t* s, std::size_t n) {
    std::size_t i = 0;
    while (i < n) {
        const std::uint8_t b = s[i];
        if (b < 0x80) {
            ++i;
            continue;
        }
        std::size_t length = 0;
        std::uint32_t cp = 0;
        std::uint32_t min = 0;
        if ((b & 0xE0) == 0xC0) {
            length = 2;
            cp = b & 0x1FU;
            min = 0x80;
        } else if ((b & 0xF0) == 0xE0) {
            length = 3;
            cp = b & 0x0FU;
            min = 0x800;
        } else if ((b & 0xF8) == 0xF0) {
            length = 4;
            cp = b & 0x07U;
            min = 0x10000;
        } else {
            return false;
        }
        if (i + length > n) {
            return false;
        }
        for (std::size_t k = 1; k < length; ++k) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return false;
            }
            cp = cp << 6 | (s[i + k] & 0x3FU);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += length;
    }
    return true;
}

bool validate(std::string_view bytes) {
    return isValidUtf8(u8(bytes), bytes.size());
}

// Validates `bytes` alone and between ASCII bytes, so that both the DFA (the
// last 3 bytes of a buffer) and the whole-character fast path judge it; all
// must agree. Returns the verdict.
bool validateEverywhere(std::string_view bytes) {
    const bool alone = validate(bytes);
    char padded[64];
    REQUIRE(bytes.size() + 5 <= sizeof padded);
    padded[0] = 'a';
    std::memcpy(padded + 1, bytes.data(), bytes.size());
    std::memcpy(padded + 1 + bytes.size(), "bcde", 4);
    const std::string_view all(padded, bytes.size() + 5);
    if (validate(all) != alone || validate(all.substr(1)) != alone) {
        FAIL_CHECK("the fast path and the DFA disagree on " << quote(bytes));
    }
    return alone;
}

// Checks a short sequence against the reference, counting one assertion.
void agrees(std::initializer_list<int> values) {
    std::uint8_t bytes[4];
    std::size_t n = 0;
    for (int v : values) {
        bytes[n++] = static_cast<std::uint8_t>(v);
    }
    const std::string_view view(reinterpret_cast<const char*>(bytes), n);
    if (validateEverywhere(view) != referenceValid(bytes, n)) {
        FAIL_CHECK("differs from the reference: " << quote(view));
    }
}

// Feeds one byte at a time; returns the index of the byte that failed, or -1.
long failingByte(const Bytes& bytes) {
    Utf8Validator validator;
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        if (!validator.write(u8(bytes) + i, 1)) {
            return static_cast<long>(i);
        }
    }
    return -1;
}

Bytes hex(std::initializer_list<int> bytes) {
    Bytes out;
    for (int b : bytes) {
        out.push_back(static_cast<char>(b));
    }
    return out;
}

struct Vector {
    Bytes bytes;
    long failsAt;  // index of the offending byte; -1 when no byte is wrong
    bool complete; // ends on a character boundary (meaningful when failsAt is -1)
};

// Valid text, and the invalid sequences of the Autobahn testsuite's cases
// 6.3-6.21 (after Markus Kuhn's UTF-8 decoder stress test), each with the
// byte that must fail it.
std::vector<Vector> vectors() {
    return {
        {"", -1, true},
        {"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!", -1, true},
        {hex({0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5}), -1, true},
        // Boundaries: the first and last code point of each length, and
        // around the surrogates.
        {hex({0x00}), -1, true},
        {hex({0xc2, 0x80}), -1, true},
        {hex({0xe0, 0xa0, 0x80}), -1, true},
        {hex({0xf0, 0x90, 0x80, 0x80}), -1, true},
        {hex({0x7f}), -1, true},
        {hex({0xdf, 0xbf}), -1, true},
        {hex({0xef, 0xbf, 0xbf}), -1, true},
        {hex({0xf4, 0x8f, 0xbf, 0xbf}), -1, true},
        {hex({0xed, 0x9f, 0xbf}), -1, true},
        {hex({0xee, 0x80, 0x80}), -1, true},
        {hex({0xef, 0xbf, 0xbd}), -1, true},
        // Noncharacters are valid UTF-8 (Autobahn 6.22).
        {hex({0xef, 0xbf, 0xbe}), -1, true},
        {hex({0xef, 0xb7, 0x90}), -1, true},
        {hex({0xf0, 0x9f, 0xbf, 0xbe}), -1, true},
        {hex({0xf4, 0x8f, 0xbf, 0xbe}), -1, true},
        {hex({0xf0, 0x9f, 0x98, 0x80}), -1, true},
        // Incomplete at the end: no byte is wrong, but finish() is false.
        {hex({0xc2}), -1, false},
        {hex({0xe1, 0x80}), -1, false},
        {hex({0xf1, 0x80, 0x80}), -1, false},
        {hex({0xf4, 0x8f, 0xbf}), -1, false},
        {hex({0x41, 0xe0}), -1, false},
        // 6.3: a surrogate inside valid text.
        {hex({0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce,
              0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64}),
         12, false},
        // 6.4: past U+10FFFF inside valid text.
        {hex({0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5,
              0xf4, 0x90, 0x80, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64}),
         12, false},
        {hex({0xf4, 0x90, 0x80, 0x80}), 1, false},
        {hex({0xf5, 0x80, 0x80, 0x80}), 0, false},
        {hex({0xf7, 0xbf, 0xbf, 0xbf}), 0, false},
        // 6.8: 5- and 6-byte sequences.
        {hex({0xf8, 0x88, 0x80, 0x80, 0x80}), 0, false},
        {hex({0xfc, 0x84, 0x80, 0x80, 0x80, 0x80}), 0, false},
        // 6.9-6.11: overlongs.
        {hex({0xc0, 0xaf}), 0, false},
        {hex({0xe0, 0x80, 0xaf}), 1, false},
        {hex({0xf0, 0x80, 0x80, 0xaf}), 1, false},
        {hex({0xc1, 0xbf}), 0, false},
        {hex({0xe0, 0x9f, 0xbf}), 1, false},
        {hex({0xf0, 0x8f, 0xbf, 0xbf}), 1, false},
        {hex({0xc0, 0x80}), 0, false},
        {hex({0xe0, 0x80, 0x80}), 1, false},
        {hex({0xf0, 0x80, 0x80, 0x80}), 1, false},
        // 6.12: unexpected continuation bytes.
        {hex({0x80}), 0, false},
        {hex({0xbf}), 0, false},
        {hex({0x80, 0xbf}), 0, false},
        {hex({0x41, 0x80, 0xbf, 0x80}), 1, false},
        {hex({0xc2, 0x80, 0x80}), 2, false},
        // 6.13: lonely start bytes followed by a space.
        {hex({0xc2, 0x20}), 1, false},
        {hex({0xdf, 0x20}), 1, false},
        {hex({0xe1, 0x20}), 1, false},
        {hex({0xe1, 0x80, 0x20}), 2, false},
        {hex({0xf1, 0x20}), 1, false},
        {hex({0xf1, 0x80, 0x80, 0x20}), 3, false},
        // 6.14-6.15: a sequence cut short by another.
        {hex({0xe1, 0x80, 0xc2, 0x80}), 2, false},
        {hex({0xdf, 0xef, 0xbf}), 1, false},
        // 6.16: bytes that never appear.
        {hex({0xfe}), 0, false},
        {hex({0xff}), 0, false},
        {hex({0xfe, 0xfe, 0xff, 0xff}), 0, false},
        // 6.18-6.19: UTF-16 surrogates, single and paired.
        {hex({0xed, 0xa0, 0x80}), 1, false},
        {hex({0xed, 0xad, 0xbf}), 1, false},
        {hex({0xed, 0xae, 0x80}), 1, false},
        {hex({0xed, 0xaf, 0xbf}), 1, false},
        {hex({0xed, 0xb0, 0x80}), 1, false},
        {hex({0xed, 0xbe, 0x80}), 1, false},
        {hex({0xed, 0xbf, 0xbf}), 1, false},
        {hex({0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80}), 1, false},
        {hex({0xed, 0xaf, 0xbf, 0xed, 0xbf, 0xbf}), 1, false},
    };
}

} // namespace

TEST_SUITE("8.1 Handling Errors in UTF-8") {
    TEST_CASE("the vectors are judged right, whole and split at every byte") {
        for (const Vector& vector : vectors()) {
            CAPTURE(quote(vector.bytes));
            const bool valid = vector.failsAt < 0 && vector.complete;
            CHECK(validateEverywhere(vector.bytes) == valid);
            CHECK(referenceValid(u8(vector.bytes), vector.bytes.size()) == valid);
            // Fed a byte at a time, it fails at the offending byte, not later.
            CHECK(failingByte(vector.bytes) == vector.failsAt);
            for (std::size_t cut = 0; cut <= vector.bytes.size(); ++cut) {
                Utf8Validator validator;
                const bool first = validator.write(u8(vector.bytes), cut);
                const bool second =
                    first && validator.write(u8(vector.bytes) + cut, vector.bytes.size() - cut);
                CHECK(first == (vector.failsAt < 0 || vector.failsAt >= static_cast<long>(cut)));
                CHECK((second && validator.finish()) == valid);
            }
        }
    }

    TEST_CASE("every one- and two-byte string agrees with the reference") {
        for (int a = 0; a < 256; ++a) {
            agrees({a});
            for (int b = 0; b < 256; ++b) {
                agrees({a, b});
            }
        }
    }

    TEST_CASE("every three-byte sequence agrees with the reference") {
        for (int a = 0xE0; a <= 0xEF; ++a) {
            for (int b = 0; b < 256; ++b) {
                for (int c = 0; c < 256; ++c) {
                    agrees({a, b, c});
                }
            }
        }
    }

    TEST_CASE("four-byte sequences agree with the reference") {
        for (int a = 0xF0; a <= 0xFF; ++a) {
            for (int b = 0; b < 256; ++b) {
                for (int c : {0x00, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF}) {
                    for (int d : {0x00, 0x7F, 0x80, 0x8F, 0x90, 0xBF, 0xC0, 0xFF}) {
                        agrees({a, b, c, d});
                    }
                }
            }
        }
    }

    TEST_CASE("a sequence fails at its second byte when nothing can complete it") {
        // The range checks of RFC 3629 fall on whole second bytes, so a
        // lead and second byte can be completed iff completing them with
        // 0x80 bytes is valid.
        for (int a = 0xC0; a <= 0xFF; ++a) {
            Utf8Validator validator;
            const Bytes lead = hex({a});
            const bool leadOk = validator.write(u8(lead), 1);
            CHECK(leadOk == (a >= 0xC2 && a <= 0xF4));
            if (!leadOk) {
                continue;
            }
            const std::size_t length = a < 0xE0 ? 2 : a < 0xF0 ? 3 : 4;
            for (int b = 0; b < 256; ++b) {
                Bytes completed = hex({a, b});
                completed.append(length - 2, static_cast<char>(0x80));
                Utf8Validator copy = validator;
                const Bytes second = hex({b});
                REQUIRE(copy.write(u8(second), 1) ==
                        referenceValid(u8(completed), completed.size()));
            }
        }
    }

    TEST_CASE("the fast path finds a bad byte at every position and alignment") {
        for (std::size_t offset = 0; offset < 8; ++offset) {
            for (std::size_t at = 0; at < 40; ++at) {
                Bytes text(offset + 40, 'a');
                text[offset + at] = static_cast<char>(0x80);
                CAPTURE(offset);
                CAPTURE(at);
                GuardedBuffer buffer(text.size());
                const std::uint8_t* p = buffer.place(text.data(), text.size());
                CHECK_FALSE(isValidUtf8(p + offset, 40));
                // And a valid two-byte character there passes.
                text[offset + at] = static_cast<char>(0xC3);
                text.insert(offset + at + 1, 1, static_cast<char>(0xA9));
                GuardedBuffer second(text.size());
                p = second.place(text.data(), text.size());
                CHECK(isValidUtf8(p + offset, 41));
                CHECK_FALSE(isValidUtf8(p + offset, at + 1));
            }
        }
    }

    TEST_CASE("a rejected stream stays rejected; reset starts over") {
        Utf8Validator validator;
        CHECK_FALSE(validator.write(u8("\xff"), 1));
        CHECK_FALSE(validator.write(u8("a"), 1));
        CHECK_FALSE(validator.finish());
        validator.reset();
        CHECK(validator.write(u8("a"), 1));
        CHECK(validator.finish());
    }

    TEST_CASE("the validator is one byte") {
        CHECK(sizeof(Utf8Validator) == 1);
    }
}
