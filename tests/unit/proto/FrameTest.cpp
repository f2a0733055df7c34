// RFC 6455 §5.1, §5.2 and §5.3: header serialization, masking and the
// incremental header parser.
#include "proto/Frame.h"

#include "proto/FrameParser.h"
#include "unit/proto/ProtoTestSupport.h"

#include <cstdint>
#include <cstring>
#include <doctest/doctest.h>
#include <vector>

using namespace wsgate;
using namespace wsgate::proto;
using namespace wsgate::proto::test;

namespace {

Bytes header(Opcode opcode, bool fin, std::uint64_t length, bool rsv1 = false,
             const std::uint8_t* mask = nullptr) {
    std::uint8_t out[maxFrameHeaderSize];
    const std::size_t size = writeFrameHeader(out, opcode, fin, length, rsv1, mask);
    return Bytes(reinterpret_cast<const char*>(out), size);
}

Bytes hex(std::initializer_list<int> bytes) {
    Bytes out;
    for (int b : bytes) {
        out.push_back(static_cast<char>(b));
    }
    return out;
}

// The masking rule of §5.3 written out byte by byte, to check applyMask.
void maskSlowly(std::uint8_t* data, std::size_t size, const std::uint8_t* mask, std::size_t phase) {
    for (std::size_t i = 0; i < size; ++i) {
        data[i] ^= mask[(phase + i) % 4];
    }
}

struct Parsed {
    HeaderStatus status;
    FrameHeader header;
    Error error;
};

Parsed parse(const Bytes& bytes, HeaderContext context = {}) {
    Parsed result{};
    GuardedBuffer buffer(bytes.size());
    const std::uint8_t* at = buffer.place(bytes.data(), bytes.size());
    result.status = parseFrameHeader(at, bytes.size(), context, result.header, result.error);
    return result;
}

} // namespace

TEST_SUITE("5.2 Base Framing Protocol") {
    TEST_CASE("writeFrameHeader uses the shortest length encoding") {
        CHECK(header(Opcode::Text, true, 0) == hex({0x81, 0x00}));
        CHECK(header(Opcode::Binary, true, 125) == hex({0x82, 0x7D}));
        CHECK(header(Opcode::Binary, true, 126) == hex({0x82, 0x7E, 0x00, 0x7E}));
        CHECK(header(Opcode::Binary, true, 0xFFFF) == hex({0x82, 0x7E, 0xFF, 0xFF}));
        CHECK(header(Opcode::Binary, true, 0x10000) ==
              hex({0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}));
        CHECK(header(Opcode::Binary, true, 0x7FFFFFFFFFFFFFFFULL) ==
              hex({0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}));
    }

    TEST_CASE("writeFrameHeader sets FIN, RSV1, the opcode and the mask") {
        CHECK(header(Opcode::Continuation, false, 3) == hex({0x00, 0x03}));
        CHECK(header(Opcode::Text, false, 1, true) == hex({0x41, 0x01}));
        CHECK(header(Opcode::Close, true, 2) == hex({0x88, 0x02}));
        CHECK(header(Opcode::Ping, true, 0) == hex({0x89, 0x00}));
        CHECK(header(Opcode::Pong, true, 0) == hex({0x8A, 0x00}));
        // §5.7: a masked "Hello".
        CHECK(header(Opcode::Text, true, 5, false, exampleMask) ==
              hex({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d}));
        CHECK(header(Opcode::Binary, true, 70000, false, exampleMask).size() == maxFrameHeaderSize);
    }

    TEST_CASE("the parser reads what writeFrameHeader writes") {
        for (std::uint64_t length :
             {0ULL, 1ULL, 125ULL, 126ULL, 65535ULL, 65536ULL, 0x7FFFFFFFFFFFFFFFULL}) {
            for (bool fin : {false, true}) {
                const Bytes bytes = header(Opcode::Binary, fin, length, false, exampleMask);
                const Parsed parsed = parse(bytes);
                REQUIRE(parsed.status == HeaderStatus::Complete);
                CHECK(parsed.header.length == length);
                CHECK(parsed.header.fin == fin);
                CHECK(parsed.header.opcode == Opcode::Binary);
                CHECK(parsed.header.size == bytes.size());
                CHECK(std::memcmp(parsed.header.mask, exampleMask, 4) == 0);
                // Every prefix is incomplete, and none is read past its end.
                for (std::size_t n = 0; n < bytes.size(); ++n) {
                    CHECK(parse(bytes.substr(0, n)).status == HeaderStatus::Incomplete);
                }
            }
        }
    }

    TEST_CASE("the parser rejects a length that is not in its shortest form") {
        const Bytes short16 = hex({0x82, 0xFE, 0x00, 0x7D, 1, 2, 3, 4});
        CHECK(parse(short16).error == Error::NonCanonicalLength);
        // It fails as soon as the length bytes are there, before the mask.
        CHECK(parse(short16.substr(0, 4)).status == HeaderStatus::Invalid);
        const Bytes short64 = hex({0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4});
        CHECK(parse(short64).error == Error::NonCanonicalLength);
        CHECK(parse(short64.substr(0, 10)).status == HeaderStatus::Invalid);
        CHECK(parse(short64.substr(0, 9)).status == HeaderStatus::Incomplete);
        const Bytes tiny64 = hex({0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4});
        CHECK(parse(tiny64).error == Error::NonCanonicalLength);
    }

    TEST_CASE("the parser rejects a 64-bit length with its top bit set") {
        const Bytes bytes = hex({0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4});
        const Parsed parsed = parse(bytes);
        CHECK(parsed.status == HeaderStatus::Invalid);
        CHECK(parsed.error == Error::LengthTopBitSet);
    }

    TEST_CASE("the parser rejects reserved bits and opcodes at the first byte") {
        for (int rsv : {0x10, 0x20, 0x30}) {
            const Parsed parsed = parse(hex({0x82 | rsv}));
            CHECK(parsed.status == HeaderStatus::Invalid);
            CHECK(parsed.error == Error::ReservedBitsSet);
        }
        CHECK(parse(hex({0xC2})).error == Error::ReservedBitsSet);
        CHECK(parse(hex({0xC2}), {false, true}).status == HeaderStatus::Incomplete);
        // RSV1 belongs to the first frame of a data message only.
        CHECK(parse(hex({0xC0}), {true, true}).error == Error::ReservedBitsSet);
        CHECK(parse(hex({0xC9}), {false, true}).error == Error::ReservedBitsSet);
        for (int opcode : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
            CAPTURE(opcode);
            CHECK(parse(hex({0x80 | opcode})).error == Error::ReservedOpcode);
        }
    }

    TEST_CASE("the parser applies the fragmentation rules") {
        CHECK(parse(hex({0x80})).error == Error::UnexpectedContinuation);
        CHECK(parse(hex({0x80}), {true, false}).status == HeaderStatus::Incomplete);
        CHECK(parse(hex({0x81}), {true, false}).error == Error::ExpectedContinuation);
        CHECK(parse(hex({0x02}), {true, false}).error == Error::ExpectedContinuation);
        CHECK(parse(hex({0x09})).error == Error::FragmentedControlFrame);
        CHECK(parse(hex({0x89}), {true, false}).status == HeaderStatus::Incomplete);
    }

    TEST_CASE("the parser rejects long control frames at the second byte") {
        CHECK(parse(hex({0x89, 0xFD, 1, 2, 3, 4})).status == HeaderStatus::Complete);
        for (int length7 : {126, 127}) {
            CHECK(parse(hex({0x89, 0x80 | length7})).error == Error::ControlFrameTooLong);
        }
    }
}

