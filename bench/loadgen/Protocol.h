// The client side of RFC 6455 that the load generator needs: the opening
// handshake's key and response check, masked frames out, and a frame reader
// that hands payload bytes on as they arrive so that echoes are verified
// without being reassembled.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate::bench {

// RFC 6455 §5.2 opcodes.
inline constexpr std::uint8_t opContinuation = 0x0;
inline constexpr std::uint8_t opText = 0x1;
inline constexpr std::uint8_t opBinary = 0x2;
inline constexpr std::uint8_t opClose = 0x8;
inline constexpr std::uint8_t opPing = 0x9;
inline constexpr std::uint8_t opPong = 0xA;

inline constexpr std::uint16_t closeNormal = 1000;
inline constexpr std::size_t maxControlPayload = 125;
inline constexpr std::size_t maxFrameHeader = 14;

// A byte queue that grows without zero-filling (frames of 1 MiB are built
// here, so a value-initialising vector would touch every byte twice).
class ByteBuffer {
public:
    std::uint8_t* data() { return data_.get() + begin_; }
    std::size_t size() const { return end_ - begin_; }
    bool empty() const { return begin_ == end_; }
    void clear() { begin_ = end_ = 0; }
    // Frees the storage, so that idle connections hold none.
    void release();
    // Extends the queue by n bytes and returns them, uninitialised.
    std::uint8_t* grow(std::size_t n);
    void append(const std::uint8_t* bytes, std::size_t n);
    // Drops n bytes from the front.
    void consume(std::size_t n);

private:
    std::unique_ptr<std::uint8_t[]> data_;
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
    std::size_t capacity_ = 0;
};

// xoshiro256**: fast enough to draw a mask per frame, seeded from getrandom().
class Random {
public:
    Random();
    std::uint64_t next();
    std::uint32_t next32() { return static_cast<std::uint32_t>(next() >> 32); }

private:
    std::array<std::uint64_t, 4> state_{};
};

// A fresh Sec-WebSocket-Key (base64 of 16 random bytes, RFC 6455 §4.1) and
// the Sec-WebSocket-Accept that the server must answer with.
struct HandshakeKey {
    std::array<char, 24> key{};
    std::array<char, 28> accept{};
};
HandshakeKey makeHandshakeKey(Random& random);

std::string makeUpgradeRequest(std::string_view host, std::uint16_t port, std::string_view path,
                               std::string_view key);

// Checks a complete response head (up to and including the blank line).
// Returns nullptr when it accepts the upgrade, else why not.
const char* checkUpgradeResponse(std::string_view head, std::string_view expectedAccept);

// Writes the header of a masked frame with fin set into header (room for
// maxFrameHeader bytes) and returns its length.
std::size_t writeFrameHeader(std::uint8_t* header, std::uint8_t opcode, std::size_t length,
                             std::uint32_t maskKey);

// Appends one masked frame with fin set (RFC 6455 §5.3: a client masks every frame).
void appendFrame(ByteBuffer& out, std::uint8_t opcode, const std::uint8_t* payload,
                 std::size_t length, std::uint32_t maskKey);

// The echo payloads (slices of one pattern), masked once at the start
// instead of once per message: at 64 KiB and up the masking pass was a
// tenth of the load generator's time, which bounded the server's rate.
// Each copy is the whole pattern XORed with a key of its own; a slice at
// offset o is the slice masked with that key turned by o, so every offset
// has as many masks as there are copies.
class MaskedPatterns {
public:
    struct Slice {
        const std::uint8_t* payload; // masked
        std::uint32_t maskKey;       // as it goes in the frame header
    };

    void build(const std::vector<std::uint8_t>& pattern, std::size_t copies, Random& random);
    // The slice at offset, from a copy drawn at random.
    Slice slice(std::size_t offset, Random& random) const;

private:
    struct Copy {
        std::array<std::uint8_t, 4> key{};
        std::vector<std::uint8_t> bytes;
    };
    std::vector<Copy> copies_;
};

// XORs src with the 4-byte key into dst, a word at a time.
void maskCopy(std::uint8_t* dst, const std::uint8_t* src, std::size_t length,
              std::uint32_t maskKey);

// Per-connection reader state: at most a partial header and a control frame's
// payload are kept; data payload is handed on in place.
struct FrameReaderState {
    std::array<std::uint8_t, maxFrameHeader> header{};
    std::uint8_t headerLength = 0;
    bool inPayload = false;
    bool fin = false;
    bool inMessage = false;
    std::uint8_t opcode = 0;
    std::uint64_t payloadLeft = 0;
    std::uint8_t controlLength = 0;
    std::array<std::uint8_t, maxControlPayload> control{};
};

