// A raw-socket WebSocket client for the integration tests: it writes every
// byte itself, so tests can send what no well-behaved client would, and it
// checks what the server sends against RFC 6455 instead of trusting it.
#pragma once

#include "support/ClientTransport.h"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgate::test {

class TlsClient;
struct TlsClientOptions;

/// How long any single wait of the client may take unless told otherwise, so
/// that no test can hang on a server that stays silent.
inline constexpr std::chrono::milliseconds defaultTimeout{5000};

/// How soon the server must close TCP once a close handshake is over or the
/// connection failed: it closes first (RFC 6455 §7.1.1), so this is short,
/// well under any time a server might wait for the client to close instead.
inline constexpr std::chrono::milliseconds serverCloseTimeout{1500};

/// RFC 6455 §5.2 opcodes, as raw numbers so that tests can send reserved ones.
namespace opcode {
inline constexpr std::uint8_t continuation = 0x0;
inline constexpr std::uint8_t text = 0x1;
inline constexpr std::uint8_t binary = 0x2;
inline constexpr std::uint8_t close = 0x8;
inline constexpr std::uint8_t ping = 0x9;
inline constexpr std::uint8_t pong = 0xA;
} // namespace opcode

/// How the payload length of a built frame is written.
enum class LengthEncoding {
    Shortest, ///< The canonical form of RFC 6455 §5.2.
    Bits16,   ///< Always 126 + 16 bits, even when shorter would do.
    Bits64,   ///< Always 127 + 64 bits, even when shorter would do.
};

/// Everything about a frame a test may want to get wrong on purpose.
struct FrameSpec {
    std::uint8_t opcode = opcode::text;
    std::string payload;
    bool fin = true;
    bool rsv1 = false;
    bool rsv2 = false;
    bool rsv3 = false;
    bool masked = true;
    /// The masking key; a random one when unset.
    std::optional<std::array<std::uint8_t, 4>> maskKey;
    LengthEncoding lengthEncoding = LengthEncoding::Shortest;
    /// Written in the length field instead of payload.size(), e.g. to
    /// announce more than is sent or to set the top bit of a 64-bit length.
    /// The length encoding then follows from this value unless forced.
    std::optional<std::uint64_t> announcedLength;
};

/// The bytes of one frame as `spec` describes it.
std::string buildFrame(const FrameSpec& spec);
/// A masked frame with a random key, the common case.
std::string frame(std::uint8_t opcode, std::string_view payload, bool fin = true);
/// The payload of a close frame: the code in network order, then the reason.
std::string closePayload(std::uint16_t code, std::string_view reason = {});

/// Sec-WebSocket-Accept for `key` (RFC 6455 §4.2.2), computed independently of
/// the library under test.
std::string expectedAcceptKey(std::string_view key);
/// A fresh Sec-WebSocket-Key: base64 of 16 random bytes.
std::string randomKey();

/// `size` random bytes.
std::string randomBytes(std::size_t size);
/// Random valid UTF-8 of exactly `size` bytes, mixing 1- to 4-byte characters.
std::string randomUtf8(std::size_t size);
/// Where two byte strings first differ, for failure messages that do not
/// print megabytes; "equal" when they do not.
std::string describeDifference(std::string_view expected, std::string_view actual);
/// Bytes as hex, cut after `limit` bytes.
std::string hex(std::string_view bytes, std::size_t limit = 64);

/// An HTTP request, kept as parts so tests can break any of them.
struct HttpRequest {
    std::string method = "GET";
    std::string target = "/";
    std::string version = "HTTP/1.1";
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    /// Replaces the first header called `name` (case-insensitive), or adds it.
    HttpRequest& set(std::string_view name, std::string_view value);
    /// Adds a header, even if one of that name is there.
    HttpRequest& add(std::string_view name, std::string_view value);
    /// Removes every header called `name`.
    HttpRequest& remove(std::string_view name);
    /// The first value of `name`, empty when absent.
    std::string header(std::string_view name) const;
    /// The request as bytes.
    std::string serialize() const;
};

/// A parsed HTTP response.
struct HttpResponse {
    /// The status line and the headers arrived in full.
    bool complete = false;
    std::string version;
    int status = 0;
    std::string reasonPhrase;
    std::vector<std::pair<std::string, std::string>> headers;
    /// The body of a refusal (by Content-Length, or up to EOF without one).
    std::string body;
    /// For a 101: bytes that came after the headers in the same reads. They
    /// stay in the client's buffer too, to be read as frames.
    std::string extra;
    /// The server closed the connection while or after responding.
    bool connectionClosed = false;

    /// The first value of `name` (case-insensitive), empty when absent.
    std::string header(std::string_view name) const;
    bool hasHeader(std::string_view name) const;
    /// Every value of `name`, in order.
    std::vector<std::string> headerValues(std::string_view name) const;
    /// Whether the comma-separated list in headers `name` has `token`
    /// (case-insensitive), as for `Connection: keep-alive, Upgrade`.
    bool hasToken(std::string_view name, std::string_view token) const;
    /// One line for failure messages.
    std::string describe() const;
};

