// The WebSocket protocol after the opening handshake, server side, for one
// connection, sans I/O (RFC 6455 §5–§8): bytes in through receive(), events
// out through a ProtocolHandler, bytes out through ProtocolHandler::sendFrame.
// It never touches a socket, a clock or a timer.
#pragma once

#include "proto/Frame.h"
#include "proto/Utf8Validator.h"
#include "wsgate/Error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace wsgate::proto {

enum class MessageType : std::uint8_t { Text, Binary };

/// Incoming limits. A frame or message over its limit fails the connection
/// with 1009 as soon as its header announces it, before anything is kept.
/// They apply to data frames; control frames are capped at 125 bytes (§5.5).
struct ProtocolLimits {
    std::uint64_t maxFrameSize = 16 * 1024 * 1024;
    std::uint64_t maxMessageSize = 16 * 1024 * 1024;
};

/// One spare large buffer that the connections of a loop share. A large
/// message's assembly buffer goes back here rather than to the allocator, so
/// the next large message reuses its pages instead of faulting in new ones,
/// while an idle connection holds nothing. Only memory: no I/O.
struct BufferCache {
    /// Buffers above this capacity are freed, not kept.
    static constexpr std::size_t maxRetained = 8 * 1024 * 1024;
    std::string spare;
};

/// What the core reports. Every call is synchronous, from inside
/// Protocol::receive() or a Protocol::send* function. Views passed in are valid
/// only during the call.
class ProtocolHandler {
public:
    /// A whole data message. Text is valid UTF-8. `data` points into the read
    /// buffer when the message came in one frame and one read, otherwise into
    /// the core's assembly buffer; the handler may modify it in place.
    virtual void onMessage(MessageType type, std::uint8_t* data, std::size_t size) = 0;
    /// A whole data frame; only when Protocol::setDeliverFrames(true). Called
    /// before onMessage for the frame that ends a message.
    virtual void onFrame(MessageType type, const std::uint8_t* data, std::size_t size,
                         bool isLastFrame) = 0;
    /// A ping from the peer; the pong has already been sent, unless we had
    /// sent a close frame (nothing follows a close frame, §5.5.1).
    virtual void onPing(const std::uint8_t* data, std::size_t size) = 0;
    virtual void onPong(const std::uint8_t* data, std::size_t size) = 0;
    /// The peer's valid close frame. `code` is 1005 when it carried none. If
    /// we had not sent a close frame, the echo has already been sent (§5.5.1).
    /// The state is now Closed: the glue closes TCP once output is flushed
    /// (the server closes first, §7.1.1).
    virtual void onClose(std::uint16_t code, std::string_view reason) = 0;
    /// The peer broke a rule (§7.1.7): a close frame with closeCodeFor(error)
    /// has been sent, the state is Closed and further input is discarded.
    virtual void onFailure(Error error) = 0;
    /// Bytes to send, a frame header and its payload, in order. Either may be
    /// empty. The glue copies or writes them before returning.
    virtual void sendFrame(const std::uint8_t* header, std::size_t headerSize,
                           const std::uint8_t* payload, std::size_t payloadSize) = 0;

protected:
    ~ProtocolHandler() = default;
};

/// One connection's protocol state. Small by design: it holds a partial frame
/// header (at most 14 bytes), the fragments of an incomplete message and a
/// partial control frame, nothing else.
class Protocol {
public:
    enum class State : std::uint8_t {
        Open,    ///< Both directions open.
        Closing, ///< We sent a close frame and wait for the peer's (closeExpected()).
        Closed,  ///< Close frames exchanged, or the connection failed.
    };

    Protocol(ProtocolHandler& handler, ProtocolLimits limits) noexcept;
    Protocol(const Protocol&) = delete;
    Protocol& operator=(const Protocol&) = delete;

    /// Feeds bytes read from the peer. Payloads are unmasked in place, so
    /// `data` must be writable. Does nothing once Closed.
    void receive(std::uint8_t* data, std::size_t size);

