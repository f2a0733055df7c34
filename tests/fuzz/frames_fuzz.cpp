// Fuzzes the frame and message core (src/proto/Protocol) with client bytes.
//
// The first input byte picks the options: bit 0 lets RSV1 through (as if
// permessage-deflate were negotiated), bit 1 turns on frame delivery, bit 2
// sets small limits, bits 3-7 pick how the rest is cut into reads. The rest
// is fed twice, whole and in pieces, each piece in its own exact-size heap
// block so that ASan sees any over-read. The handler echoes messages back,
// and a message or ping that starts with 'Q' or 'P' makes it close or ping
// from inside the callback, to exercise re-entrancy.
//
// Only documented outcomes are allowed; anything else aborts: no event after
// onClose or onFailure, text messages valid UTF-8, sizes within the limits,
// frames that add up to their message, a close code that may be received,
// nothing sent after a close frame, and the same events and output whatever
// the cut.
#include "proto/Frame.h"
#include "proto/Protocol.h"
#include "proto/Utf8Validator.h"
#include "wsgate/Error.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace wsgate;
using namespace wsgate::proto;

[[noreturn]] void violated(const char* what) {
    std::fprintf(stderr, "frames_fuzz: %s\n", what);
    std::abort();
}

void require(bool condition, const char* what) {
    if (!condition) {
        violated(what);
    }
}

struct Options {
    bool rsv1Allowed = false;
    bool deliverFrames = false;
    ProtocolLimits limits{};
    unsigned cut = 0;
};

class CheckingHandler final : public ProtocolHandler {
public:
    explicit CheckingHandler(const Options& options) : options_(options) {}

    void attach(Protocol& protocol) { protocol_ = &protocol; }

    void onMessage(MessageType type, std::uint8_t* data, std::size_t size) override {
        event('M', data, size);
        require(size <= options_.limits.maxMessageSize, "message over maxMessageSize");
        // A compressed message is not validated by the core; without RSV1
        // every text message must be UTF-8.
        if (type == MessageType::Text && !options_.rsv1Allowed) {
            require(isValidUtf8(data, size), "text message is not UTF-8");
        }
        if (options_.deliverFrames) {
            require(frames_.size() == size &&
                        (size == 0 || std::memcmp(frames_.data(), data, size) == 0),
                    "frames do not add up to their message");
            require(lastFrameSeen_, "message without its last frame");
            require(type == frameType_, "message type differs from its frames'");
        }
        frames_.clear();
        lastFrameSeen_ = false;
        protocol_->sendMessage(type, data, size, size % 7);
        if (size > 0 && data[0] == 'Q') {
            protocol_->sendClose(static_cast<std::uint16_t>(1000 + size % 20), "quit");
        }
    }

    void onFrame(MessageType type, const std::uint8_t* data, std::size_t size,
                 bool isLastFrame) override {
        event(isLastFrame ? 'L' : 'F', data, size);
        require(options_.deliverFrames, "frame delivered unasked");
        require(size <= options_.limits.maxFrameSize, "frame over maxFrameSize");
        require(!lastFrameSeen_, "frame after the last frame");
        if (!frames_.empty()) {
            require(type == frameType_, "frame type changed inside a message");
        }
        frameType_ = type;
        frames_.append(reinterpret_cast<const char*>(data), size);
        lastFrameSeen_ = isLastFrame;
    }

    void onPing(const std::uint8_t* data, std::size_t size) override {
        event('P', data, size);
        require(size <= maxControlPayload, "ping over 125 bytes");
        if (size > 0 && data[0] == 'P') {
            protocol_->sendPing(data, size);
        }
    }

    void onPong(const std::uint8_t* data, std::size_t size) override {
        event('O', data, size);
        require(size <= maxControlPayload, "pong over 125 bytes");
    }

    void onClose(std::uint16_t code, std::string_view reason) override {
        event('C', reinterpret_cast<const std::uint8_t*>(reason.data()), reason.size());
        log_ += std::to_string(code);
        require(code == 1005 || isValidCloseCode(code), "close code that may not be received");
        require(reason.size() <= maxControlPayload - 2, "close reason too long");
        require(isValidUtf8(reinterpret_cast<const std::uint8_t*>(reason.data()), reason.size()),
                "close reason is not UTF-8");
        require(protocol_->state() == Protocol::State::Closed, "onClose before Closed");
        require(protocol_->closeCode() == code, "closeCode() differs from onClose");
        closed_ = true;
    }

