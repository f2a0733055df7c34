#include "support/RawClient.h"

#include "support/TlsClient.h"
#include "support/TlsTestMode.h"
#include "support/Utf8.h"

#include <arpa/inet.h>
#include <errno.h>
#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <doctest/doctest.h>
#include <ostream>
#include <random>
#include <sstream>
#include <thread>

namespace wsgate::test {

namespace {

using Clock = std::chrono::steady_clock;

/// Every thread draws from its own generator, so that client threads of the
/// concurrency test need no lock.
std::mt19937_64& generator() {
    thread_local std::mt19937_64 engine{std::random_device{}()};
    return engine;
}

char lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                              [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
        s.remove_suffix(1);
    }
    return s;
}

int remainingMs(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    // Round up so that a deadline a fraction of a millisecond away still polls.
    return left.count() < 0 ? 0 : static_cast<int>(left.count()) + 1;
}

const char* opcodeName(std::uint8_t op) {
    switch (op) {
    case opcode::continuation:
        return "continuation";
    case opcode::text:
        return "text";
    case opcode::binary:
        return "binary";
    case opcode::close:
        return "close";
    case opcode::ping:
        return "ping";
    case opcode::pong:
        return "pong";
    default:
        return "reserved";
    }
}

} // namespace

std::string buildFrame(const FrameSpec& spec) {
    std::string out;
    const std::uint64_t length = spec.announcedLength.value_or(spec.payload.size());
    std::uint8_t b0 = static_cast<std::uint8_t>(spec.opcode & 0x0F);
    b0 |= spec.fin ? 0x80 : 0;
    b0 |= spec.rsv1 ? 0x40 : 0;
    b0 |= spec.rsv2 ? 0x20 : 0;
    b0 |= spec.rsv3 ? 0x10 : 0;
    out.push_back(static_cast<char>(b0));
    const std::uint8_t maskBit = spec.masked ? 0x80 : 0;
    LengthEncoding encoding = spec.lengthEncoding;
    if (encoding == LengthEncoding::Shortest) {
        encoding = length < 126     ? LengthEncoding::Shortest
                   : length < 65536 ? LengthEncoding::Bits16
                                    : LengthEncoding::Bits64;
    }
    switch (encoding) {
    case LengthEncoding::Shortest:
        out.push_back(static_cast<char>(maskBit | length));
        break;
    case LengthEncoding::Bits16:
        out.push_back(static_cast<char>(maskBit | 126));
        out.push_back(static_cast<char>((length >> 8) & 0xFF));
        out.push_back(static_cast<char>(length & 0xFF));
        break;
    case LengthEncoding::Bits64:
        out.push_back(static_cast<char>(maskBit | 127));
        for (int shift = 56; shift >= 0; shift -= 8) {
            out.push_back(static_cast<char>((length >> shift) & 0xFF));
        }
        break;
    }
    if (!spec.masked) {
        out += spec.payload;
        return out;
    }
    std::array<std::uint8_t, 4> key{};
    if (spec.maskKey) {
        key = *spec.maskKey;
    } else {
        const auto r = generator()();
        for (std::size_t i = 0; i < 4; ++i) {
            key[i] = static_cast<std::uint8_t>(r >> (8 * i));
        }
    }
    for (auto k : key) {
        out.push_back(static_cast<char>(k));
    }
    const std::size_t start = out.size();
    out += spec.payload;
    // A byte at a time on purpose: the library's word-wise unmasking is what
    // is under test, so this side stays as plain as the RFC's formula.
    for (std::size_t i = 0; i < spec.payload.size(); ++i) {
        out[start + i] = static_cast<char>(static_cast<std::uint8_t>(out[start + i]) ^ key[i % 4]);
    }
    return out;
}

std::string frame(std::uint8_t op, std::string_view payload, bool fin) {
    FrameSpec spec;
    spec.opcode = op;
    spec.payload = std::string(payload);
    spec.fin = fin;
    return buildFrame(spec);
}

std::string closePayload(std::uint16_t code, std::string_view reason) {
    std::string out;
    out.push_back(static_cast<char>(code >> 8));
    out.push_back(static_cast<char>(code & 0xFF));
    out += reason;
    return out;
}

