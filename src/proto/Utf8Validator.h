// Incremental UTF-8 validation (RFC 3629), for text messages split across
// frames and reads (RFC 6455 §8.1).
#pragma once

#include <cstddef>
#include <cstdint>

namespace wsgate::proto {

/// Validates a byte stream chunk by chunk. It fails at the first byte that
/// cannot start or continue a valid sequence (overlongs, surrogates and code
/// points past U+10FFFF included), even when the sequence is split.
class Utf8Validator {
public:
    /// Feeds a chunk. Returns false as soon as the stream cannot be valid UTF-8.
    bool write(const std::uint8_t* data, std::size_t size) noexcept;
    /// True when the stream fed so far ends on a character boundary.
    bool finish() const noexcept { return state_ == 0; }
    void reset() noexcept { state_ = 0; }

private:
    // The DFA state (Utf8Validator.cpp): 0 between characters, otherwise
    // what the next byte may be; one byte, as this lives in every connection.
    std::uint8_t state_ = 0;
};

/// One-shot validation of a whole buffer.
bool isValidUtf8(const std::uint8_t* data, std::size_t size) noexcept;

} // namespace wsgate::proto
