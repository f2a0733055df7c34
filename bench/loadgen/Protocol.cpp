#include "Protocol.h"

#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <sys/random.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>

namespace wsgate::bench {

namespace {

constexpr std::string_view acceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

std::uint64_t rotl(std::uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) !=
            std::tolower(static_cast<unsigned char>(b[i]))) {
            return false;
        }
    }
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
        s.remove_suffix(1);
    }
    return s;
}

// True when the comma-separated list holds the token (RFC 7230 §7).
bool listHasToken(std::string_view list, std::string_view token) {
    while (!list.empty()) {
        std::size_t comma = list.find(',');
        if (equalsIgnoreCase(trim(list.substr(0, comma)), token)) {
            return true;
        }
        if (comma == std::string_view::npos) {
            break;
        }
        list.remove_prefix(comma + 1);
    }
    return false;
}

} // namespace

void ByteBuffer::release() {
    data_.reset();
    begin_ = end_ = capacity_ = 0;
}

std::uint8_t* ByteBuffer::grow(std::size_t n) {
    if (end_ + n > capacity_) {
        // Move the live bytes to the front first; reallocate only if that is not enough.
        if (begin_ > 0) {
            std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
            end_ -= begin_;
            begin_ = 0;
        }
        if (end_ + n > capacity_) {
            std::size_t capacity = std::max({capacity_ * 2, end_ + n, std::size_t{256}});
            auto bigger = std::make_unique_for_overwrite<std::uint8_t[]>(capacity);
            if (end_ > 0) {
                std::memcpy(bigger.get(), data_.get(), end_);
            }
            data_ = std::move(bigger);
            capacity_ = capacity;
        }
    }
    std::uint8_t* at = data_.get() + end_;
    end_ += n;
    return at;
}

void ByteBuffer::append(const std::uint8_t* bytes, std::size_t n) {
    if (n > 0) {
        std::memcpy(grow(n), bytes, n);
    }
}

void ByteBuffer::consume(std::size_t n) {
    begin_ += n;
    if (begin_ == end_) {
        begin_ = end_ = 0;
    }
}

Random::Random() {
    // getrandom() on a small buffer does not fail short once the pool is up.
    if (getrandom(state_.data(), sizeof(state_), 0) != static_cast<ssize_t>(sizeof(state_))) {
        std::perror("loadgen: getrandom");
        std::exit(1);
    }
    // An all-zero state would never leave zero.
    state_[0] |= 1;
}

std::uint64_t Random::next() {
    std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
}

HandshakeKey makeHandshakeKey(Random& random) {
    std::array<std::uint8_t, 16> nonce{};
    std::uint64_t a = random.next();
    std::uint64_t b = random.next();
    std::memcpy(nonce.data(), &a, 8);
    std::memcpy(nonce.data() + 8, &b, 8);

    HandshakeKey result;
    std::array<unsigned char, 32> text{};
    std::size_t written = 0;
    mbedtls_base64_encode(text.data(), text.size(), &written, nonce.data(), nonce.size());
    std::memcpy(result.key.data(), text.data(), result.key.size());

    // RFC 6455 §4.2.2: base64(SHA-1(key + GUID)).
    std::array<unsigned char, 24 + acceptGuid.size()> input{};
    std::memcpy(input.data(), result.key.data(), result.key.size());
    std::memcpy(input.data() + result.key.size(), acceptGuid.data(), acceptGuid.size());
    std::array<unsigned char, 20> digest{};
    mbedtls_sha1_ret(input.data(), input.size(), digest.data());
    mbedtls_base64_encode(text.data(), text.size(), &written, digest.data(), digest.size());
    std::memcpy(result.accept.data(), text.data(), result.accept.size());
    return result;
}

std::string makeUpgradeRequest(std::string_view host, std::uint16_t port, std::string_view path,
                               std::string_view key) {
    std::string request;
    request.reserve(256);
    request += "GET ";
    request += path;
    request += " HTTP/1.1\r\nHost: ";
    request += host;
    request += ':';
    request += std::to_string(port);
    request += "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ";
    request += key;
    request += "\r\nSec-WebSocket-Version: 13\r\n\r\n";
    return request;
}