std::string expectedAcceptKey(std::string_view key) {
    std::string input(key);
    input += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[20];
    mbedtls_sha1_ret(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
    unsigned char out[64];
    std::size_t written = 0;
    mbedtls_base64_encode(out, sizeof out, &written, digest, sizeof digest);
    return {reinterpret_cast<const char*>(out), written};
}

std::string randomKey() {
    const std::string raw = randomBytes(16);
    unsigned char out[64];
    std::size_t written = 0;
    mbedtls_base64_encode(out, sizeof out, &written,
                          reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
    return {reinterpret_cast<const char*>(out), written};
}

std::string randomBytes(std::size_t size) {
    std::string out(size, '\0');
    auto& engine = generator();
    std::size_t i = 0;
    while (i < size) {
        auto r = engine();
        for (int j = 0; j < 8 && i < size; ++j, ++i) {
            out[i] = static_cast<char>(r & 0xFF);
            r >>= 8;
        }
    }
    return out;
}

std::string randomUtf8(std::size_t size) {
    std::string out;
    out.reserve(size);
    auto& engine = generator();
    while (out.size() < size) {
        const std::size_t room = size - out.size();
        const std::size_t width = std::min<std::size_t>(room, 1 + engine() % 4);
        std::uint32_t cp = 0;
        switch (width) {
        case 1:
            cp = static_cast<std::uint32_t>(engine() % 0x80);
            break;
        case 2:
            cp = 0x80 + static_cast<std::uint32_t>(engine() % (0x800 - 0x80));
            break;
        case 3:
            do {
                cp = 0x800 + static_cast<std::uint32_t>(engine() % (0x10000 - 0x800));
            } while (cp >= 0xD800 && cp <= 0xDFFF);
            break;
        default:
            cp = 0x10000 + static_cast<std::uint32_t>(engine() % (0x110000 - 0x10000));
            break;
        }
        out += encodeUtf8(cp);
    }
    return out;
}

std::string describeDifference(std::string_view expected, std::string_view actual) {
    if (expected == actual) {
        return "equal";
    }
    std::ostringstream s;
    const std::size_t common = std::min(expected.size(), actual.size());
    std::size_t at = 0;
    while (at < common && expected[at] == actual[at]) {
        ++at;
    }
    s << "expected " << expected.size() << " bytes, got " << actual.size()
      << "; first difference at offset " << at;
    if (at < common) {
        s << " (expected " << hex(expected.substr(at), 16) << ", got " << hex(actual.substr(at), 16)
          << ")";
    }
    return s.str();
}

std::string hex(std::string_view bytes, std::size_t limit) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < bytes.size() && i < limit; ++i) {
        const auto b = static_cast<std::uint8_t>(bytes[i]);
        if (i != 0) {
            out.push_back(' ');
        }
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 0xF]);
    }
    if (bytes.size() > limit) {
        out += " …";
    }
    return out;
}

// ---------------------------------------------------------------- HTTP

HttpRequest& HttpRequest::set(std::string_view name, std::string_view value) {
    for (auto& [n, v] : headers) {
        if (equalsIgnoreCase(n, name)) {
            v = std::string(value);
            return *this;
        }
    }
    return add(name, value);
}

HttpRequest& HttpRequest::add(std::string_view name, std::string_view value) {
    headers.emplace_back(std::string(name), std::string(value));
    return *this;
}

HttpRequest& HttpRequest::remove(std::string_view name) {
    std::erase_if(headers, [&](const auto& h) { return equalsIgnoreCase(h.first, name); });
    return *this;
}

std::string HttpRequest::header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
        if (equalsIgnoreCase(n, name)) {
            return v;
        }
    }
    return {};
}

std::string HttpRequest::serialize() const {
    std::string out = method + " " + target + " " + version + "\r\n";
    for (const auto& [n, v] : headers) {
        out += n + ": " + v + "\r\n";
    }
    out += "\r\n";
    out += body;
    return out;
}

std::string HttpResponse::header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
        if (equalsIgnoreCase(n, name)) {
            return v;
        }
    }
    return {};
}

bool HttpResponse::hasHeader(std::string_view name) const {
    return std::any_of(headers.begin(), headers.end(),
                       [&](const auto& h) { return equalsIgnoreCase(h.first, name); });
}