    /// Sends a data message as frames of at most `fragmentSize` payload bytes
    /// (0: one frame). Returns false, sending nothing, unless Open.
    bool sendMessage(MessageType type, const std::uint8_t* data, std::size_t size,
                     std::size_t fragmentSize = 0);
    /// Sends a ping (payload cut to 125 bytes). False unless Open.
    bool sendPing(const std::uint8_t* data, std::size_t size);
    /// Starts the close handshake (§7.1.2). A code that may not be sent
    /// (isValidCloseCode) gives a close frame without a code; the reason is
    /// cut at a character boundary to fit 123 bytes. False unless Open.
    bool sendClose(std::uint16_t code, std::string_view reason);

    State state() const noexcept { return state_; }
    /// True while a frame or a fragmented message is only partly received.
    bool midMessage() const noexcept { return inMessage_ || headerSize_ != 0 || remaining_ != 0; }
    /// Fails the connection for a reason the glue found (§7.1.7), e.g. a
    /// message timeout: as a protocol violation would, with
    /// closeCodeFor(error). Does nothing once Closed.
    void failConnection(Error error);
    /// True while we wait for the peer's answer to our close frame: the glue
    /// arms its close timer.
    bool closeExpected() const noexcept { return state_ == State::Closing; }
    /// The code and reason of the peer's close frame, or of the failure.
    std::uint16_t closeCode() const noexcept { return closeCode_; }
    const std::string& closeReason() const noexcept {
        return state_ == State::Closed ? message_ : noReason();
    }

    /// Whether onFrame is called. Off by default: frames cost nothing then.
    void setDeliverFrames(bool on) noexcept { deliverFrames_ = on; }
    void setLimits(ProtocolLimits limits) noexcept { limits_ = limits; }
    const ProtocolLimits& limits() const noexcept { return limits_; }
    /// Set once an extension that owns RSV1 (permessage-deflate) has been
    /// negotiated; without it RSV1 fails the connection. The payload of a
    /// message whose first frame has RSV1 is passed on as received, without
    /// UTF-8 validation: that belongs after inflating.
    void setRsv1Allowed(bool on) noexcept { rsv1Allowed_ = on; }
    /// Shares `cache` (which must outlive this) for large assembly buffers.
    void setBufferCache(BufferCache* cache) noexcept { cache_ = cache; }

private:
    std::uint8_t* continueFrame(std::uint8_t* p, std::uint8_t* end);
    bool handleData(bool fin, std::uint8_t* payload, std::size_t size);
    bool finishSplitDataFrame();
    bool deliverMessage();
    bool handleControl(Opcode opcode, std::uint8_t* payload, std::size_t size);
    bool handleClose(const std::uint8_t* payload, std::size_t size);
    void fail(Error error);
    void sendCloseFrame(std::uint16_t code, std::string_view reason);
    void releaseMessage() noexcept;
    static const std::string& noReason() noexcept;
    void takeSpareFor(std::uint64_t frameLength) noexcept;

    // Implementation state; see Protocol.cpp. Keep it small: this object is
    // part of every connection (128 bytes on LP64).
    ProtocolHandler& handler_;
    BufferCache* cache_ = nullptr;
    ProtocolLimits limits_;
    // The fragments of the message in progress, and what has arrived of a
    // data frame split across reads. A control frame split across reads is
    // appended after them and cut off again once handled.
    std::string message_;
    std::uint64_t frameLength_ = 0; // payload length of a frame split across reads
    std::uint64_t remaining_ = 0;   // its payload bytes still to come
    // A partial frame header. While a frame's payload spans reads, bytes
    // 10-13 hold its masking key instead.
    std::uint8_t header_[maxFrameHeaderSize] = {};
    std::uint16_t closeCode_ = 0;
    Utf8Validator utf8_;
    std::uint8_t headerSize_ = 0;               // bytes of a partial header held in header_
    Opcode frameOpcode_ = Opcode::Continuation; // of a frame split across reads
    State state_ = State::Open;
    bool frameFin_ : 1 = false;  // of a frame split across reads
    bool inMessage_ : 1 = false; // a data message has begun and not yet ended
    bool messageText_ : 1 = false;
    bool messageCompressed_ : 1 = false; // its first frame had RSV1
    bool deliverFrames_ : 1 = false;
    bool rsv1Allowed_ : 1 = false;
};

} // namespace wsgate::proto