/// What reading a frame gave.
enum class ReadStatus {
    Frame,   ///< A whole frame.
    Eof,     ///< The server closed TCP (read returned 0), possibly mid-frame.
    Reset,   ///< The connection was reset.
    Timeout, ///< Nothing (or no whole frame) within the timeout.
    Invalid, ///< The bytes cannot be a frame (e.g. a length over 2^63).
};

const char* readStatusName(ReadStatus status) noexcept;
std::ostream& operator<<(std::ostream& out, ReadStatus status);

/// One frame as the server sent it.
struct ReceivedFrame {
    ReadStatus status = ReadStatus::Timeout;
    bool fin = false;
    bool rsv1 = false;
    bool rsv2 = false;
    bool rsv3 = false;
    bool masked = false;
    /// The length was in its shortest form (RFC 6455 §5.2).
    bool canonicalLength = true;
    std::uint8_t opcode = 0;
    std::string payload; ///< Unmasked.

    bool isFrame() const noexcept { return status == ReadStatus::Frame; }
    bool isClose() const noexcept { return isFrame() && opcode == opcode::close; }
    /// The close code, 1005 when the payload has none.
    std::uint16_t closeCode() const noexcept;
    std::string closeReason() const;
    /// One line for failure messages.
    std::string describe() const;
};

/// A data message put together from its frames.
struct ReceivedMessage {
    ReadStatus status = ReadStatus::Timeout;
    std::uint8_t opcode = 0; ///< text or binary, from the first frame.
    std::string payload;
    std::size_t frameCount = 0;
    /// Control frames that came between the fragments.
    std::vector<ReceivedFrame> controlFrames;
    /// Set when a frame broke fragmentation rules or a control frame was
    /// seen first; the message then ends there.
    std::optional<ReceivedFrame> unexpected;

    bool ok() const noexcept { return status == ReadStatus::Frame && !unexpected; }
};

/// What the server did up to the end of the TCP connection.
struct TcpCloseResult {
    /// Read returned 0 (or the connection was reset) within the timeout.
    bool closed = false;
    bool reset = false;
    /// Frames read before EOF.
    std::vector<ReceivedFrame> frames;
    /// The first close frame among them.
    std::optional<ReceivedFrame> closeFrame;
    /// Bytes left over that were not a whole frame.
    std::string trailing;
    std::chrono::milliseconds elapsed{0};
};

/// A blocking-style client over a non-blocking TCP socket: every wait polls
/// with a timeout. While sending it keeps reading into its buffer, so a
/// server that echoes while a large message is sent can never deadlock the
/// test. Not thread-safe; one per thread.
///
/// Over TLS (startTls(), or every connect() when WSGATE_TEST_TLS=1, see
/// TlsTestMode.h) the same helpers carry their bytes through a TlsClient.
class RawClient {
public:
    RawClient() = default;
    ~RawClient();
    RawClient(RawClient&& other) noexcept;
    RawClient& operator=(RawClient&& other) noexcept;
    RawClient(const RawClient&) = delete;
    RawClient& operator=(const RawClient&) = delete;

    /// Connects to `host` (an IPv4 or IPv6 literal) and `port`; when
    /// WSGATE_TEST_TLS=1, also runs the TLS handshake with
    /// defaultTlsClientOptions() within `timeout`.
    bool connect(std::uint16_t port, std::string_view host = "127.0.0.1",
                 std::chrono::milliseconds timeout = defaultTimeout);
    /// connect() that never starts TLS, for tests of what the server does
    /// with bytes on its socket before any TLS.
    bool connectPlain(std::uint16_t port, std::string_view host = "127.0.0.1",
                      std::chrono::milliseconds timeout = defaultTimeout);
    /// Runs a TLS handshake on the connected socket; from then on every byte
    /// goes through TLS. On failure the TlsClient stays, to be looked at
    /// (tls()->errorString(), alertReceived()) or to go on with
    /// tls()->handshakeUntil().
    bool startTls(const TlsClientOptions& options);
    /// The TLS layer, null over plain TCP.
    TlsClient* tls() const noexcept { return tls_; }
    bool isOpen() const noexcept { return fd_ >= 0; }
    int fd() const noexcept { return fd_; }
    std::uint16_t port() const noexcept { return port_; }
    const std::string& host() const noexcept { return host_; }
    /// The timeout of sends (each read takes its own).
    void setTimeout(std::chrono::milliseconds timeout) noexcept { timeout_ = timeout; }

    /// Sends all of `bytes`. False when the connection failed or the send
    /// timed out (the server then stopped reading).
    bool send(std::string_view bytes);
    /// Sends `bytes` in pieces cut at `points` (offsets, ascending), pausing
    /// `pause` between pieces so that they arrive in separate reads.
    bool sendSplit(std::string_view bytes, const std::vector<std::size_t>& points,
                   std::chrono::milliseconds pause = std::chrono::milliseconds(2));
    /// Sends pieces of `chunkSize` bytes with a pause between them.
    bool sendChunked(std::string_view bytes, std::size_t chunkSize,
                     std::chrono::milliseconds pause = std::chrono::milliseconds(1));
    /// Sends one byte at a time with a pause between bytes.
    bool sendByteByByte(std::string_view bytes,
                        std::chrono::milliseconds pause = std::chrono::milliseconds(1));