std::vector<std::string> HttpResponse::headerValues(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& [n, v] : headers) {
        if (equalsIgnoreCase(n, name)) {
            out.push_back(v);
        }
    }
    return out;
}

bool HttpResponse::hasToken(std::string_view name, std::string_view token) const {
    for (const auto& value : headerValues(name)) {
        std::string_view rest = value;
        while (!rest.empty()) {
            const auto comma = rest.find(',');
            if (equalsIgnoreCase(trim(rest.substr(0, comma)), token)) {
                return true;
            }
            if (comma == std::string_view::npos) {
                break;
            }
            rest.remove_prefix(comma + 1);
        }
    }
    return false;
}

std::string HttpResponse::describe() const {
    if (!complete) {
        return connectionClosed ? "no complete response before EOF"
                                : "no complete response in time";
    }
    std::string out = version + " " + std::to_string(status) + " " + reasonPhrase;
    for (const auto& [n, v] : headers) {
        out += " | " + n + ": " + v;
    }
    if (!body.empty()) {
        out += " | body: " + body.substr(0, 200);
    }
    return out;
}

// ---------------------------------------------------------------- frames

const char* readStatusName(ReadStatus status) noexcept {
    switch (status) {
    case ReadStatus::Frame:
        return "frame";
    case ReadStatus::Eof:
        return "EOF";
    case ReadStatus::Reset:
        return "connection reset";
    case ReadStatus::Timeout:
        return "timeout";
    case ReadStatus::Invalid:
        return "invalid bytes";
    }
    return "?";
}

std::ostream& operator<<(std::ostream& out, ReadStatus status) {
    return out << readStatusName(status);
}

std::uint16_t ReceivedFrame::closeCode() const noexcept {
    if (payload.size() < 2) {
        return 1005;
    }
    return static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                      static_cast<std::uint8_t>(payload[1]));
}

std::string ReceivedFrame::closeReason() const {
    return payload.size() > 2 ? payload.substr(2) : std::string();
}

std::string ReceivedFrame::describe() const {
    if (!isFrame()) {
        return readStatusName(status);
    }
    std::ostringstream s;
    s << opcodeName(opcode) << " frame (opcode " << int(opcode) << ", fin " << fin << ", rsv "
      << rsv1 << rsv2 << rsv3 << (masked ? ", MASKED" : "") << ", " << payload.size() << " bytes";
    if (opcode == opcode::close) {
        s << ", code " << closeCode() << ", reason \"" << closeReason().substr(0, 60) << "\"";
    } else {
        s << ": " << hex(payload, 24);
    }
    s << ")";
    return s.str();
}

// ---------------------------------------------------------------- RawClient

RawClient::~RawClient() {
    close();
}

RawClient::RawClient(RawClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), port_(other.port_), host_(std::move(other.host_)),
      timeout_(other.timeout_), buffer_(std::move(other.buffer_)),
      consumed_(std::exchange(other.consumed_, 0)), eof_(other.eof_), reset_(other.reset_),
      transport_(std::move(other.transport_)), tls_(std::exchange(other.tls_, nullptr)) {
}

RawClient& RawClient::operator=(RawClient&& other) noexcept {
    if (this != &other) {
        close();
        fd_ = std::exchange(other.fd_, -1);
        port_ = other.port_;
        host_ = std::move(other.host_);
        timeout_ = other.timeout_;
        buffer_ = std::move(other.buffer_);
        consumed_ = std::exchange(other.consumed_, 0);
        eof_ = other.eof_;
        reset_ = other.reset_;
        transport_ = std::move(other.transport_);
        tls_ = std::exchange(other.tls_, nullptr);
    }
    return *this;
}

bool RawClient::connect(std::uint16_t port, std::string_view host,
                        std::chrono::milliseconds timeout) {
    if (!connectPlain(port, host, timeout)) {
        return false;
    }
    if (!tlsTestMode()) {
        return true;
    }
    TlsClientOptions options = defaultTlsClientOptions();
    options.timeout = timeout;
    options.session = testSessionFor(port);
    if (!startTls(options)) {
        // As a failed TCP connect: the caller has no connection to use.
        close();
        return false;
    }
    rememberTestSession(port, tls_->saveSession());
    return true;
}

