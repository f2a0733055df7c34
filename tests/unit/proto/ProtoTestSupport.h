// Helpers for the tests of src/proto's frame and message core: client frame
// builders, a recording ProtocolHandler, a guard-page buffer, and a driver
// that feeds a byte stream whole, one byte at a time and at every split
// point, requiring the same events and output each time.
#pragma once

#include "proto/Frame.h"
#include "proto/Protocol.h"
#include "wsgate/Error.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <doctest/doctest.h>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgate::proto::test {

/// Bytes on the wire; std::string holds any byte and compares and prints well.
using Bytes = std::string;

/// The masking key of RFC 6455 §5.7's examples.
inline constexpr std::uint8_t exampleMask[4] = {0x37, 0xfa, 0x21, 0x3d};

inline const std::uint8_t* u8(std::string_view s) {
    return reinterpret_cast<const std::uint8_t*>(s.data());
}

/// A client frame with its first byte given as is (FIN, RSV and opcode bits),
/// masked with `mask`. `lengthForm` 0 picks the shortest length encoding;
/// 7, 16 or 64 forces one, to build non-canonical lengths.
inline Bytes rawClientFrame(std::uint8_t firstByte, std::string_view payload, int lengthForm = 0,
                            const std::uint8_t* mask = exampleMask) {
    Bytes out;
    out.push_back(static_cast<char>(firstByte));
    const std::uint64_t n = payload.size();
    const std::uint8_t maskBit = mask != nullptr ? 0x80 : 0x00;
    if (lengthForm == 0) {
        lengthForm = n <= 125 ? 7 : n <= 0xFFFF ? 16 : 64;
    }
    if (lengthForm == 7) {
        out.push_back(static_cast<char>(maskBit | n));
    } else if (lengthForm == 16) {
        out.push_back(static_cast<char>(maskBit | 126));
        out.push_back(static_cast<char>(n >> 8));
        out.push_back(static_cast<char>(n));
    } else {
        out.push_back(static_cast<char>(maskBit | 127));
        for (int shift = 56; shift >= 0; shift -= 8) {
            out.push_back(static_cast<char>(n >> shift));
        }
    }
    if (mask != nullptr) {
        out.append(reinterpret_cast<const char*>(mask), 4);
    }
    for (std::size_t i = 0; i < payload.size(); ++i) {
        const auto key = mask != nullptr ? mask[i % 4] : 0;
        out.push_back(static_cast<char>(static_cast<std::uint8_t>(payload[i]) ^ key));
    }
    return out;
}

/// A masked client frame.
inline Bytes clientFrame(Opcode opcode, std::string_view payload, bool fin = true,
                         std::uint8_t rsvBits = 0) {
    const auto b0 =
        static_cast<std::uint8_t>((fin ? 0x80 : 0) | rsvBits | static_cast<std::uint8_t>(opcode));
    return rawClientFrame(b0, payload);
}

/// Only the header of a masked client frame announcing `length` bytes.
inline Bytes clientHeader(Opcode opcode, std::uint64_t length, bool fin = true) {
    std::uint8_t header[maxFrameHeaderSize];
    const std::size_t size = writeFrameHeader(header, opcode, fin, length, false, exampleMask);
    return Bytes(reinterpret_cast<const char*>(header), size);
}

/// The big-endian code followed by the reason: a close frame's payload.
inline Bytes closeBody(std::uint16_t code, std::string_view reason = {}) {
    Bytes out;
    out.push_back(static_cast<char>(code >> 8));
    out.push_back(static_cast<char>(code));
    out.append(reason);
    return out;
}

/// An unmasked server frame, as the core must send it.
inline Bytes serverFrame(Opcode opcode, std::string_view payload, bool fin = true) {
    Bytes out;
    out.push_back(static_cast<char>((fin ? 0x80 : 0) | static_cast<std::uint8_t>(opcode)));
    const std::uint64_t n = payload.size();
    if (n <= 125) {
        out.push_back(static_cast<char>(n));
    } else if (n <= 0xFFFF) {
        out.push_back(static_cast<char>(126));
        out.push_back(static_cast<char>(n >> 8));
        out.push_back(static_cast<char>(n));
    } else {
        out.push_back(static_cast<char>(127));
        for (int shift = 56; shift >= 0; shift -= 8) {
            out.push_back(static_cast<char>(n >> shift));
        }
    }
    out.append(payload);
    return out;
}

