// The frame header parser of RFC 6455 §5.2, with every check that a header
// alone decides (§5.1 masking, §5.2 reserved bits and opcodes and the length
// encoding, §5.4 fragmentation, §5.5 control frames). Internal to src/proto.
// Inline: it runs once per frame on the hot path.
#pragma once

#include "proto/Frame.h"
#include "wsgate/Error.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace wsgate::proto {

/// A parsed frame header.
struct FrameHeader {
    std::uint64_t length = 0;  ///< Payload length.
    std::uint8_t mask[4] = {}; ///< Masking key (client frames always carry one).
    Opcode opcode = Opcode::Continuation;
    bool fin = false;
    bool rsv1 = false;
    std::uint8_t size = 0; ///< Header bytes, 6 to 14.
};

/// What the parser needs to know of the connection to judge a header.
struct HeaderContext {
    bool inMessage = false;   ///< A data message has begun and its FIN frame not yet come.
    bool rsv1Allowed = false; ///< An extension owns RSV1 (RFC 7692 §6).
};

enum class HeaderStatus : std::uint8_t {
    Complete,   ///< `out` holds the header.
    Incomplete, ///< More bytes are needed; nothing seen so far breaks a rule.
    Invalid,    ///< `error` names the rule broken.
};

namespace detail {

constexpr std::uint8_t finBit = 0x80;
constexpr std::uint8_t rsv1Bit = 0x40;
constexpr std::uint8_t rsv23Bits = 0x30;
constexpr std::uint8_t opcodeBits = 0x0F;
constexpr std::uint8_t maskBit = 0x80;
constexpr std::uint8_t lengthBits = 0x7F;
constexpr std::uint8_t length16 = 126;
constexpr std::uint8_t length64 = 127;

inline HeaderStatus reject(Error& error, Error why) noexcept {
    error = why;
    return HeaderStatus::Invalid;
}

} // namespace detail

/// Parses the client frame header at the start of `data` (`size` bytes, any
/// number). Every byte present is checked, so a header fails as soon as its
/// offending byte has arrived, whatever the split; the checks run in wire
/// order, so the error reported does not depend on the split either. Never
/// reads past `data + size`.
inline HeaderStatus parseFrameHeader(const std::uint8_t* data, std::size_t size,
                                     HeaderContext context, FrameHeader& out,
                                     Error& error) noexcept {
    using namespace detail;
    if (size == 0) {
        return HeaderStatus::Incomplete;
    }
    const std::uint8_t b0 = data[0];
    const auto opcode = static_cast<Opcode>(b0 & opcodeBits);
    const bool fin = (b0 & finBit) != 0;
    const bool rsv1 = (b0 & rsv1Bit) != 0;
    if ((b0 & rsv23Bits) != 0) {
        // §5.2: RSV2 and RSV3 MUST be 0, no extension we offer defines them.
        return reject(error, Error::ReservedBitsSet);
    }
    switch (opcode) {
    case Opcode::Continuation:
        if (!context.inMessage) {
            // §5.4: a continuation frame continues nothing.
            return reject(error, Error::UnexpectedContinuation);
        }
        if (rsv1) {
            // RFC 7692 §6.1: RSV1 marks a message on its first frame only.
            return reject(error, Error::ReservedBitsSet);
        }
        break;
    case Opcode::Text:
    case Opcode::Binary:
        if (context.inMessage) {
            // §5.4: fragments of a message MUST NOT be interleaved with another.
            return reject(error, Error::ExpectedContinuation);
        }
        if (rsv1 && !context.rsv1Allowed) {
            // §5.2: RSV1 MUST be 0 unless an extension defines it.
            return reject(error, Error::ReservedBitsSet);
        }
        break;
    case Opcode::Close:
    case Opcode::Ping:
    case Opcode::Pong:
        if (rsv1) {
            // RFC 7692 §6: control frames are never compressed.
            return reject(error, Error::ReservedBitsSet);
        }
        if (!fin) {
            // §5.5: control frames MUST NOT be fragmented.
            return reject(error, Error::FragmentedControlFrame);
        }
        break;
    default:
        // §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved; an unknown opcode
        // MUST fail the connection.
        return reject(error, Error::ReservedOpcode);
    }

    if (size < 2) {
        return HeaderStatus::Incomplete;
    }
    const std::uint8_t b1 = data[1];
    if ((b1 & maskBit) == 0) {
        // §5.1: a server MUST close the connection on an unmasked client frame.
        return reject(error, Error::UnmaskedClientFrame);
    }
    const std::uint8_t length7 = b1 & lengthBits;
    if (isControl(opcode) && length7 > maxControlPayload) {
        // §5.5: control frames MUST have a payload of 125 bytes or less.
        return reject(error, Error::ControlFrameTooLong);
    }

    std::uint64_t length = length7;
    std::size_t headerSize = 2 + 4;
    if (length7 == length16) {
        if (size < 4) {
            return HeaderStatus::Incomplete;
        }
        length = static_cast<std::uint64_t>(data[2]) << 8 | data[3];
        if (length < length16) {
            // §5.2: the minimal number of bytes MUST be used to encode the length.
            return reject(error, Error::NonCanonicalLength);
        }
        headerSize += 2;
    } else if (length7 == length64) {
        if (size < 10) {
            return HeaderStatus::Incomplete;
        }
        length = 0;
        for (std::size_t i = 2; i < 10; ++i) {
            length = length << 8 | data[i];
        }
        if ((length >> 63) != 0) {
            // §5.2: the most significant bit of a 64-bit length MUST be 0.
            return reject(error, Error::LengthTopBitSet);
        }
        if (length <= 0xFFFF) {
            // §5.2: the minimal number of bytes MUST be used to encode the length.
            return reject(error, Error::NonCanonicalLength);
        }
        headerSize += 8;
    }
    if (size < headerSize) {
        return HeaderStatus::Incomplete;
    }
    std::memcpy(out.mask, data + headerSize - 4, 4);
    out.length = length;
    out.opcode = opcode;
    out.fin = fin;
    out.rsv1 = rsv1;
    out.size = static_cast<std::uint8_t>(headerSize);
    return HeaderStatus::Complete;
}

} // namespace wsgate::proto