TEST_SUITE("5.1 Overview") {
    TEST_CASE("the parser rejects an unmasked client frame") {
        const Parsed parsed = parse(hex({0x81, 0x05}));
        CHECK(parsed.status == HeaderStatus::Invalid);
        CHECK(parsed.error == Error::UnmaskedClientFrame);
    }
}

TEST_SUITE("5.3 Client-to-Server Masking") {
    TEST_CASE("applyMask unmasks the example of 5.7") {
        Bytes masked = hex({0x7f, 0x9f, 0x4d, 0x51, 0x58});
        auto* data = reinterpret_cast<std::uint8_t*>(masked.data());
        CHECK(applyMask(data, masked.size(), exampleMask) == 1);
        CHECK(masked == "Hello");
    }

    TEST_CASE("applyMask matches the byte-wise rule for every size, phase and offset") {
        std::vector<std::uint8_t> source(300);
        for (std::size_t i = 0; i < source.size(); ++i) {
            source[i] = static_cast<std::uint8_t>(i * 7 + 3);
        }
        for (std::size_t size = 0; size <= 100; ++size) {
            for (std::size_t phase = 0; phase < 4; ++phase) {
                for (std::size_t offset = 0; offset < 8; ++offset) {
                    std::vector<std::uint8_t> fast(source.begin(), source.end());
                    std::vector<std::uint8_t> slow(source.begin(), source.end());
                    const std::size_t next =
                        applyMask(fast.data() + offset, size, exampleMask, phase);
                    maskSlowly(slow.data() + offset, size, exampleMask, phase);
                    CHECK(next == (phase + size) % 4);
                    REQUIRE(fast == slow);
                }
            }
        }
    }

    TEST_CASE("applyMask carries the phase across any split") {
        std::vector<std::uint8_t> source(77);
        for (std::size_t i = 0; i < source.size(); ++i) {
            source[i] = static_cast<std::uint8_t>(255 - i);
        }
        std::vector<std::uint8_t> whole = source;
        applyMask(whole.data(), whole.size(), exampleMask);
        for (std::size_t a = 0; a <= source.size(); ++a) {
            for (std::size_t b = a; b <= source.size(); b += 5) {
                std::vector<std::uint8_t> split = source;
                std::size_t phase = applyMask(split.data(), a, exampleMask);
                phase = applyMask(split.data() + a, b - a, exampleMask, phase);
                applyMask(split.data() + b, split.size() - b, exampleMask, phase);
                REQUIRE(split == whole);
            }
        }
    }

    TEST_CASE("applyMask stays inside a buffer that ends at a guard page") {
        for (std::size_t size = 0; size <= 40; ++size) {
            const Bytes plain(size, 'x');
            GuardedBuffer buffer(size);
            std::uint8_t* at = buffer.place(plain.data(), size);
            applyMask(at, size, exampleMask, 3);
            applyMask(at, size, exampleMask, 3);
            CHECK(std::memcmp(at, plain.data(), size) == 0);
        }
    }
}