bool RawClient::connectPlain(std::uint16_t port, std::string_view host,
                             std::chrono::milliseconds timeout) {
    close();
    buffer_.clear();
    consumed_ = 0;
    eof_ = false;
    reset_ = false;
    port_ = port;
    host_ = std::string(host);

    sockaddr_storage address{};
    socklen_t addressSize = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    if (inet_pton(AF_INET, host_.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        addressSize = sizeof *v4;
    } else if (inet_pton(AF_INET6, host_.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        addressSize = sizeof *v6;
    } else {
        return false;
    }
    fd_ = ::socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
        return false;
    }
    // Byte-by-byte tests need each send() to leave as its own segment.
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), addressSize) == 0) {
        return true;
    }
    if (errno != EINPROGRESS) {
        close();
        return false;
    }
    pollfd p{fd_, POLLOUT, 0};
    const auto deadline = Clock::now() + timeout;
    int rc = 0;
    do {
        rc = ::poll(&p, 1, remainingMs(deadline));
    } while (rc < 0 && errno == EINTR);
    int error = 0;
    socklen_t errorSize = sizeof error;
    if (rc <= 0 || getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &errorSize) != 0 || error != 0) {
        close();
        return false;
    }
    return true;
}

bool RawClient::startTls(const TlsClientOptions& options) {
    if (fd_ < 0 || transport_) {
        return false;
    }
    auto tls = std::make_unique<TlsClient>();
    TlsClient* raw = tls.get();
    transport_ = std::move(tls);
    tls_ = raw;
    return raw->handshake(fd_, options);
}

bool RawClient::send(std::string_view bytes) {
    if (fd_ < 0) {
        return false;
    }
    if (transport_) {
        return transport_->send(bytes, timeout_);
    }
    auto deadline = Clock::now() + timeout_;
    std::size_t offset = 0;
    while (offset < bytes.size()) {
        const ssize_t n = ::send(fd_, bytes.data() + offset, bytes.size() - offset, MSG_NOSIGNAL);
        if (n > 0) {
            offset += static_cast<std::size_t>(n);
            // The timeout bounds a stall, not the whole of a large send.
            deadline = Clock::now() + timeout_;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            // Keep reading while the socket is full: the server may be
            // blocked writing its echo of what we already sent.
            const bool wantRead = !eof_ && !reset_;
            pollfd p{fd_, static_cast<short>(POLLOUT | (wantRead ? POLLIN : 0)), 0};
            const int rc = ::poll(&p, 1, remainingMs(deadline));
            if (rc < 0 && errno == EINTR) {
                continue;
            }
            if (rc <= 0) {
                return false;
            }
            if ((p.revents & POLLIN) != 0 && wantRead) {
                drainReadable();
            }
            continue;
        }
        return false;
    }
    return true;
}

bool RawClient::sendSplit(std::string_view bytes, const std::vector<std::size_t>& points,
                          std::chrono::milliseconds pause) {
    std::size_t start = 0;
    for (std::size_t point : points) {
        point = std::min(point, bytes.size());
        if (point <= start) {
            continue;
        }
        if (!send(bytes.substr(start, point - start))) {
            return false;
        }
        start = point;
        std::this_thread::sleep_for(pause);
    }
    return send(bytes.substr(start));
}

bool RawClient::sendChunked(std::string_view bytes, std::size_t chunkSize,
                            std::chrono::milliseconds pause) {
    std::vector<std::size_t> points;
    for (std::size_t at = chunkSize; at < bytes.size(); at += chunkSize) {
        points.push_back(at);
    }
    return sendSplit(bytes, points, pause);
}

bool RawClient::sendByteByByte(std::string_view bytes, std::chrono::milliseconds pause) {
    return sendChunked(bytes, 1, pause);
}

bool RawClient::sendText(std::string_view payload, bool fin) {
    return send(frame(opcode::text, payload, fin));
}

bool RawClient::sendBinary(std::string_view payload, bool fin) {
    return send(frame(opcode::binary, payload, fin));
}

bool RawClient::sendContinuation(std::string_view payload, bool fin) {
    return send(frame(opcode::continuation, payload, fin));
}

bool RawClient::sendPing(std::string_view payload) {
    return send(frame(opcode::ping, payload));
}