// Bytes of the frame header seen so far would need: 2, then 2 + the
// extended length (servers never mask, so no key follows).
inline std::size_t frameHeaderSize(const FrameReaderState& state) {
    if (state.headerLength < 2) {
        return 2;
    }
    std::uint8_t code = state.header[1] & 0x7F;
    return 2 + (code == 126 ? 2 : code == 127 ? 8 : 0);
}

// Sink needs:
//   bool onMessageStart(std::uint8_t opcode)
//   bool onPayload(const std::uint8_t* data, std::size_t length)
//   bool onMessageEnd()
//   bool onControl(std::uint8_t opcode, const std::uint8_t* data, std::size_t length)
//   void fail(const char* why)
// Each returns false to stop reading (the connection failed or closed).
template <typename Sink>
bool readFrames(FrameReaderState& state, const std::uint8_t* data, std::size_t length, Sink& sink) {
    std::size_t at = 0;
    for (;;) {
        if (!state.inPayload) {
            if (at == length) {
                return true;
            }
            // Gather the two fixed bytes first; they say how long the rest is.
            std::size_t need = frameHeaderSize(state);
            std::size_t take = std::min(need - state.headerLength, length - at);
            std::memcpy(state.header.data() + state.headerLength, data + at, take);
            state.headerLength = static_cast<std::uint8_t>(state.headerLength + take);
            at += take;
            if (state.headerLength < frameHeaderSize(state)) {
                continue;
            }
            const std::uint8_t* h = state.header.data();
            bool fin = (h[0] & 0x80) != 0;
            std::uint8_t opcode = h[0] & 0x0F;
            std::uint64_t payloadLength = h[1] & 0x7F;
            if (payloadLength == 126) {
                payloadLength = (std::uint64_t{h[2]} << 8) | h[3];
            } else if (payloadLength == 127) {
                payloadLength = 0;
                for (int i = 2; i < 10; ++i) {
                    payloadLength = (payloadLength << 8) | h[i];
                }
            }
            state.headerLength = 0;
            // No extension was negotiated (RFC 6455 §5.2).
            if ((h[0] & 0x70) != 0) {
                sink.fail("reserved bits set");
                return false;
            }
            // A server must not mask (RFC 6455 §5.1).
            if ((h[1] & 0x80) != 0) {
                sink.fail("masked frame from the server");
                return false;
            }
            bool control = (opcode & 0x08) != 0;
            if (control) {
                if (opcode != opClose && opcode != opPing && opcode != opPong) {
                    sink.fail("unknown control opcode");
                    return false;
                }
                // Control frames are short and never fragmented (RFC 6455 §5.5).
                if (!fin || payloadLength > maxControlPayload) {
                    sink.fail("fragmented or long control frame");
                    return false;
                }
                state.controlLength = 0;
            } else if (opcode == opContinuation) {
                if (!state.inMessage) {
                    sink.fail("continuation without a message");
                    return false;
                }
            } else if (opcode == opText || opcode == opBinary) {
                if (state.inMessage) {
                    sink.fail("new message inside a fragmented one");
                    return false;
                }
                state.inMessage = true;
                if (!sink.onMessageStart(opcode)) {
                    return false;
                }
            } else {
                sink.fail("unknown data opcode");
                return false;
            }
            state.fin = fin;
            state.opcode = opcode;
            state.payloadLeft = payloadLength;
            state.inPayload = true;
        }
        std::size_t take =
            static_cast<std::size_t>(std::min<std::uint64_t>(state.payloadLeft, length - at));
        if (take > 0) {
            if ((state.opcode & 0x08) != 0) {
                std::memcpy(state.control.data() + state.controlLength, data + at, take);
                state.controlLength = static_cast<std::uint8_t>(state.controlLength + take);
            } else if (!sink.onPayload(data + at, take)) {
                return false;
            }
            at += take;
            state.payloadLeft -= take;
        }
        if (state.payloadLeft > 0) {
            return true;
        }
        state.inPayload = false;
        if ((state.opcode & 0x08) != 0) {
            if (!sink.onControl(state.opcode, state.control.data(), state.controlLength)) {
                return false;
            }
        } else if (state.fin) {
            state.inMessage = false;
            if (!sink.onMessageEnd()) {
                return false;
            }
        }
    }
}

} // namespace wsgate::bench