/// The close frame a failure with `error` sends: its code and message.
inline Bytes failureCloseFrame(Error error) {
    const auto code = static_cast<std::uint16_t>(closeCodeFor(error));
    return serverFrame(Opcode::Close, closeBody(code, make_error_code(error).message()));
}

inline const char* errorName(Error e) {
    switch (e) {
    case Error::ReservedBitsSet:
        return "ReservedBitsSet";
    case Error::ReservedOpcode:
        return "ReservedOpcode";
    case Error::UnmaskedClientFrame:
        return "UnmaskedClientFrame";
    case Error::NonCanonicalLength:
        return "NonCanonicalLength";
    case Error::LengthTopBitSet:
        return "LengthTopBitSet";
    case Error::ControlFrameTooLong:
        return "ControlFrameTooLong";
    case Error::FragmentedControlFrame:
        return "FragmentedControlFrame";
    case Error::UnexpectedContinuation:
        return "UnexpectedContinuation";
    case Error::ExpectedContinuation:
        return "ExpectedContinuation";
    case Error::InvalidUtf8:
        return "InvalidUtf8";
    case Error::BadClosePayload:
        return "BadClosePayload";
    case Error::InvalidCloseCode:
        return "InvalidCloseCode";
    case Error::InvalidCloseReason:
        return "InvalidCloseReason";
    case Error::FrameTooLarge:
        return "FrameTooLarge";
    case Error::MessageTooLarge:
        return "MessageTooLarge";
    default:
        return "other";
    }
}

/// Payloads as readable text: printable ASCII as is, the rest as \xNN; long
/// payloads by size and a hash, so that events stay short.
inline std::string quote(const std::uint8_t* data, std::size_t size) {
    if (size > 200) {
        std::uint32_t hash = 2166136261U;
        for (std::size_t i = 0; i < size; ++i) {
            hash = (hash ^ data[i]) * 16777619U;
        }
        char buffer[64];
        std::snprintf(buffer, sizeof buffer, "<%zu bytes %08x>", size, hash);
        return buffer;
    }
    std::string out = "\"";
    for (std::size_t i = 0; i < size; ++i) {
        if (data[i] >= 0x20 && data[i] < 0x7F && data[i] != '"' && data[i] != '\\') {
            out.push_back(static_cast<char>(data[i]));
        } else {
            char buffer[8];
            std::snprintf(buffer, sizeof buffer, "\\x%02x", data[i]);
            out += buffer;
        }
    }
    return out + "\"";
}
inline std::string quote(std::string_view s) {
    return quote(u8(s), s.size());
}

// The events, as the recording handler writes them.
inline std::string textMessage(std::string_view s) {
    return "message text " + quote(s);
}
inline std::string binaryMessage(std::string_view s) {
    return "message binary " + quote(s);
}
inline std::string frameEvent(MessageType type, std::string_view s, bool last) {
    return std::string("frame ") + (type == MessageType::Text ? "text " : "binary ") +
           (last ? "last " : "more ") + quote(s);
}
inline std::string pingEvent(std::string_view s) {
    return "ping " + quote(s);
}
inline std::string pongEvent(std::string_view s) {
    return "pong " + quote(s);
}
inline std::string closeEvent(std::uint16_t code, std::string_view reason = {}) {
    return "close " + std::to_string(code) + " " + quote(reason);
}
inline std::string failEvent(Error e) {
    return std::string("fail ") + errorName(e);
}