bool RawClient::sendPong(std::string_view payload) {
    return send(frame(opcode::pong, payload));
}

bool RawClient::sendClose(std::uint16_t code, std::string_view reason) {
    return send(frame(opcode::close, closePayload(code, reason)));
}

bool RawClient::sendEmptyClose() {
    return send(frame(opcode::close, {}));
}

HttpRequest RawClient::upgradeRequest(std::string_view target) const {
    HttpRequest request;
    request.target = std::string(target);
    const bool v6 = host_.find(':') != std::string::npos;
    request.add("Host", (v6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_));
    request.add("Upgrade", "websocket");
    request.add("Connection", "Upgrade");
    request.add("Sec-WebSocket-Key", randomKey());
    request.add("Sec-WebSocket-Version", "13");
    return request;
}

HttpResponse RawClient::handshake(const HttpRequest& request, std::chrono::milliseconds timeout) {
    // A server that refuses early may close before taking all of a large
    // request; what it answered is still there to read.
    send(request.serialize());
    return readResponse(timeout);
}

HttpResponse RawClient::readResponse(std::chrono::milliseconds timeout) {
    HttpResponse response;
    const auto deadline = Clock::now() + timeout;
    std::size_t end = std::string_view::npos;
    while ((end = unread().find("\r\n\r\n")) == std::string_view::npos) {
        const Fill r = fill(deadline);
        if (r != Fill::Data) {
            response.connectionClosed = (r == Fill::Eof || r == Fill::Reset);
            return response;
        }
    }
    const std::string head(unread().substr(0, end));
    consume(end + 4);

    std::string_view rest = head;
    const auto lineEnd = rest.find("\r\n");
    const std::string_view statusLine = rest.substr(0, lineEnd);
    rest = lineEnd == std::string_view::npos ? std::string_view() : rest.substr(lineEnd + 2);
    const auto space1 = statusLine.find(' ');
    if (space1 == std::string_view::npos) {
        return response;
    }
    response.version = std::string(statusLine.substr(0, space1));
    const auto space2 = statusLine.find(' ', space1 + 1);
    const std::string code(statusLine.substr(space1 + 1, space2 - space1 - 1));
    if (code.size() != 3 || !std::all_of(code.begin(), code.end(), ::isdigit)) {
        return response;
    }
    response.status = std::stoi(code);
    if (space2 != std::string_view::npos) {
        response.reasonPhrase = std::string(statusLine.substr(space2 + 1));
    }
    while (!rest.empty()) {
        const auto eol = rest.find("\r\n");
        const std::string_view line = rest.substr(0, eol);
        rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 2);
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) {
            return response; // not a header line: an incomplete (broken) response
        }
        response.headers.emplace_back(std::string(line.substr(0, colon)),
                                      std::string(trim(line.substr(colon + 1))));
    }
    response.complete = true;

    if (response.status == 101) {
        response.extra = std::string(unread());
        return response;
    }
    if (response.hasHeader("Content-Length")) {
        const auto length = std::stoull(response.header("Content-Length"));
        while (buffered() < length) {
            const Fill r = fill(deadline);
            if (r != Fill::Data) {
                response.connectionClosed = (r == Fill::Eof || r == Fill::Reset);
                break;
            }
        }
        const std::size_t take = std::min<std::size_t>(length, buffered());
        response.body = std::string(unread().substr(0, take));
        consume(take);
    } else {
        bool eof = false;
        response.body = readAll(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()), &eof);
        response.connectionClosed = eof;
    }
    return response;
}

bool RawClient::upgrade(std::string_view target) {
    const HttpRequest request = upgradeRequest(target);
    const HttpResponse response = handshake(request);
    INFO("response: ", response.describe());
    CHECK(response.status == 101);
    CHECK(response.header("Sec-WebSocket-Accept") ==
          expectedAcceptKey(request.header("Sec-WebSocket-Key")));
    CHECK(response.hasToken("Upgrade", "websocket"));
    CHECK(response.hasToken("Connection", "upgrade"));
    return response.status == 101 && response.header("Sec-WebSocket-Accept") ==
                                         expectedAcceptKey(request.header("Sec-WebSocket-Key"));
}

