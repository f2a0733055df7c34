#include "proto/Protocol.h"

#include "proto/FrameParser.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace wsgate::proto {
namespace {

// The assembly buffer keeps its capacity up to this size between messages,
// so a peer that fragments small messages costs no allocation per message;
// past it the buffer is freed once the message is delivered, so that one
// large message does not pin memory on a connection that then idles.
constexpr std::size_t retainedCapacity = 4 * 1024;

// §5.5.1: a close payload is a 2-byte code and at most 123 bytes of reason.
constexpr std::size_t maxCloseReason = maxControlPayload - 2;

// While a frame's payload spans reads its masking key sits at the end of the
// header array, where a complete header that needed all 14 bytes has it.
constexpr std::size_t maskOffset = maxFrameHeaderSize - 4;

// The length of the longest prefix of `text` that has at most `limit` bytes
// and does not end inside a UTF-8 character.
std::size_t cutAtCharBoundary(std::string_view text, std::size_t limit) noexcept {
    if (text.size() <= limit) {
        return text.size();
    }
    std::size_t size = limit;
    while (size > 0 && (static_cast<std::uint8_t>(text[size]) & 0xC0) == 0x80) {
        --size;
    }
    return size;
}

std::uint8_t* bytes(std::string& s) noexcept {
    return reinterpret_cast<std::uint8_t*>(s.data());
}

} // namespace

Protocol::Protocol(ProtocolHandler& handler, ProtocolLimits limits) noexcept
    : handler_(handler), limits_(limits) {
}

void Protocol::receive(std::uint8_t* data, std::size_t size) {
    // §7.1.7 and §5.5.1: once closed, nothing more is read.
    if (state_ == State::Closed || size == 0) {
        return;
    }
    std::uint8_t* p = data;
    std::uint8_t* const end = data + size;
    if (remaining_ > 0) {
        p = continueFrame(p, end);
        if (p == nullptr) {
            return;
        }
    }
    while (p != end) {
        FrameHeader header;
        Error error{};
        HeaderStatus status;
        const HeaderContext context{inMessage_, rsv1Allowed_};
        const auto available = static_cast<std::size_t>(end - p);
        if (headerSize_ == 0) {
            status = parseFrameHeader(p, available, context, header, error);
            if (status == HeaderStatus::Complete) {
                p += header.size;
            } else if (status == HeaderStatus::Incomplete) {
                // Keep the partial header; it is shorter than 14 bytes.
                assert(available < maxFrameHeaderSize);
                std::memcpy(header_, p, available);
                headerSize_ = static_cast<std::uint8_t>(available);
                return;
            }
        } else {
            // Complete the held header. Bytes past its end are copied too but
            // not consumed: they are read again from `p` below.
            const std::size_t held = headerSize_;
            const std::size_t take = std::min(maxFrameHeaderSize - held, available);
            std::memcpy(header_ + held, p, take);
            status = parseFrameHeader(header_, held + take, context, header, error);
            if (status == HeaderStatus::Complete) {
                p += header.size - held;
                headerSize_ = 0;
            } else if (status == HeaderStatus::Incomplete) {
                headerSize_ = static_cast<std::uint8_t>(held + take);
                return;
            }
        }
        if (status == HeaderStatus::Invalid) {
            fail(error);
            return;
        }

        const bool control = isControl(header.opcode);
        if (!control) {
            // Limits before allocation: judge the announced length now, before
            // a byte of the payload is kept.
            if (header.length > limits_.maxFrameSize) {
                // The frame passes maxFrameSize.
                fail(Error::FrameTooLarge);
                return;
            }
            const std::uint64_t soFar = message_.size();
            if (soFar > limits_.maxMessageSize || header.length > limits_.maxMessageSize - soFar) {
                // The message passes maxMessageSize.
                fail(Error::MessageTooLarge);
                return;
            }
            if (header.opcode != Opcode::Continuation) {
                inMessage_ = true;
                messageText_ = header.opcode == Opcode::Text;
                messageCompressed_ = header.rsv1;
                utf8_.reset();
            }
        }

        const auto left = static_cast<std::size_t>(end - p);
        if (header.length <= left) {
            // The hot path: the whole frame is in this buffer.
            const auto length = static_cast<std::size_t>(header.length);
            applyMask(p, length, header.mask, 0);
            const bool goOn = control ? handleControl(header.opcode, p, length)
                                      : handleData(header.fin, p, length);
            if (!goOn) {
                return;
            }
            p += length;
        } else {
            // The payload goes on in later reads.
            std::memcpy(header_ + maskOffset, header.mask, 4);
            frameLength_ = header.length;
            remaining_ = header.length;
            frameOpcode_ = header.opcode;
            frameFin_ = header.fin;
            p = continueFrame(p, end);
            if (p == nullptr) {
                return;
            }
        }
    }
}