/// Options of one Protocol under test, and hooks that act on it from inside
/// its callbacks (re-entrancy).
struct Setup {
    ProtocolLimits limits{};
    bool deliverFrames = false;
    bool rsv1Allowed = false;
    bool echo = false; ///< Send every message back with sendMessage.
    std::size_t echoFragmentSize = 0;
    std::function<void(Protocol&, MessageType, std::uint8_t*, std::size_t)> onMessage;
    std::function<void(Protocol&, const std::uint8_t*, std::size_t)> onPing;
    std::function<void(Protocol&, const std::uint8_t*, std::size_t)> onFrame;
};

/// Records every event as a line and every byte sent.
class RecordingHandler final : public ProtocolHandler {
public:
    explicit RecordingHandler(Setup setup = {}) : setup_(std::move(setup)) {}

    void attach(Protocol& protocol) { protocol_ = &protocol; }

    void onMessage(MessageType type, std::uint8_t* data, std::size_t size) override {
        checkNotClosed();
        events.push_back(std::string("message ") +
                         (type == MessageType::Text ? "text " : "binary ") + quote(data, size));
        if (setup_.echo) {
            protocol_->sendMessage(type, data, size, setup_.echoFragmentSize);
        }
        if (setup_.onMessage) {
            setup_.onMessage(*protocol_, type, data, size);
        }
    }
    void onFrame(MessageType type, const std::uint8_t* data, std::size_t size,
                 bool isLastFrame) override {
        checkNotClosed();
        events.push_back(std::string("frame ") + (type == MessageType::Text ? "text " : "binary ") +
                         (isLastFrame ? "last " : "more ") + quote(data, size));
        if (setup_.onFrame) {
            setup_.onFrame(*protocol_, data, size);
        }
    }
    void onPing(const std::uint8_t* data, std::size_t size) override {
        checkNotClosed();
        events.push_back("ping " + quote(data, size));
        if (setup_.onPing) {
            setup_.onPing(*protocol_, data, size);
        }
    }
    void onPong(const std::uint8_t* data, std::size_t size) override {
        checkNotClosed();
        events.push_back("pong " + quote(data, size));
    }
    void onClose(std::uint16_t code, std::string_view reason) override {
        events.push_back(closeEvent(code, reason));
        closedEvents_ = true;
    }
    void onFailure(Error error) override {
        events.push_back(failEvent(error));
        closedEvents_ = true;
    }
    void sendFrame(const std::uint8_t* header, std::size_t headerSize, const std::uint8_t* payload,
                   std::size_t payloadSize) override {
        sent.append(reinterpret_cast<const char*>(header), headerSize);
        sent.append(reinterpret_cast<const char*>(payload), payloadSize);
    }

    std::vector<std::string> events;
    Bytes sent;

private:
    void checkNotClosed() {
        if (closedEvents_) {
            events.push_back("EVENT AFTER CLOSE");
        }
    }

    Setup setup_;
    Protocol* protocol_ = nullptr;
    bool closedEvents_ = false;
};

/// Memory that ends at a PROT_NONE page: data placed with place() ends right
/// at the boundary, so a one-byte over-read faults even without ASan.
class GuardedBuffer {
public:
    explicit GuardedBuffer(std::size_t capacity) {
        page_ = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
        usable_ = (capacity + page_ - 1) / page_ * page_;
        if (usable_ == 0) {
            usable_ = page_;
        }
        void* base = ::mmap(nullptr, usable_ + page_, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(base != MAP_FAILED);
        base_ = static_cast<std::uint8_t*>(base);
        REQUIRE(::mprotect(base_ + usable_, page_, PROT_NONE) == 0);
    }
    GuardedBuffer(const GuardedBuffer&) = delete;
    GuardedBuffer& operator=(const GuardedBuffer&) = delete;
    ~GuardedBuffer() { ::munmap(base_, usable_ + page_); }

    /// Copies `size` bytes so that they end at the guard page; returns them.
    std::uint8_t* place(const void* data, std::size_t size) {
        REQUIRE(size <= usable_);
        std::uint8_t* at = base_ + usable_ - size;
        if (size > 0) {
            std::memcpy(at, data, size);
        }
        return at;
    }

private:
    std::uint8_t* base_ = nullptr;
    std::size_t page_ = 0;
    std::size_t usable_ = 0;
};

/// What one run of a byte stream produced.
struct Outcome {
    std::vector<std::string> events;
    Bytes sent;
    Protocol::State state = Protocol::State::Open;
    std::uint16_t closeCode = 0;
    std::string closeReason;