bool RawClient::open(std::uint16_t port, std::string_view host) {
    const bool connected = connect(port, host);
    CHECK_MESSAGE(connected, "cannot connect to ", host, " port ", port);
    return connected && upgrade();
}

ReceivedFrame RawClient::readFrame(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        bool invalid = false;
        if (auto f = takeFrame(invalid)) {
            // RFC 6455 §5.1: a server MUST NOT mask any frames.
            CHECK_MESSAGE(!f->masked, "the server sent a masked frame: ", f->describe());
            // RFC 6455 §5.2: the minimal number of bytes MUST be used for the length.
            CHECK_MESSAGE(f->canonicalLength,
                          "the server sent a non-canonical length: ", f->describe());
            return std::move(*f);
        }
        if (invalid) {
            ReceivedFrame f;
            f.status = ReadStatus::Invalid;
            CHECK_MESSAGE(false, "the server sent bytes that are not a frame: ", hex(unread()));
            return f;
        }
        ReceivedFrame f;
        switch (fill(deadline)) {
        case Fill::Data:
            continue;
        case Fill::Eof:
            f.status = ReadStatus::Eof;
            return f;
        case Fill::Reset:
            f.status = ReadStatus::Reset;
            return f;
        case Fill::Timeout:
            f.status = ReadStatus::Timeout;
            return f;
        }
    }
}

ReceivedMessage RawClient::readMessage(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    ReceivedMessage message;
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        ReceivedFrame f = readFrame(std::max(left, std::chrono::milliseconds(0)));
        message.status = f.status;
        if (!f.isFrame()) {
            return message;
        }
        const bool control = (f.opcode & 0x8) != 0;
        if (message.frameCount == 0) {
            if (f.opcode != opcode::text && f.opcode != opcode::binary) {
                message.unexpected = std::move(f);
                return message;
            }
            message.opcode = f.opcode;
        } else if (control) {
            message.controlFrames.push_back(std::move(f));
            continue;
        } else if (f.opcode != opcode::continuation) {
            // RFC 6455 §5.4: fragments after the first are continuations.
            message.unexpected = std::move(f);
            return message;
        }
        ++message.frameCount;
        message.payload += f.payload;
        if (f.fin) {
            return message;
        }
    }
}

bool RawClient::expectMessage(std::uint8_t op, std::string_view payload,
                              std::chrono::milliseconds timeout) {
    const ReceivedMessage m = readMessage(timeout);
    INFO("expected a ", opcodeName(op), " message of ", payload.size(), " bytes");
    CHECK_MESSAGE(m.status == ReadStatus::Frame, "read ended with ", readStatusName(m.status));
    CHECK_MESSAGE(!m.unexpected,
                  "unexpected frame: ", m.unexpected ? m.unexpected->describe() : std::string());
    CHECK_MESSAGE(m.controlFrames.empty(), m.controlFrames.size(),
                  " control frame(s) inside the message, first: ",
                  m.controlFrames.empty() ? std::string() : m.controlFrames[0].describe());
    const bool ok = m.ok() && m.opcode == op && m.payload == payload && m.controlFrames.empty();
    if (m.ok()) {
        CHECK(int(m.opcode) == int(op));
        CHECK_MESSAGE(m.payload == payload, describeDifference(payload, m.payload));
    }
    return ok;
}

bool RawClient::expectPong(std::string_view payload, std::chrono::milliseconds timeout) {
    const ReceivedFrame f = readFrame(timeout);
    INFO("got: ", f.describe());
    CHECK(f.isFrame());
    CHECK(int(f.opcode) == int(opcode::pong));
    CHECK(f.fin);
    CHECK_MESSAGE(f.payload == payload, describeDifference(payload, f.payload));
    return f.isFrame() && f.opcode == opcode::pong && f.fin && f.payload == payload;
}

ReceivedFrame RawClient::expectClose(std::uint16_t code, std::chrono::milliseconds timeout) {
    ReceivedFrame f = readFrame(timeout);
    INFO("expected close ", code, ", got: ", f.describe());
    CHECK(f.isClose());
    if (f.isClose()) {
        CHECK(f.fin);
        CHECK_FALSE((f.rsv1 || f.rsv2 || f.rsv3));
        // RFC 6455 §5.5: control payloads fit 125 bytes; §5.5.1: a body
        // starts with a 2-byte code, and the reason is UTF-8.
        CHECK(f.payload.size() <= 125);
        CHECK(f.payload.size() != 1);
        CHECK(isValidUtf8(f.closeReason()));
        if (code == 1005) {
            CHECK(f.payload.empty());
        } else {
            CHECK(f.closeCode() == code);
        }
    }
    return f;
}