// Takes what this read holds of a frame split across reads. Returns where its
// payload ends in the buffer, or nullptr when processing stops (Closed).
std::uint8_t* Protocol::continueFrame(std::uint8_t* p, std::uint8_t* end) {
    const std::size_t size = std::min<std::uint64_t>(remaining_, static_cast<std::size_t>(end - p));
    const std::size_t phase = (frameLength_ - remaining_) & 3;
    applyMask(p, size, header_ + maskOffset, phase);
    const bool control = isControl(frameOpcode_);
    if (!control && messageText_ && !messageCompressed_ && !utf8_.write(p, size)) {
        // §8.1: invalid UTF-8 fails the connection as soon as it arrives.
        fail(Error::InvalidUtf8);
        return nullptr;
    }
    takeSpareFor(frameLength_);
    message_.append(reinterpret_cast<const char*>(p), size);
    remaining_ -= size;
    p += size;
    if (remaining_ > 0) {
        return p;
    }
    if (!control) {
        return finishSplitDataFrame() ? p : nullptr;
    }
    const std::size_t start = message_.size() - frameLength_;
    if (!handleControl(frameOpcode_, bytes(message_) + start, frameLength_)) {
        return nullptr;
    }
    message_.resize(start);
    return p;
}

// A data frame that is whole in the read buffer. Returns false when
// processing stops.
bool Protocol::handleData(bool fin, std::uint8_t* payload, std::size_t size) {
    if (messageText_ && !messageCompressed_) {
        if (!utf8_.write(payload, size)) {
            // §8.1: a text frame with invalid UTF-8.
            fail(Error::InvalidUtf8);
            return false;
        }
        if (fin && !utf8_.finish()) {
            // §8.1: a text message that ends inside a character.
            fail(Error::InvalidUtf8);
            return false;
        }
    }
    const MessageType type = messageText_ ? MessageType::Text : MessageType::Binary;
    if (fin && message_.empty()) {
        // The message is this frame alone: deliver it as a view into the read
        // buffer, with no copy.
        inMessage_ = false;
        if (deliverFrames_) {
            handler_.onFrame(type, payload, size, true);
            if (state_ == State::Closed) {
                return false;
            }
        }
        handler_.onMessage(type, payload, size);
        return state_ != State::Closed;
    }
    takeSpareFor(size);
    message_.append(reinterpret_cast<const char*>(payload), size);
    if (deliverFrames_) {
        handler_.onFrame(type, payload, size, fin);
        if (state_ == State::Closed) {
            return false;
        }
    }
    return !fin || deliverMessage();
}

// The last byte of a data frame split across reads has arrived; the frame is
// the last frameLength_ bytes of message_.
bool Protocol::finishSplitDataFrame() {
    if (frameFin_ && messageText_ && !messageCompressed_ && !utf8_.finish()) {
        // §8.1: a text message that ends inside a character.
        fail(Error::InvalidUtf8);
        return false;
    }
    if (deliverFrames_) {
        const MessageType type = messageText_ ? MessageType::Text : MessageType::Binary;
        const std::size_t start = message_.size() - frameLength_;
        handler_.onFrame(type, bytes(message_) + start, frameLength_, frameFin_);
        if (state_ == State::Closed) {
            return false;
        }
    }
    return !frameFin_ || deliverMessage();
}

bool Protocol::deliverMessage() {
    inMessage_ = false;
    const MessageType type = messageText_ ? MessageType::Text : MessageType::Binary;
    handler_.onMessage(type, bytes(message_), message_.size());
    if (state_ == State::Closed) {
        return false;
    }
    releaseMessage();
    return true;
}

const std::string& Protocol::noReason() noexcept {
    static const std::string none;
    return none;
}

void Protocol::releaseMessage() noexcept {
    if (message_.capacity() <= retainedCapacity) {
        message_.clear();
        return;
    }
    if (cache_ != nullptr && message_.capacity() <= BufferCache::maxRetained &&
        message_.capacity() > cache_->spare.capacity()) {
        message_.clear();
        cache_->spare.swap(message_);
    }
    std::string().swap(message_);
}

// A large frame starts a buffer: take the loop's spare one if it is free.
// Small frames do not, so that a connection that trickles a small message
// never holds the large buffer.
void Protocol::takeSpareFor(std::uint64_t frameLength) noexcept {
    if (cache_ != nullptr && frameLength > retainedCapacity && message_.empty() &&
        cache_->spare.capacity() > message_.capacity()) {
        message_.swap(cache_->spare);
    }
}

bool Protocol::handleControl(Opcode opcode, std::uint8_t* payload, std::size_t size) {
    if (opcode == Opcode::Close) {
        return handleClose(payload, size);
    }
    if (opcode == Opcode::Ping) {
        // §5.5.2: answer with a pong carrying the same payload, unless we
        // have sent a close frame (§5.5.1: nothing follows it).
        if (state_ == State::Open) {
            std::uint8_t header[maxFrameHeaderSize];
            const std::size_t headerSize = writeFrameHeader(header, Opcode::Pong, true, size);
            handler_.sendFrame(header, headerSize, payload, size);
        }
        handler_.onPing(payload, size);
    } else {
        // §5.5.3: a pong, solicited or not, needs no answer.
        handler_.onPong(payload, size);
    }
    return state_ != State::Closed;
}

