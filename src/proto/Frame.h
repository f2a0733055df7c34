// The base framing protocol of RFC 6455 §5.2: opcodes, header serialization
// and masking. Sans I/O.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wsgate::proto {

enum class Opcode : std::uint8_t {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
};

/// RFC 6455 §5.2: 2 bytes, 8 of extended length, 4 of mask.
inline constexpr std::size_t maxFrameHeaderSize = 14;
/// RFC 6455 §5.5: control frames carry at most 125 bytes.
inline constexpr std::size_t maxControlPayload = 125;

constexpr bool isControl(Opcode opcode) noexcept {
    return (static_cast<std::uint8_t>(opcode) & 0x8) != 0;
}

/// Writes a frame header into `out` (at least maxFrameHeaderSize bytes) and
/// returns its size. The length is encoded in its shortest form. With `mask`
/// (4 bytes) the MASK bit is set and the key written; the payload must then
/// be masked by the caller with applyMask.
std::size_t writeFrameHeader(std::uint8_t* out, Opcode opcode, bool fin,
                             std::uint64_t payloadLength, bool rsv1 = false,
                             const std::uint8_t* mask = nullptr) noexcept;

/// XORs `size` bytes in place with the 4-byte `mask`, starting at byte
/// `phase` (0–3) of the mask, a word at a time. Returns the phase after the
/// last byte, so a payload split across reads is unmasked piece by piece.
std::size_t applyMask(std::uint8_t* data, std::size_t size, const std::uint8_t* mask,
                      std::size_t phase = 0) noexcept;

} // namespace wsgate::proto