TcpCloseResult RawClient::readUntilClosed(std::chrono::milliseconds timeout) {
    TcpCloseResult result;
    const auto start = Clock::now();
    const auto deadline = start + timeout;
    for (;;) {
        bool invalid = false;
        if (auto f = takeFrame(invalid)) {
            if (f->isClose() && !result.closeFrame) {
                result.closeFrame = *f;
            }
            result.frames.push_back(std::move(*f));
            continue;
        }
        if (invalid) {
            result.trailing = std::string(unread());
            consume(buffered());
        }
        const Fill r = fill(deadline);
        if (r == Fill::Data) {
            continue;
        }
        result.closed = (r == Fill::Eof || r == Fill::Reset);
        result.reset = (r == Fill::Reset);
        result.trailing += std::string(unread());
        consume(buffered());
        break;
    }
    result.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    return result;
}

TcpCloseResult RawClient::expectTcpClosed(std::chrono::milliseconds timeout) {
    TcpCloseResult result = readUntilClosed(timeout);
    CHECK_MESSAGE(result.closed, "the server did not close TCP within ", timeout.count(), " ms");
    for (const auto& f : result.frames) {
        CHECK_MESSAGE(!f.masked, "the server sent a masked frame: ", f.describe());
    }
    return result;
}

bool RawClient::expectFailure(std::uint16_t code, std::chrono::milliseconds timeout) {
    const ReceivedFrame close = expectClose(code, timeout);
    // RFC 6455 §7.1.7: having failed the connection, the server closes TCP
    // itself; it does not wait for our close frame, and sends nothing more.
    const TcpCloseResult rest = expectTcpClosed(serverCloseTimeout);
    CHECK_MESSAGE(rest.frames.empty(), "frames after the close frame, first: ",
                  rest.frames.empty() ? std::string() : rest.frames[0].describe());
    CHECK_MESSAGE(rest.trailing.empty(), "bytes after the close frame: ", hex(rest.trailing));
    return close.isClose() && (code == 1005 || close.closeCode() == code) && rest.closed &&
           rest.frames.empty();
}

bool RawClient::quietFor(std::chrono::milliseconds duration) {
    if (buffered() != 0) {
        return false;
    }
    return fill(Clock::now() + duration) == Fill::Timeout;
}

std::string RawClient::readAll(std::chrono::milliseconds timeout, bool* eof) {
    const auto deadline = Clock::now() + timeout;
    Fill r = Fill::Data;
    while ((r = fill(deadline)) == Fill::Data) {
    }
    if (eof != nullptr) {
        *eof = (r == Fill::Eof || r == Fill::Reset);
    }
    std::string out(unread());
    consume(buffered());
    return out;
}

void RawClient::shutdownWrite() {
    if (transport_) {
        transport_->shutdownWrite();
    } else if (fd_ >= 0) {
        ::shutdown(fd_, SHUT_WR);
    }
}

void RawClient::close() {
    // The transport refers to the socket, so it goes first.
    transport_.reset();
    tls_ = nullptr;
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
}

void RawClient::abort() {
    if (fd_ >= 0) {
        linger l{1, 0};
        setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close();
    }
}

RawClient::Fill RawClient::fill(Clock::time_point deadline) {
    if (transport_) {
        return fillFromTransport(deadline);
    }
    for (;;) {
        if (reset_) {
            return Fill::Reset;
        }
        if (eof_ || fd_ < 0) {
            return Fill::Eof;
        }
        pollfd p{fd_, POLLIN, 0};
        const int rc = ::poll(&p, 1, remainingMs(deadline));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            return Fill::Timeout;
        }
        const std::size_t before = buffer_.size();
        drainReadable();
        if (buffer_.size() > before) {
            return Fill::Data;
        }
        if (Clock::now() >= deadline && !eof_ && !reset_) {
            return Fill::Timeout;
        }
    }
}