    bool operator==(const Outcome&) const = default;
};

/// Feeds `input` cut at `cuts` (ascending offsets), each chunk copied to end
/// at a guard page.
inline Outcome feed(const Bytes& input, const std::vector<std::size_t>& cuts,
                    const Setup& setup = {}) {
    RecordingHandler handler(setup);
    Protocol protocol(handler, setup.limits);
    handler.attach(protocol);
    protocol.setDeliverFrames(setup.deliverFrames);
    protocol.setRsv1Allowed(setup.rsv1Allowed);
    GuardedBuffer buffer(input.size());
    std::size_t from = 0;
    auto chunk = [&](std::size_t to) {
        std::uint8_t* at = buffer.place(input.data() + from, to - from);
        protocol.receive(at, to - from);
        from = to;
    };
    for (std::size_t cut : cuts) {
        chunk(cut);
    }
    chunk(input.size());
    return {std::move(handler.events), std::move(handler.sent), protocol.state(),
            protocol.closeCode(), protocol.closeReason()};
}

/// The split points tried for an input of `size` bytes: all of them, or for
/// long inputs those near both ends and a spread in between.
inline std::vector<std::size_t> splitPoints(std::size_t size) {
    std::vector<std::size_t> points;
    if (size <= 4096) {
        for (std::size_t i = 1; i < size; ++i) {
            points.push_back(i);
        }
        return points;
    }
    for (std::size_t i = 1; i < 80; ++i) {
        points.push_back(i);
        points.push_back(size - i);
    }
    for (std::size_t i = 1; i < 512; ++i) {
        points.push_back(size * i / 512);
    }
    std::sort(points.begin(), points.end());
    points.erase(std::unique(points.begin(), points.end()), points.end());
    return points;
}

/// Runs `input` whole, one byte at a time (short inputs), cut once at every
/// split point and, for short inputs, cut twice at every pair; every run
/// must give `expected`'s events and bytes sent.
inline Outcome checkStream(const Bytes& input, const Setup& setup,
                           const std::vector<std::string>& events, const Bytes& sent) {
    const Outcome whole = feed(input, {}, setup);
    CHECK(whole.events == events);
    CHECK(quote(whole.sent) == quote(sent));

    auto same = [&whole](const Outcome& other, const std::string& how) {
        if (!(other == whole)) {
            INFO("split: ", how);
            CHECK(other.events == whole.events);
            CHECK(quote(other.sent) == quote(whole.sent));
            CHECK(other.state == whole.state);
            CHECK(other.closeCode == whole.closeCode);
            CHECK(other.closeReason == whole.closeReason);
            return false;
        }
        return true;
    };

    if (input.size() <= 256 * 1024) {
        std::vector<std::size_t> everyByte;
        for (std::size_t i = 1; i < input.size(); ++i) {
            everyByte.push_back(i);
        }
        if (!same(feed(input, everyByte, setup), "one byte at a time")) {
            return whole;
        }
    }
    const std::vector<std::size_t> points = splitPoints(input.size());
    for (std::size_t cut : points) {
        if (!same(feed(input, {cut}, setup), "at " + std::to_string(cut))) {
            return whole;
        }
    }
    if (input.size() <= 40) {
        for (std::size_t a = 1; a < input.size(); ++a) {
            for (std::size_t b = a + 1; b < input.size(); ++b) {
                if (!same(feed(input, {a, b}, setup),
                          "at " + std::to_string(a) + " and " + std::to_string(b))) {
                    return whole;
                }
            }
        }
    }
    return whole;
}

inline Outcome checkStream(const Bytes& input, const std::vector<std::string>& events,
                           const Bytes& sent = {}) {
    return checkStream(input, Setup{}, events, sent);
}

} // namespace wsgate::proto::test