const char* checkUpgradeResponse(std::string_view head, std::string_view expectedAccept) {
    std::size_t lineEnd = head.find("\r\n");
    std::string_view status = head.substr(0, lineEnd);
    if (!status.starts_with("HTTP/1.1 101")) {
        return "status is not 101";
    }
    bool upgrade = false;
    bool connection = false;
    bool accept = false;
    head.remove_prefix(lineEnd + 2);
    while (!head.empty()) {
        lineEnd = head.find("\r\n");
        std::string_view line = head.substr(0, lineEnd);
        head.remove_prefix(lineEnd == std::string_view::npos ? head.size() : lineEnd + 2);
        if (line.empty()) {
            break;
        }
        std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) {
            return "malformed header line";
        }
        std::string_view name = line.substr(0, colon);
        std::string_view value = trim(line.substr(colon + 1));
        if (equalsIgnoreCase(name, "upgrade")) {
            upgrade = equalsIgnoreCase(value, "websocket");
        } else if (equalsIgnoreCase(name, "connection")) {
            connection = listHasToken(value, "upgrade");
        } else if (equalsIgnoreCase(name, "sec-websocket-accept")) {
            accept = value == expectedAccept;
            if (!accept) {
                return "wrong Sec-WebSocket-Accept";
            }
        } else if (equalsIgnoreCase(name, "sec-websocket-extensions")) {
            // RFC 6455 §4.1: an extension the client did not offer fails the connection.
            return "extension not requested";
        } else if (equalsIgnoreCase(name, "sec-websocket-protocol")) {
            // Same rule for a subprotocol the client did not offer.
            return "subprotocol not requested";
        }
    }
    if (!upgrade) {
        return "no Upgrade: websocket";
    }
    if (!connection) {
        return "no Connection: upgrade";
    }
    if (!accept) {
        return "no Sec-WebSocket-Accept";
    }
    return nullptr;
}

void maskCopy(std::uint8_t* dst, const std::uint8_t* src, std::size_t length,
              std::uint32_t maskKey) {
    std::array<std::uint8_t, 8> key{};
    std::memcpy(key.data(), &maskKey, 4);
    std::memcpy(key.data() + 4, &maskKey, 4);
    std::uint64_t wide = 0;
    std::memcpy(&wide, key.data(), 8);
    std::size_t i = 0;
    for (; i + 8 <= length; i += 8) {
        std::uint64_t word = 0;
        std::memcpy(&word, src + i, 8);
        word ^= wide;
        std::memcpy(dst + i, &word, 8);
    }
    for (; i < length; ++i) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

std::size_t writeFrameHeader(std::uint8_t* header, std::uint8_t opcode, std::size_t length,
                             std::uint32_t maskKey) {
    std::size_t headerLength = 2;
    header[0] = static_cast<std::uint8_t>(0x80 | opcode);
    if (length < 126) {
        header[1] = static_cast<std::uint8_t>(0x80 | length);
    } else if (length <= 0xFFFF) {
        header[1] = 0x80 | 126;
        header[2] = static_cast<std::uint8_t>(length >> 8);
        header[3] = static_cast<std::uint8_t>(length);
        headerLength = 4;
    } else {
        header[1] = 0x80 | 127;
        for (int i = 0; i < 8; ++i) {
            header[2 + i] = static_cast<std::uint8_t>(std::uint64_t{length} >> (56 - 8 * i));
        }
        headerLength = 10;
    }
    std::memcpy(header + headerLength, &maskKey, 4);
    return headerLength + 4;
}

void appendFrame(ByteBuffer& out, std::uint8_t opcode, const std::uint8_t* payload,
                 std::size_t length, std::uint32_t maskKey) {
    std::array<std::uint8_t, maxFrameHeader> header{};
    std::size_t headerLength = writeFrameHeader(header.data(), opcode, length, maskKey);
    std::uint8_t* frame = out.grow(headerLength + length);
    std::memcpy(frame, header.data(), headerLength);
    maskCopy(frame + headerLength, payload, length, maskKey);
}

void MaskedPatterns::build(const std::vector<std::uint8_t>& pattern, std::size_t copies,
                           Random& random) {
    copies_.resize(copies);
    for (Copy& copy : copies_) {
        std::uint32_t key = random.next32();
        std::memcpy(copy.key.data(), &key, 4);
        copy.bytes.resize(pattern.size());
        maskCopy(copy.bytes.data(), pattern.data(), pattern.size(), key);
    }
}

MaskedPatterns::Slice MaskedPatterns::slice(std::size_t offset, Random& random) const {
    const Copy& copy = copies_[random.next32() % copies_.size()];
    // Payload byte i of the slice is pattern byte offset + i, masked with
    // key[(offset + i) % 4]: the frame's key is the copy's, turned by offset.
    std::array<std::uint8_t, 4> turned{};
    for (std::size_t i = 0; i < 4; ++i) {
        turned[i] = copy.key[(offset + i) & 3];
    }
    std::uint32_t maskKey = 0;
    std::memcpy(&maskKey, turned.data(), 4);
    return {copy.bytes.data() + offset, maskKey};
}

} // namespace wsgate::bench