    void onFailure(Error error) override {
        event('X', nullptr, 0);
        log_ += std::to_string(static_cast<int>(error));
        require(error >= Error::ReservedBitsSet && error <= Error::MessageTooLarge,
                "failure that the frame core does not report");
        require(protocol_->state() == Protocol::State::Closed, "onFailure before Closed");
        require(protocol_->closeCode() == static_cast<std::uint16_t>(closeCodeFor(error)),
                "closeCode() differs from closeCodeFor()");
        closed_ = true;
    }

    void sendFrame(const std::uint8_t* header, std::size_t headerSize, const std::uint8_t* payload,
                   std::size_t payloadSize) override {
        require(!closeSent_, "frame sent after a close frame");
        require(headerSize >= 2 && headerSize <= maxFrameHeaderSize, "bad header size");
        require((header[1] & 0x80) == 0, "server frame is masked");
        const auto opcode = static_cast<Opcode>(header[0] & 0x0F);
        if (isControl(opcode)) {
            require(payloadSize <= maxControlPayload, "control frame over 125 bytes");
        }
        closeSent_ = opcode == Opcode::Close;
        sent_.append(reinterpret_cast<const char*>(header), headerSize);
        sent_.append(reinterpret_cast<const char*>(payload), payloadSize);
    }

    const std::string& log() const { return log_; }
    const std::string& sent() const { return sent_; }

private:
    void event(char kind, const std::uint8_t* data, std::size_t size) {
        require(!closed_, "event after onClose or onFailure");
        log_.push_back(kind);
        log_ += std::to_string(size);
        log_.push_back(':');
        if (size > 0) {
            log_.append(reinterpret_cast<const char*>(data), size);
        }
    }

    const Options& options_;
    Protocol* protocol_ = nullptr;
    std::string log_;
    std::string sent_;
    std::string frames_;
    MessageType frameType_ = MessageType::Binary;
    bool lastFrameSeen_ = false;
    bool closed_ = false;
    bool closeSent_ = false;
};

struct Run {
    std::string log;
    std::string sent;
    Protocol::State state;
    std::uint16_t closeCode;
};

Run run(const Options& options, const std::uint8_t* data, std::size_t size, bool whole) {
    CheckingHandler handler(options);
    Protocol protocol(handler, options.limits);
    handler.attach(protocol);
    protocol.setRsv1Allowed(options.rsv1Allowed);
    protocol.setDeliverFrames(options.deliverFrames);
    // Cut sizes from a small generator seeded by the options, 1 to 2 * cut + 1.
    std::uint32_t seed = options.cut * 2654435761U + 1;
    std::size_t offset = 0;
    while (offset < size) {
        std::size_t piece = size - offset;
        if (!whole) {
            seed = seed * 1103515245U + 12345U;
            piece = std::min<std::size_t>(piece, 1 + (seed >> 16) % (2 * options.cut + 1));
        }
        std::vector<std::uint8_t> chunk(data + offset, data + offset + piece);
        protocol.receive(chunk.data(), chunk.size());
        offset += piece;
    }
    if (protocol.state() == Protocol::State::Closed) {
        // Once closed, input is discarded and nothing is sent.
        const std::size_t sentBefore = handler.sent().size();
        std::uint8_t extra[] = {0x81, 0x80, 0, 0, 0, 0};
        protocol.receive(extra, sizeof extra);
        require(handler.sent().size() == sentBefore, "output after Closed");
        require(!protocol.sendMessage(MessageType::Text, extra, 0), "sendMessage after Closed");
    }
    return {handler.log(), handler.sent(), protocol.state(), protocol.closeCode()};
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    Options options;
    options.rsv1Allowed = (data[0] & 0x01) != 0;
    options.deliverFrames = (data[0] & 0x02) != 0;
    if ((data[0] & 0x04) != 0) {
        options.limits.maxFrameSize = 40;
        options.limits.maxMessageSize = 100;
    }
    options.cut = data[0] >> 3;
    const Run whole = run(options, data + 1, size - 1, true);
    const Run split = run(options, data + 1, size - 1, false);
    require(whole.log == split.log, "events depend on how the input is cut");
    require(whole.sent == split.sent, "output depends on how the input is cut");
    require(whole.state == split.state && whole.closeCode == split.closeCode,
            "final state depends on how the input is cut");
    return 0;
}
