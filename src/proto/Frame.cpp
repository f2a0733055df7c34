#include "proto/Frame.h"

#include <bit>
#include <cstring>

namespace wsgate::proto {

std::size_t writeFrameHeader(std::uint8_t* out, Opcode opcode, bool fin,
                             std::uint64_t payloadLength, bool rsv1,
                             const std::uint8_t* mask) noexcept {
    out[0] = static_cast<std::uint8_t>((fin ? 0x80U : 0U) | (rsv1 ? 0x40U : 0U) |
                                       static_cast<std::uint8_t>(opcode));
    const std::uint8_t maskBit = mask != nullptr ? 0x80U : 0U;
    std::size_t size = 2;
    // RFC 6455 §5.2: the minimal number of bytes MUST be used to encode the length.
    if (payloadLength <= 125) {
        out[1] = static_cast<std::uint8_t>(maskBit | payloadLength);
    } else if (payloadLength <= 0xFFFF) {
        out[1] = static_cast<std::uint8_t>(maskBit | 126U);
        out[2] = static_cast<std::uint8_t>(payloadLength >> 8);
        out[3] = static_cast<std::uint8_t>(payloadLength);
        size = 4;
    } else {
        out[1] = static_cast<std::uint8_t>(maskBit | 127U);
        for (std::size_t i = 0; i < 8; ++i) {
            out[2 + i] = static_cast<std::uint8_t>(payloadLength >> (56 - 8 * i));
        }
        size = 10;
    }
    if (mask != nullptr) {
        std::memcpy(out + size, mask, 4);
        size += 4;
    }
    return size;
}

std::size_t applyMask(std::uint8_t* data, std::size_t size, const std::uint8_t* mask,
                      std::size_t phase) noexcept {
    // The key twice in a word, rotated so that its first byte in memory is
    // key byte `phase`: then payload byte i is XORed with byte i % 8 of the
    // word, whatever the phase. memcpy keeps the loads free of alignment and
    // aliasing trouble; compilers make plain or vector loads of it.
    std::uint32_t key;
    std::memcpy(&key, mask, sizeof key);
    std::uint64_t word = static_cast<std::uint64_t>(key) << 32 | key;
    const auto shift = static_cast<int>((phase & 3) * 8);
    word = std::endian::native == std::endian::little ? std::rotr(word, shift)
                                                      : std::rotl(word, shift);

    std::size_t i = 0;
    // Four independent words per step: GCC and clang turn this into two or
    // one vector XORs at -O2.
    for (; i + 32 <= size; i += 32) {
        std::uint64_t a;
        std::uint64_t b;
        std::uint64_t c;
        std::uint64_t d;
        std::memcpy(&a, data + i, 8);
        std::memcpy(&b, data + i + 8, 8);
        std::memcpy(&c, data + i + 16, 8);
        std::memcpy(&d, data + i + 24, 8);
        a ^= word;
        b ^= word;
        c ^= word;
        d ^= word;
        std::memcpy(data + i, &a, 8);
        std::memcpy(data + i + 8, &b, 8);
        std::memcpy(data + i + 16, &c, 8);
        std::memcpy(data + i + 24, &d, 8);
    }
    for (; i + 8 <= size; i += 8) {
        std::uint64_t a;
        std::memcpy(&a, data + i, 8);
        a ^= word;
        std::memcpy(data + i, &a, 8);
    }
    std::uint8_t pattern[8];
    std::memcpy(pattern, &word, sizeof pattern);
    for (; i < size; ++i) {
        data[i] ^= pattern[i & 7];
    }
    return (phase + size) & 3;
}

} // namespace wsgate::proto