    bool sendFrame(const FrameSpec& spec) { return send(buildFrame(spec)); }
    bool sendText(std::string_view payload, bool fin = true);
    bool sendBinary(std::string_view payload, bool fin = true);
    bool sendContinuation(std::string_view payload, bool fin);
    bool sendPing(std::string_view payload = {});
    bool sendPong(std::string_view payload = {});
    bool sendClose(std::uint16_t code, std::string_view reason = {});
    /// A close frame with no payload.
    bool sendEmptyClose();

    /// A default upgrade request for this connection: Host, Upgrade,
    /// Connection, a random Sec-WebSocket-Key and Sec-WebSocket-Version: 13.
    HttpRequest upgradeRequest(std::string_view target = "/") const;
    /// Sends `request` and reads the response.
    HttpResponse handshake(const HttpRequest& request,
                           std::chrono::milliseconds timeout = defaultTimeout);
    /// Reads one HTTP response. A 101 leaves what follows it in the buffer.
    HttpResponse readResponse(std::chrono::milliseconds timeout = defaultTimeout);
    /// A default handshake, CHECKed to succeed with the right accept key.
    bool upgrade(std::string_view target = "/");
    /// connect() then upgrade().
    bool open(std::uint16_t port, std::string_view host = "127.0.0.1");

    /// Reads one frame. A frame from the server that is masked is a failed
    /// CHECK (RFC 6455 §5.1: "A server MUST NOT mask any frames").
    ReceivedFrame readFrame(std::chrono::milliseconds timeout = defaultTimeout);
    /// Reads frames up to the end of one data message.
    ReceivedMessage readMessage(std::chrono::milliseconds timeout = defaultTimeout);

    /// CHECKs that the next message is `payload` with `opcode`, unfragmented
    /// or not, with no control frame in between. True when it was.
    bool expectMessage(std::uint8_t opcode, std::string_view payload,
                       std::chrono::milliseconds timeout = defaultTimeout);
    bool expectText(std::string_view payload, std::chrono::milliseconds timeout = defaultTimeout) {
        return expectMessage(opcode::text, payload, timeout);
    }
    bool expectBinary(std::string_view payload,
                      std::chrono::milliseconds timeout = defaultTimeout) {
        return expectMessage(opcode::binary, payload, timeout);
    }
    /// CHECKs that the next frame is a pong carrying `payload`.
    bool expectPong(std::string_view payload, std::chrono::milliseconds timeout = defaultTimeout);
    /// CHECKs that the next frame is a close frame with `code` (1005: no
    /// payload) and a valid payload, and returns it.
    ReceivedFrame expectClose(std::uint16_t code,
                              std::chrono::milliseconds timeout = defaultTimeout);
    /// Reads until the server closes TCP and CHECKs that it does within
    /// `timeout`. Frames read on the way are returned.
    TcpCloseResult expectTcpClosed(std::chrono::milliseconds timeout = defaultTimeout);
    /// Reads until EOF without CHECKing anything.
    TcpCloseResult readUntilClosed(std::chrono::milliseconds timeout = defaultTimeout);
    /// CHECKs that the close handshake of a failed connection goes as RFC
    /// 6455 §7.1.7 says: a close frame with `code` within `timeout`, then TCP
    /// closed by the server within serverCloseTimeout, with nothing after
    /// the close frame.
    bool expectFailure(std::uint16_t code, std::chrono::milliseconds timeout = defaultTimeout);
    /// True when nothing at all arrives for `duration` (and the connection
    /// stays open).
    bool quietFor(std::chrono::milliseconds duration);
    /// Raw bytes up to EOF or the timeout, buffered ones first.
    std::string readAll(std::chrono::milliseconds timeout = defaultTimeout, bool* eof = nullptr);

    /// Bytes read and not yet consumed.
    std::size_t buffered() const noexcept { return buffer_.size() - consumed_; }
    /// Shuts down the sending side (TCP FIN; over TLS, close_notify first).
    void shutdownWrite();
    /// Closes the socket.
    void close();
    /// Closes with RST instead of FIN.
    void abort();

private:
    enum class Fill { Data, Eof, Reset, Timeout };
    using Clock = std::chrono::steady_clock;

    Fill fill(Clock::time_point deadline);
    /// Reads whatever is readable now into the buffer, without waiting.
    void drainReadable();
    /// Parses a whole frame at the front of the buffer, if there is one.
    std::optional<ReceivedFrame> takeFrame(bool& invalid);
    std::string_view unread() const noexcept;
    void consume(std::size_t n);
    Fill fillFromTransport(Clock::time_point deadline);

    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::string host_;
    std::chrono::milliseconds timeout_ = defaultTimeout;
    std::string buffer_;
    std::size_t consumed_ = 0;
    bool eof_ = false;
    bool reset_ = false;
    // Null over plain TCP, which then keeps its direct path. tls_ is
    // transport_ when that is a TlsClient.
    std::unique_ptr<ClientTransport> transport_;
    TlsClient* tls_ = nullptr;
};

} // namespace wsgate::test