// §5.5.1 and §7.1.5: the peer's close frame. Always ends processing.
bool Protocol::handleClose(const std::uint8_t* payload, std::size_t size) {
    std::uint16_t code = static_cast<std::uint16_t>(CloseCode::CloseCodeMissingStatusCode);
    std::string_view reason;
    if (size == 1) {
        // §5.5.1: a close body starts with a 2-byte status code.
        fail(Error::BadClosePayload);
        return false;
    }
    if (size >= 2) {
        code = static_cast<std::uint16_t>(payload[0] << 8 | payload[1]);
        if (!isValidCloseCode(code)) {
            // §7.4.1, §7.4.2: a code that may not be sent on the wire.
            fail(Error::InvalidCloseCode);
            return false;
        }
        if (!isValidUtf8(payload + 2, size - 2)) {
            // §5.5.1: the reason MUST be UTF-8 (§8.1 fails on invalid UTF-8).
            fail(Error::InvalidCloseReason);
            return false;
        }
        reason = {reinterpret_cast<const char*>(payload + 2), size - 2};
    }
    // Once Closed, message_ holds the close reason and nothing else. Copy the
    // reason first: it may point into message_.
    std::string kept(reason);
    closeCode_ = code;
    const bool echo = state_ == State::Open;
    state_ = State::Closed;
    if (echo) {
        // §5.5.1: answer with a close frame, echoing the code (none for 1005)
        // and, as Qt does, the reason, which browsers show in their close event.
        sendCloseFrame(size >= 2 ? code : 0, kept);
    }
    message_ = std::move(kept);
    remaining_ = 0;
    headerSize_ = 0;
    handler_.onClose(code, message_);
    return false;
}

void Protocol::failConnection(Error error) {
    if (state_ != State::Closed) {
        fail(error);
    }
}

// §7.1.7: Fail the WebSocket Connection.
void Protocol::fail(Error error) {
    const auto code = static_cast<std::uint16_t>(closeCodeFor(error));
    // Once Closed, message_ holds the close reason and nothing else.
    std::string reason = make_error_code(error).message();
    reason.resize(cutAtCharBoundary(reason, maxCloseReason));
    closeCode_ = code;
    const bool sendClose = state_ == State::Open;
    state_ = State::Closed;
    if (sendClose) {
        // Unless we have already sent one, a close frame goes out first.
        sendCloseFrame(code, reason);
    }
    message_ = std::move(reason);
    remaining_ = 0;
    headerSize_ = 0;
    inMessage_ = false;
    handler_.onFailure(error);
}

// Sends a close frame; code 0 sends one without a body.
void Protocol::sendCloseFrame(std::uint16_t code, std::string_view reason) {
    std::uint8_t payload[maxControlPayload];
    std::size_t size = 0;
    if (code != 0) {
        payload[0] = static_cast<std::uint8_t>(code >> 8);
        payload[1] = static_cast<std::uint8_t>(code);
        const std::size_t reasonSize = cutAtCharBoundary(reason, maxCloseReason);
        if (reasonSize > 0) {
            std::memcpy(payload + 2, reason.data(), reasonSize);
        }
        size = 2 + reasonSize;
    }
    std::uint8_t header[maxFrameHeaderSize];
    const std::size_t headerSize = writeFrameHeader(header, Opcode::Close, true, size);
    handler_.sendFrame(header, headerSize, payload, size);
}

bool Protocol::sendMessage(MessageType type, const std::uint8_t* data, std::size_t size,
                           std::size_t fragmentSize) {
    if (state_ != State::Open) {
        return false;
    }
    if (fragmentSize == 0) {
        fragmentSize = size;
    }
    // §5.4: the first frame carries the message's opcode, the others are
    // continuations, the last has FIN. An empty message is one empty frame.
    Opcode opcode = type == MessageType::Text ? Opcode::Text : Opcode::Binary;
    std::size_t offset = 0;
    do {
        const std::size_t chunk = std::min(fragmentSize, size - offset);
        const bool fin = offset + chunk == size;
        std::uint8_t header[maxFrameHeaderSize];
        const std::size_t headerSize = writeFrameHeader(header, opcode, fin, chunk);
        handler_.sendFrame(header, headerSize, data + offset, chunk);
        opcode = Opcode::Continuation;
        offset += chunk;
    } while (offset < size);
    return true;
}

bool Protocol::sendPing(const std::uint8_t* data, std::size_t size) {
    if (state_ != State::Open) {
        return false;
    }
    // §5.5: a control frame carries at most 125 bytes.
    const std::size_t payloadSize = std::min(size, maxControlPayload);
    std::uint8_t header[maxFrameHeaderSize];
    const std::size_t headerSize = writeFrameHeader(header, Opcode::Ping, true, payloadSize);
    handler_.sendFrame(header, headerSize, data, payloadSize);
    return true;
}

bool Protocol::sendClose(std::uint16_t code, std::string_view reason) {
    if (state_ != State::Open) {
        return false;
    }
    // §7.1.2: we wait for the peer's close frame from now on.
    state_ = State::Closing;
    sendCloseFrame(isValidCloseCode(code) ? code : 0, reason);
    return true;
}

} // namespace wsgate::proto