RawClient::Fill RawClient::fillFromTransport(Clock::time_point deadline) {
    if (reset_) {
        return Fill::Reset;
    }
    if (eof_ || fd_ < 0) {
        return Fill::Eof;
    }
    switch (transport_->receive(buffer_, deadline)) {
    case ClientTransport::Status::Data:
        return Fill::Data;
    case ClientTransport::Status::Eof:
        eof_ = true;
        return Fill::Eof;
    case ClientTransport::Status::Reset:
        reset_ = true;
        return Fill::Reset;
    case ClientTransport::Status::Timeout:
        break;
    }
    return Fill::Timeout;
}

void RawClient::drainReadable() {
    constexpr std::size_t chunk = 256 * 1024;
    for (;;) {
        const std::size_t old = buffer_.size();
        buffer_.resize(old + chunk);
        const ssize_t n = ::recv(fd_, buffer_.data() + old, chunk, MSG_DONTWAIT);
        buffer_.resize(old + (n > 0 ? static_cast<std::size_t>(n) : 0));
        if (n > 0) {
            if (static_cast<std::size_t>(n) < chunk) {
                return;
            }
            continue;
        }
        if (n == 0) {
            eof_ = true;
            return;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            reset_ = true;
        }
        return;
    }
}

std::optional<ReceivedFrame> RawClient::takeFrame(bool& invalid) {
    invalid = false;
    const std::string_view in = unread();
    if (in.size() < 2) {
        return std::nullopt;
    }
    const auto b0 = static_cast<std::uint8_t>(in[0]);
    const auto b1 = static_cast<std::uint8_t>(in[1]);
    ReceivedFrame f;
    f.status = ReadStatus::Frame;
    f.fin = (b0 & 0x80) != 0;
    f.rsv1 = (b0 & 0x40) != 0;
    f.rsv2 = (b0 & 0x20) != 0;
    f.rsv3 = (b0 & 0x10) != 0;
    f.opcode = b0 & 0x0F;
    f.masked = (b1 & 0x80) != 0;
    std::uint64_t length = b1 & 0x7F;
    std::size_t header = 2;
    if (length == 126) {
        if (in.size() < 4) {
            return std::nullopt;
        }
        length = (std::uint64_t{static_cast<std::uint8_t>(in[2])} << 8) |
                 static_cast<std::uint8_t>(in[3]);
        header = 4;
        f.canonicalLength = length >= 126;
    } else if (length == 127) {
        if (in.size() < 10) {
            return std::nullopt;
        }
        length = 0;
        for (std::size_t i = 2; i < 10; ++i) {
            length = (length << 8) | static_cast<std::uint8_t>(in[i]);
        }
        header = 10;
        f.canonicalLength = length > 0xFFFF;
    }
    // Nothing this suite sends comes back bigger; more is a broken stream.
    constexpr std::uint64_t sanityLimit = 256ULL * 1024 * 1024;
    if (length > sanityLimit) {
        invalid = true;
        return std::nullopt;
    }
    std::array<std::uint8_t, 4> key{};
    if (f.masked) {
        if (in.size() < header + 4) {
            return std::nullopt;
        }
        for (std::size_t i = 0; i < 4; ++i) {
            key[i] = static_cast<std::uint8_t>(in[header + i]);
        }
        header += 4;
    }
    if (in.size() - header < length) {
        return std::nullopt;
    }
    f.payload = std::string(in.substr(header, static_cast<std::size_t>(length)));
    if (f.masked) {
        for (std::size_t i = 0; i < f.payload.size(); ++i) {
            f.payload[i] = static_cast<char>(static_cast<std::uint8_t>(f.payload[i]) ^ key[i % 4]);
        }
    }
    consume(header + static_cast<std::size_t>(length));
    return f;
}

std::string_view RawClient::unread() const noexcept {
    return std::string_view(buffer_).substr(consumed_);
}

void RawClient::consume(std::size_t n) {
    consumed_ += n;
    if (consumed_ >= buffer_.size()) {
        buffer_.clear();
        consumed_ = 0;
    } else if (consumed_ > 1024 * 1024 && consumed_ * 2 > buffer_.size()) {
        buffer_.erase(0, consumed_);
        consumed_ = 0;
    }
}

} // namespace wsgate::test
