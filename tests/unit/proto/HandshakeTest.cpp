// The opening handshake, server side (RFC 6455 §4.2). Every request is parsed
// whole, one byte at a time and split at every point, each chunk copied so
// that it ends against a PROT_NONE page; all ways must agree.
#include "proto/Handshake.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <doctest/doctest.h>
#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

using wsgate::Error;
using wsgate::proto::buildAcceptResponse;
using wsgate::proto::buildErrorResponse;
using wsgate::proto::chooseSubprotocol;
using wsgate::proto::defaultMaxHeaderBytes;
using wsgate::proto::HandshakeParser;
using wsgate::proto::HandshakeRequest;
using wsgate::proto::maxHeaderCount;
using Status = HandshakeParser::Status;

namespace {

/// Memory whose last usable byte sits right before a PROT_NONE page, so that
/// reading one byte past a chunk faults even without AddressSanitizer
/// (picohttpparser's test.c does the same).
class GuardedBuffer {
public:
    explicit GuardedBuffer(std::size_t capacity) {
        page_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        dataSize_ = (capacity / page_ + 1) * page_;
        void* base = mmap(nullptr, dataSize_ + page_, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(base != MAP_FAILED);
        base_ = static_cast<char*>(base);
        REQUIRE(mprotect(base_ + dataSize_, page_, PROT_NONE) == 0);
    }
    GuardedBuffer(const GuardedBuffer&) = delete;
    GuardedBuffer& operator=(const GuardedBuffer&) = delete;
    ~GuardedBuffer() { munmap(base_, dataSize_ + page_); }

    /// Copies `bytes` so that they end at the guard page. The previous copy
    /// is overwritten, which also catches a parser that keeps pointers into
    /// an earlier chunk.
    const char* place(std::string_view bytes) {
        REQUIRE(bytes.size() <= dataSize_);
        char* start = base_ + dataSize_ - bytes.size();
        std::memset(base_, 0x5a, dataSize_);
        if (!bytes.empty()) {
            std::memcpy(start, bytes.data(), bytes.size());
        }
        return start;
    }

private:
    char* base_ = nullptr;
    std::size_t page_ = 0;
    std::size_t dataSize_ = 0;
};

struct Outcome {
    Status status = Status::NeedMore;
    Error error = Error::MalformedRequest; ///< Meaningful when Failed.
    std::size_t consumed = 0;              ///< Request bytes, meaningful when not Failed.
    HandshakeRequest request;              ///< Meaningful when Complete.
};

/// Everything an outcome holds, as one string, so that one CHECK compares
/// two outcomes and prints a readable difference.
std::string describe(const Outcome& outcome) {
    std::ostringstream out;
    switch (outcome.status) {
    case Status::NeedMore:
        out << "NeedMore consumed=" << outcome.consumed;
        return out.str();
    case Status::Failed:
        out << "Failed " << static_cast<int>(outcome.error) << " ("
            << make_error_code(outcome.error).message() << ")";
        return out.str();
    case Status::Complete:
        break;
    }
    const HandshakeRequest& r = outcome.request;
    out << "Complete consumed=" << outcome.consumed << " target=[" << r.target << "] host=["
        << r.host << "] origin=[" << r.origin << "] key=[" << r.key << "] protocols=";
    for (const std::string& p : r.protocols) {
        out << '[' << p << ']';
    }
    out << " extensions=";
    for (const std::string& e : r.extensions) {
        out << '[' << e << ']';
    }
    out << " headers=";
    for (const auto& h : r.headers) {
        out << '[' << h.name << ':' << h.value << ']';
    }
    return out.str();
}

/// Feeds `input` in pieces of the given lengths (the last piece takes the
/// rest), each placed against the guard page, stopping at the first status
/// other than NeedMore.
Outcome feed(std::string_view input, const std::vector<std::size_t>& pieces, GuardedBuffer& guard,
             std::size_t maxHeaderBytes) {
    HandshakeParser parser(maxHeaderBytes);
    Outcome outcome;
    std::size_t offset = 0;
    for (std::size_t i = 0; i <= pieces.size(); ++i) {
        const std::size_t length =
            i < pieces.size() ? std::min(pieces[i], input.size() - offset) : input.size() - offset;
        const std::string_view piece = input.substr(offset, length);
        offset += length;
        std::size_t consumed = 12345;
        outcome.status = parser.receive(guard.place(piece), piece.size(), consumed);
        if (outcome.status == Status::Complete) {
            REQUIRE(consumed <= piece.size());
            outcome.consumed += consumed;
            outcome.request = std::move(parser.request());
            return outcome;
        }
        REQUIRE(consumed == piece.size());
        if (outcome.status == Status::Failed) {
            outcome.error = parser.error();
            return outcome;
        }
        outcome.consumed += consumed;
    }
    return outcome;
}

/// Parses `input` whole, one byte at a time and split in two at every point
/// (at a sample of points for long inputs), and checks that every way gives
/// the same outcome, which it returns.
Outcome parseAllWays(std::string_view input, std::size_t maxHeaderBytes = defaultMaxHeaderBytes) {
    GuardedBuffer guard(input.size());
    Outcome whole = feed(input, {}, guard, maxHeaderBytes);
    const std::string expected = describe(whole);

    const std::vector<std::size_t> bytes(input.size(), 1);
    CHECK(describe(feed(input, bytes, guard, maxHeaderBytes)) == expected);

    // Every split point for short inputs; for long ones a stride plus the
    // points near both ends, where the limits and the empty line are.
    const std::size_t stride = input.size() <= 2048 ? 1 : 97;
    for (std::size_t cut = 0; cut <= input.size(); ++cut) {
        const bool nearEnd = cut < 8 || input.size() - cut < 8;
        if (cut % stride != 0 && !nearEnd) {
            continue;
        }
        INFO("split at " << cut);
        CHECK(describe(feed(input, {cut}, guard, maxHeaderBytes)) == expected);
    }
    // Uneven chunks, as a TCP stream delivers them.
    for (const std::size_t size : std::array<std::size_t, 4>{2, 3, 7, 64}) {
        INFO("chunks of " << size);
        const std::vector<std::size_t> chunks(input.size() / size + 1, size);
        CHECK(describe(feed(input, chunks, guard, maxHeaderBytes)) == expected);
    }
    return whole;
}

/// A request built from a request line and header lines, easy to vary.
struct Request {
    std::string line = "GET /chat HTTP/1.1";
    std::vector<std::pair<std::string, std::string>> headers = {
        {"Host", "server.example.com"},   {"Upgrade", "websocket"},
        {"Connection", "Upgrade"},        {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
        {"Origin", "http://example.com"}, {"Sec-WebSocket-Protocol", "chat, superchat"},
        {"Sec-WebSocket-Version", "13"},
    };

    /// Replaces every header `name` (exact spelling) by one with `value`.
    Request& set(std::string_view name, std::string_view value) {
        remove(name);
        headers.emplace_back(name, value);
        return *this;
    }
    Request& add(std::string_view name, std::string_view value) {
        headers.emplace_back(name, value);
        return *this;
    }
    Request& remove(std::string_view name) {
        std::erase_if(headers, [name](const auto& h) { return h.first == name; });
        return *this;
    }
    std::string text() const {
        std::string out = line + "\r\n";
        for (const auto& [name, value] : headers) {
            out.append(name).append(": ").append(value).append("\r\n");
        }
        return out + "\r\n";
    }
};

/// Parses every way and requires a complete request of `requestLength`
/// bytes (the whole input unless frames follow).
HandshakeRequest expectComplete(std::string_view input, std::size_t requestLength) {
    Outcome outcome = parseAllWays(input);
    REQUIRE(describe(outcome).rfind("Complete", 0) == 0);
    CHECK(outcome.consumed == requestLength);
    return std::move(outcome.request);
}

HandshakeRequest expectComplete(std::string_view input) {
    return expectComplete(input, input.size());
}

Error expectFailed(std::string_view input, std::size_t maxHeaderBytes = defaultMaxHeaderBytes) {
    const Outcome outcome = parseAllWays(input, maxHeaderBytes);
    INFO(describe(outcome));
    REQUIRE(outcome.status == Status::Failed);
    CHECK(wsgate::httpStatusFor(outcome.error) != 0);
    return outcome.error;
}

/// Status of the error response built for `input`'s failure.
int statusFor(std::string_view input) {
    return wsgate::httpStatusFor(expectFailed(input));
}

using Protocols = std::vector<std::string>;

// Two browsers' requests, in their shape and header order.
const std::string chromeRequest =
    "GET /chat?room=1 HTTP/1.1\r\n"
    "Host: localhost:8080\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36\r\n"
    "Upgrade: websocket\r\n"
    "Origin: http://localhost:8080\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Sec-WebSocket-Key: kpq8HnnDmRC3FMwjwrWwBw==\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "\r\n";

const std::string firefoxRequest =
    "GET /socket HTTP/1.1\r\n"
    "Host: localhost:8080\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0\r\n"
    "Accept: */*\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Origin: http://localhost:8080\r\n"
    "Sec-WebSocket-Protocol: graphql-ws, graphql-transport-ws\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    "Sec-WebSocket-Key: lgMPM+pefEuMiSZcD6tRzA==\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-Fetch-Dest: empty\r\n"
    "Sec-Fetch-Mode: websocket\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "Upgrade: websocket\r\n"
    "\r\n";

} // namespace

TEST_SUITE("4.2.1 Reading the client's opening handshake") {
    TEST_CASE("the RFC's example request is complete and its fields are kept") {
        const HandshakeRequest r = expectComplete(Request{}.text());
        CHECK(r.target == "/chat");
        CHECK(r.host == "server.example.com");
        CHECK(r.origin == "http://example.com");
        CHECK(r.key == "dGhlIHNhbXBsZSBub25jZQ==");
        CHECK(r.protocols == Protocols{"chat", "superchat"});
        CHECK(r.extensions.empty());
        REQUIRE(r.headers.size() == 7);
        CHECK(r.headers[0].name == "Host");
        CHECK(r.headers[6].name == "Sec-WebSocket-Version");
        CHECK(r.headers[6].value == "13");
    }

    TEST_CASE("Chrome's request shape") {
        const HandshakeRequest r = expectComplete(chromeRequest);
        CHECK(r.target == "/chat?room=1");
        CHECK(r.host == "localhost:8080");
        CHECK(r.origin == "http://localhost:8080");
        CHECK(r.key == "kpq8HnnDmRC3FMwjwrWwBw==");
        CHECK(r.protocols.empty());
        CHECK(r.extensions == Protocols{"permessage-deflate; client_max_window_bits"});
        CHECK(r.headers.size() == 12);
        CHECK(r.header("user-agent").starts_with("Mozilla/5.0 (X11"));
    }

    TEST_CASE("Firefox's request shape, with Connection: keep-alive, Upgrade") {
        const HandshakeRequest r = expectComplete(firefoxRequest);
        CHECK(r.target == "/socket");
        CHECK(r.key == "lgMPM+pefEuMiSZcD6tRzA==");
        CHECK(r.protocols == Protocols{"graphql-ws", "graphql-transport-ws"});
        CHECK(r.extensions == Protocols{"permessage-deflate"});
        CHECK(r.header("Sec-Fetch-Mode") == "websocket");
        CHECK(r.headers.size() == 17);
    }

    TEST_CASE("header names are case-insensitive") {
        Request lower;
        for (auto& [name, value] : lower.headers) {
            for (char& c : name) {
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            }
        }
        CHECK(expectComplete(lower.text()).protocols == Protocols{"chat", "superchat"});
        Request upper;
        for (auto& [name, value] : upper.headers) {
            for (char& c : name) {
                c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            }
        }
        const HandshakeRequest r = expectComplete(upper.text());
        CHECK(r.host == "server.example.com");
        CHECK(r.origin == "http://example.com");
        // Names are kept as the client spelled them.
        CHECK(r.headers[0].name == "HOST");
    }

    TEST_CASE("header names are tokens; every token character is accepted") {
        const HandshakeRequest r =
            expectComplete(Request{}.add("X-!#$%&'*+-.^_`|~09az", "v").text());
        CHECK(r.header("x-!#$%&'*+-.^_`|~09AZ") == "v");
    }

    TEST_CASE("header() finds the first value, case-insensitively") {
        const HandshakeRequest r =
            expectComplete(Request{}.add("X-Twice", "one").add("x-twice", "two").text());
        CHECK(r.header("x-twice") == "one");
        CHECK(r.header("X-TWICE") == "one");
        CHECK(r.header("sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ==");
        CHECK(r.header("X-Absent").empty());
        CHECK(r.header("").empty());
    }

    TEST_CASE("values lose surrounding whitespace, keep inner whitespace") {
        const HandshakeRequest r =
            expectComplete(Request{}
                               .set("Sec-WebSocket-Key", " \tdGhlIHNhbXBsZSBub25jZQ== \t")
                               .add("X-Spaced", "  a  b  ")
                               .add("X-Empty", "")
                               .add("X-Blank", " \t ")
                               .text());
        CHECK(r.key == "dGhlIHNhbXBsZSBub25jZQ==");
        CHECK(r.header("X-Spaced") == "a  b");
        CHECK(r.header("X-Empty").empty());
        CHECK(r.header("X-Blank").empty());
    }

    TEST_CASE("an origin-form request-target is kept as sent") {
        Request request;
        request.line = "GET /a/b%20c?x=1&y=%2F#frag HTTP/1.1";
        CHECK(expectComplete(request.text()).target == "/a/b%20c?x=1&y=%2F#frag");
    }

    TEST_CASE("an absolute-form target gives its path and its host (RFC 7230 5.3.2, 5.4)") {
        Request request;
        request.line = "GET ws://server.example.com/chat HTTP/1.1";
        auto r = expectComplete(request.text());
        CHECK(r.target == "/chat");
        CHECK(r.host == "server.example.com");
        request.line = "GET HTTP://other.example:8080?q=1 HTTP/1.1";
        r = expectComplete(request.text());
        CHECK(r.target == "/?q=1");
        CHECK(r.host == "other.example:8080");
        request.line = "GET http://h HTTP/1.1";
        CHECK(expectComplete(request.text()).target == "/");
    }

    TEST_CASE("a target that is neither a path nor an absolute URI is refused (400)") {
        Request request;
        for (const char* line : {"GET * HTTP/1.1", "GET chat HTTP/1.1", "GET ftp://h/x HTTP/1.1",
                                 "GET http:///x HTTP/1.1"}) {
            request.line = line;
            CAPTURE(line);
            CHECK(expectFailed(request.text()) == Error::MalformedRequest);
        }
    }

    TEST_CASE("item 1: the method must be GET (405)") {
        for (const char* line : {"POST /chat HTTP/1.1", "HEAD /chat HTTP/1.1", "PUT /chat HTTP/1.1",
                                 "OPTIONS /chat HTTP/1.1", "DELETE /chat HTTP/1.1",
                                 "CONNECT server.example.com:443 HTTP/1.1"}) {
            INFO(line);
            Request request;
            request.line = line;
            CHECK(expectFailed(request.text()) == Error::MethodNotGet);
            CHECK(statusFor(request.text()) == 405);
        }
        // Methods are case-sensitive (RFC 7230 §3.1.1): "get" is no method.
        Request lower;
        lower.line = "get /chat HTTP/1.1";
        CHECK(expectFailed(lower.text()) == Error::MalformedRequest);
    }

    TEST_CASE("item 1: HTTP/1.1 or higher") {
        Request request;
        request.line = "GET /chat HTTP/1.0";
        CHECK(expectFailed(request.text()) == Error::BadHttpVersion);
        CHECK(statusFor(request.text()) == 400);
        request.line = "GET /chat HTTP/0.9";
        CHECK(expectFailed(request.text()) == Error::BadHttpVersion);
        // An HTTP/0.9 simple request has no version at all.
        request.line = "GET /chat";
        CHECK(expectFailed(request.text()) == Error::BadHttpVersion);
        request.line = "GET /chat HTTP/2.0";
        CHECK(expectComplete(request.text()).target == "/chat");
        // llhttp knows no version 1.2.
        request.line = "GET /chat HTTP/1.2";
        CHECK(expectFailed(request.text()) == Error::MalformedRequest);
    }

    TEST_CASE("item 2: exactly one non-empty Host") {
        CHECK(expectFailed(Request{}.remove("Host").text()) == Error::MissingHost);
        CHECK(statusFor(Request{}.remove("Host").text()) == 400);
        CHECK(expectFailed(Request{}.set("Host", "").text()) == Error::MissingHost);
        CHECK(expectFailed(Request{}.add("host", "other.example.com").text()) ==
              Error::MalformedRequest);
    }

    TEST_CASE("item 3: Upgrade names websocket, case-insensitively (426)") {
        CHECK(expectFailed(Request{}.remove("Upgrade").text()) == Error::MissingUpgrade);
        CHECK(statusFor(Request{}.remove("Upgrade").text()) == 426);
        CHECK(expectFailed(Request{}.set("Upgrade", "h2c").text()) == Error::MissingUpgrade);
        CHECK(expectFailed(Request{}.set("Upgrade", "websockets").text()) == Error::MissingUpgrade);
        CHECK(expectFailed(Request{}.set("Upgrade", "web socket").text()) == Error::MissingUpgrade);
        CHECK(expectFailed(Request{}.set("Upgrade", "").text()) == Error::MissingUpgrade);
        for (const char* value :
             {"WebSocket", "WEBSOCKET", "h2c, websocket", " ,websocket, ", "websocket, h2c"}) {
            INFO(value);
            expectComplete(Request{}.set("Upgrade", value).text());
        }
        // Several Upgrade headers form one list (RFC 7230 §3.2.2).
        expectComplete(Request{}.set("Upgrade", "h2c").add("Upgrade", "websocket").text());
    }

    TEST_CASE("item 4: Connection holds the upgrade token") {
        CHECK(expectFailed(Request{}.remove("Connection").text()) ==
              Error::MissingConnectionUpgrade);
        CHECK(statusFor(Request{}.remove("Connection").text()) == 400);
        for (const char* value : {"keep-alive", "close", "upgraded", "upgrade-x", "up grade",
                                  "keep-alive; Upgrade", ""}) {
            INFO(value);
            CHECK(expectFailed(Request{}.set("Connection", value).text()) ==
                  Error::MissingConnectionUpgrade);
        }
        for (const char* value : {"upgrade", "UPGRADE", "keep-alive, Upgrade", "Upgrade, close",
                                  ",, upgrade ,", "keep-alive,upgrade", "a,\tUpgrade\t,b"}) {
            INFO(value);
            expectComplete(Request{}.set("Connection", value).text());
        }
        expectComplete(
            Request{}.set("Connection", "keep-alive").add("Connection", "Upgrade").text());
    }

    TEST_CASE("item 5: one Sec-WebSocket-Key, base64 of 16 bytes") {
        CHECK(expectFailed(Request{}.remove("Sec-WebSocket-Key").text()) == Error::BadKey);
        CHECK(statusFor(Request{}.remove("Sec-WebSocket-Key").text()) == 400);
        for (const char* key : {
                 "",
                 "dGhlIHNhbXBsZSBub25jZQ=",   // 23 characters
                 "dGhlIHNhbXBsZSBub25jZQ===", // 25 characters
                 "AAAAAAAAAAAAAAAAAAAA",      // 15 bytes
                 "AAAAAAAAAAAAAAAAAAAAAAA=",  // 17 bytes
                 "AAAAAAAAAAAAAAAAAAAAAAAA",  // 18 bytes
                 "dGhlIHNhbXBsZSBub25jZQ-_",  // base64url alphabet
                 "dGhlIHNhbXBsZSBub25jZ-==",  // base64url alphabet
                 "dGhlIHNhbXBsZSBub25jZ===",  // padding too early
                 "dGhlIHNhbXBsZ SBub25jZQ==", // inner space
                 "dGhlIHNhbXBsZSBub25jZQ==\t=",
                 "dGhlIHNhbXBs\x80SBub25jZQ==",
                 "=GhlIHNhbXBsZSBub25jZQ==",
             }) {
            INFO(key);
            CHECK(expectFailed(Request{}.set("Sec-WebSocket-Key", key).text()) == Error::BadKey);
        }
        // Two keys are one too many, even if both are valid.
        CHECK(expectFailed(Request{}.add("sec-websocket-key", "kpq8HnnDmRC3FMwjwrWwBw==").text()) ==
              Error::BadKey);
        for (const char* key :
             {"kpq8HnnDmRC3FMwjwrWwBw==", "AAAAAAAAAAAAAAAAAAAAAA==", "+/+/+/+/+/+/+/+/+/+/+w=="}) {
            INFO(key);
            CHECK(expectComplete(Request{}.set("Sec-WebSocket-Key", key).text()).key == key);
        }
    }

    TEST_CASE("item 6: Sec-WebSocket-Version is 13 (426)") {
        CHECK(expectFailed(Request{}.remove("Sec-WebSocket-Version").text()) ==
              Error::UnsupportedVersion);
        CHECK(statusFor(Request{}.remove("Sec-WebSocket-Version").text()) == 426);
        for (const char* value : {"8", "12", "14", "013", "13.0", "13, 8", "8, 13", ""}) {
            INFO(value);
            CHECK(expectFailed(Request{}.set("Sec-WebSocket-Version", value).text()) ==
                  Error::UnsupportedVersion);
        }
        CHECK(expectFailed(Request{}.add("Sec-WebSocket-Version", "13").text()) ==
              Error::UnsupportedVersion);
        expectComplete(Request{}.set("Sec-WebSocket-Version", " 13 ").text());
        // An old client learns the version before it hears about its key.
        CHECK(expectFailed(Request{}
                               .set("Sec-WebSocket-Version", "8")
                               .set("Sec-WebSocket-Key", "bad")
                               .text()) == Error::UnsupportedVersion);
    }

    TEST_CASE("item 7: Origin is kept as sent; Sec-WebSocket-Origin only without it") {
        CHECK(expectComplete(Request{}.set("Origin", "null").text()).origin == "null");
        CHECK(expectComplete(Request{}.remove("Origin").text()).origin.empty());
        CHECK(expectComplete(Request{}
                                 .remove("Origin")
                                 .add("Sec-WebSocket-Origin", "http://legacy.example")
                                 .text())
                  .origin == "http://legacy.example");
        CHECK(expectComplete(Request{}.add("Sec-WebSocket-Origin", "http://legacy.example").text())
                  .origin == "http://example.com");
        CHECK(expectComplete(Request{}.add("Origin", "http://second.example").text()).origin ==
              "http://example.com");
    }

    TEST_CASE("item 8: subprotocols from one header or several, in order") {
        CHECK(expectComplete(Request{}.remove("Sec-WebSocket-Protocol").text()).protocols.empty());
        CHECK(expectComplete(Request{}.set("Sec-WebSocket-Protocol", "").text()).protocols.empty());
        CHECK(expectComplete(Request{}.set("Sec-WebSocket-Protocol", " , a,, b ,\tc\t,").text())
                  .protocols == Protocols{"a", "b", "c"});
        CHECK(expectComplete(Request{}
                                 .set("Sec-WebSocket-Protocol", "chat")
                                 .add("X-Between", "1")
                                 .add("sec-websocket-protocol", "superchat, v2.json")
                                 .add("SEC-WEBSOCKET-PROTOCOL", "Chat")
                                 .text())
                  .protocols == Protocols{"chat", "superchat", "v2.json", "Chat"});
    }

    TEST_CASE("item 9: extension offers with their parameters, in order") {
        CHECK(expectComplete(Request{}
                                 .add("Sec-WebSocket-Extensions",
                                      "permessage-deflate; client_max_window_bits; "
                                      "server_max_window_bits=10 , x-webkit-deflate-frame,")
                                 .add("sec-websocket-extensions", "foo;bar=\"1\"")
                                 .text())
                  .extensions == Protocols{"permessage-deflate; client_max_window_bits; "
                                           "server_max_window_bits=10",
                                           "x-webkit-deflate-frame", "foo;bar=\"1\""});
    }

    TEST_CASE("an upgrade request carries no body") {
        CHECK(expectFailed(Request{}.add("Content-Length", "5").text() + "hello") ==
              Error::RequestHasBody);
        CHECK(statusFor(Request{}.add("Content-Length", "5").text()) == 400);
        // A peer-announced length is only compared, never allocated.
        CHECK(expectFailed(Request{}.add("Content-Length", "18446744073709551615").text()) ==
              Error::RequestHasBody);
        CHECK(expectFailed(Request{}.add("Content-Length", "18446744073709551616").text()) ==
              Error::MalformedRequest);
        CHECK(expectFailed(Request{}.add("Transfer-Encoding", "chunked").text() + "5\r\nhello") ==
              Error::RequestHasBody);
        CHECK(expectFailed(Request{}.add("Transfer-Encoding", "gzip").text()) ==
              Error::RequestHasBody);
        CHECK(
            expectFailed(
                Request{}.add("Transfer-Encoding", "chunked").add("Content-Length", "5").text()) ==
            Error::MalformedRequest);
        CHECK(
            expectFailed(Request{}.add("Content-Length", "5").add("Content-Length", "5").text()) ==
            Error::MalformedRequest);
        // An empty body is no body.
        expectComplete(Request{}.add("Content-Length", "0").text());
    }

    TEST_CASE("what llhttp cannot parse is a malformed request (400)") {
        using namespace std::string_literals;
        for (const std::string& input : {
                 "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s, // TLS hello
                 std::string("HTTP/1.1 200 OK\r\n\r\n"),
                 std::string("GET /chat HTTP/1.1\nHost: a\n\n"),
                 std::string("GET /chat HTTP/1.1\r\nHost : a\r\n\r\n"),
                 std::string("GET /chat HTTP/1.1\r\nHo st: a\r\n\r\n"),
                 std::string("GET /chat HTTP/1.1\r\nX-A: b\x01"
                             "c\r\n\r\n"),
                 std::string("GET /chat HTTP/1.1\r\nX-A: b\rc\r\n\r\n"),
                 std::string("GET /chat HTTP/1.1\r\n: empty name\r\n\r\n"),
                 std::string("GET /chat HTTP/1.1\r\nNoColon\r\n\r\n"),
                 std::string("GET /chat HTTP/1.1\r\nHost\t: a\r\n\r\n"),
                 std::string("GET /chat HTTP/1.1\r\nX-\x80: a\r\n\r\n"),
                 std::string("GET /chat HTTP/1.1\r\nX(y): a\r\n\r\n"),
                 "GET /ch\x00t HTTP/1.1\r\n\r\n"s,
                 std::string("GET /chat HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
             }) {
            CHECK(expectFailed(input) == Error::MalformedRequest);
        }
        CHECK(statusFor("BREW /pot HTCPCP/1.0\r\n\r\n") == 400);
        // An HTTP/2 client's connection preface is no upgrade request.
        CHECK(expectFailed("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == Error::MalformedRequest);
    }

    TEST_CASE("the first error in the input wins over later ones") {
        // A bad header line after a missing Host: llhttp stops first.
        CHECK(expectFailed("GET /chat HTTP/1.1\r\nHo st: a\r\n\r\n") == Error::MalformedRequest);
        // A request that is POST and HTTP/1.0 and hostless: the method is named.
        CHECK(expectFailed("POST /chat HTTP/1.0\r\n\r\n") == Error::MethodNotGet);
    }

    TEST_CASE("a prefix of a request needs more, however it is split") {
        const std::string input = Request{}.text();
        for (std::size_t length = 0; length < input.size(); ++length) {
            INFO("prefix of " << length);
            GuardedBuffer guard(length);
            const Outcome whole =
                feed(std::string_view(input).substr(0, length), {}, guard, defaultMaxHeaderBytes);
            CHECK(whole.status == Status::NeedMore);
            CHECK(whole.consumed == length);
        }
        // And every split of a long prefix agrees.
        const Outcome outcome = parseAllWays(std::string_view(input).substr(0, input.size() - 1));
        CHECK(outcome.status == Status::NeedMore);
    }

    TEST_CASE("leading empty lines before the request line are skipped") {
        const std::string input = "\r\n\r\n" + Request{}.text();
        CHECK(expectComplete(input).target == "/chat");
    }

    TEST_CASE("an obsolete line fold joins the value with a space") {
        const HandshakeRequest r = expectComplete(
            "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "X-Folded: one\r\n two \r\n\r\n");
        CHECK(r.header("X-Folded") == "one two");
    }
}

TEST_SUITE("4.2.1 Reading the client's opening handshake: limits") {
    TEST_CASE("a request of exactly maxHeaderBytes is accepted, one more byte is 431") {
        const std::string base = Request{}.text();
        const std::size_t limit = 512;
        const std::size_t overhead = base.size() + std::string("X-Pad: \r\n").size();
        REQUIRE(overhead < limit);
        const std::string exact = Request{}.add("X-Pad", std::string(limit - overhead, 'p')).text();
        REQUIRE(exact.size() == limit);
        CHECK(parseAllWays(exact, limit).status == Status::Complete);
        // Bytes after the request do not count against the limit.
        CHECK(parseAllWays(exact + "\x81\x80", limit).consumed == limit);

        const std::string over =
            Request{}.add("X-Pad", std::string(limit - overhead + 1, 'p')).text();
        REQUIRE(over.size() == limit + 1);
        CHECK(expectFailed(over, limit) == Error::HeadersTooLarge);
        CHECK(wsgate::httpStatusFor(Error::HeadersTooLarge) == 431);
        // Without the last byte, the request is still waiting within its budget.
        CHECK(parseAllWays(std::string_view(exact).substr(0, limit - 1), limit).status ==
              Status::NeedMore);
        // The budget is spent without the empty line: 431 at once.
        CHECK(expectFailed(std::string_view(over).substr(0, limit), limit) ==
              Error::HeadersTooLarge);
    }

    TEST_CASE("a huge header is 431 at the default limit") {
        const std::string huge =
            Request{}.add("Cookie", std::string(defaultMaxHeaderBytes, 'c')).text();
        CHECK(expectFailed(huge) == Error::HeadersTooLarge);
        // Also a huge request line and a huge header name.
        CHECK(expectFailed("GET /" + std::string(defaultMaxHeaderBytes, 'a') +
                           " HTTP/1.1\r\n\r\n") == Error::HeadersTooLarge);
        CHECK(expectFailed("GET / HTTP/1.1\r\nX" + std::string(defaultMaxHeaderBytes, 'a') +
                           ": 1\r\n\r\n") == Error::HeadersTooLarge);
        // An endless stream of bytes is cut off at the limit.
        CHECK(expectFailed("GET / HTTP/1.1\r\nX: " + std::string(defaultMaxHeaderBytes * 2, 'a')) ==
              Error::HeadersTooLarge);
    }

    TEST_CASE("a limit of zero refuses everything") {
        CHECK(expectFailed(Request{}.text(), 0) == Error::HeadersTooLarge);
    }

    TEST_CASE("maxHeaderCount headers are accepted, one more is 431") {
        Request request;
        while (request.headers.size() < maxHeaderCount) {
            request.add("X-" + std::to_string(request.headers.size()), "v");
        }
        CHECK(expectComplete(request.text()).headers.size() == maxHeaderCount);
        request.add("X-Last", "v");
        CHECK(expectFailed(request.text()) == Error::HeadersTooLarge);
        // Many empty-valued headers count just the same.
        std::string many = "GET / HTTP/1.1\r\n";
        for (std::size_t i = 0; i <= maxHeaderCount; ++i) {
            many += "a:\r\n";
        }
        CHECK(expectFailed(many + "\r\n") == Error::HeadersTooLarge);
    }
}

TEST_SUITE("4.2.1 Reading the client's opening handshake: what follows the request") {
    TEST_CASE("frames sent with the request are left unconsumed") {
        const std::string request = Request{}.text();
        // A masked text frame "Hi" and a masked close frame.
        const std::string frames("\x81\x82\x01\x02\x03\x04\x49\x6b\x88\x80\x01\x02\x03\x04", 14);
        CHECK(expectComplete(request + frames, request.size()).target == "/chat");
        CHECK(expectComplete(chromeRequest + frames, chromeRequest.size()).key ==
              "kpq8HnnDmRC3FMwjwrWwBw==");
        // Even bytes that look like a second request or a body stay unread.
        CHECK(expectComplete(request + request, request.size()).headers.size() == 7);
        CHECK(expectComplete(request + "\r\n", request.size()).target == "/chat");
    }

    TEST_CASE("an empty read, even with a null pointer, changes nothing") {
        HandshakeParser parser;
        std::size_t consumed = 99;
        CHECK(parser.receive(nullptr, 0, consumed) == Status::NeedMore);
        CHECK(consumed == 0);
        const std::string input = Request{}.text();
        REQUIRE(parser.receive(input.data(), input.size(), consumed) == Status::Complete);
        CHECK(consumed == input.size());
    }

    TEST_CASE("bytes fed after Complete are not consumed") {
        const std::string input = Request{}.text() + "\x81";
        HandshakeParser parser;
        std::size_t consumed = 0;
        REQUIRE(parser.receive(input.data(), input.size(), consumed) == Status::Complete);
        CHECK(consumed == input.size() - 1);
        CHECK(parser.receive("\x81\x80", 2, consumed) == Status::Complete);
        CHECK(consumed == 0);
        CHECK(parser.request().target == "/chat");
    }

    TEST_CASE("after Failed, input is discarded") {
        HandshakeParser parser;
        std::size_t consumed = 0;
        CHECK(parser.receive("PUT / HTTP/1.1\r\n\r\nxyz", 21, consumed) == Status::Failed);
        CHECK(consumed == 21);
        CHECK(parser.error() == Error::MethodNotGet);
        CHECK(parser.receive("GET", 3, consumed) == Status::Failed);
        CHECK(consumed == 3);
        CHECK(parser.error() == Error::MethodNotGet);
    }

    TEST_CASE("the request can be moved out") {
        HandshakeParser parser;
        const std::string input = Request{}.text();
        std::size_t consumed = 0;
        REQUIRE(parser.receive(input.data(), input.size(), consumed) == Status::Complete);
        const HandshakeRequest taken = std::move(parser.request());
        CHECK(taken.key == "dGhlIHNhbXBsZSBub25jZQ==");
        CHECK(taken.protocols.size() == 2);
    }
}

TEST_SUITE("4.2.2 Sending the server's opening handshake") {
    TEST_CASE("acceptKey: the example of RFC 6455 §1.3") {
        CHECK(wsgate::proto::acceptKey("dGhlIHNhbXBsZSBub25jZQ==") ==
              "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        CHECK(wsgate::proto::acceptKey("kpq8HnnDmRC3FMwjwrWwBw==") ==
              "C3duVLAu0iiJM2/6DDGmNINlVEk=");
        CHECK(wsgate::proto::acceptKey("lgMPM+pefEuMiSZcD6tRzA==") ==
              "a86wMUMpXeyJvCCgn/0hhtLb8+Q=");
        CHECK(wsgate::proto::acceptKey("").size() == 28);
    }

    TEST_CASE("chooseSubprotocol: the client's first offer that the server speaks") {
        const Protocols offered{"v2.chat", "chat", "superchat"};
        CHECK(chooseSubprotocol(offered, {"superchat", "chat"}) == "chat");
        CHECK(chooseSubprotocol(offered, {"superchat"}) == "superchat");
        CHECK(chooseSubprotocol(offered, {"v2.chat", "chat"}) == "v2.chat");
        // Tokens compare case-sensitively.
        CHECK(chooseSubprotocol(offered, {"CHAT"}).empty());
        CHECK(chooseSubprotocol(offered, {"cha"}).empty());
        CHECK(chooseSubprotocol(offered, {}).empty());
        // Never one the client did not offer.
        CHECK(chooseSubprotocol({}, {"chat"}).empty());
        // The view points into the client's offers.
        const std::string_view chosen = chooseSubprotocol(offered, {"chat"});
        CHECK(chosen.data() == offered[1].data());
    }

    TEST_CASE("buildAcceptResponse: the exact bytes") {
        CHECK(buildAcceptResponse("dGhlIHNhbXBsZSBub25jZQ==", "", "") ==
              "HTTP/1.1 101 Switching Protocols\r\n"
              "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "\r\n");
        CHECK(buildAcceptResponse("dGhlIHNhbXBsZSBub25jZQ==", "chat", "wsgate/0.1",
                                  "permessage-deflate; server_no_context_takeover") ==
              "HTTP/1.1 101 Switching Protocols\r\n"
              "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "Sec-WebSocket-Protocol: chat\r\n"
              "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
              "Server: wsgate/0.1\r\n"
              "\r\n");
        CHECK(buildAcceptResponse("dGhlIHNhbXBsZSBub25jZQ==", "", "wsgate") ==
              "HTTP/1.1 101 Switching Protocols\r\n"
              "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "Server: wsgate\r\n"
              "\r\n");
    }

    TEST_CASE("from the RFC's request to its response") {
        const HandshakeRequest r = expectComplete(Request{}.text());
        const std::string_view protocol = chooseSubprotocol(r.protocols, {"superchat", "chat"});
        CHECK(buildAcceptResponse(r.key, protocol, "") ==
              "HTTP/1.1 101 Switching Protocols\r\n"
              "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "Sec-WebSocket-Protocol: chat\r\n"
              "\r\n");
    }
}

TEST_SUITE("4.2.2 Sending the server's opening handshake: refusals") {
    TEST_CASE("400 Bad Request, with the rule in the body") {
        CHECK(buildErrorResponse(Error::BadKey, "") ==
              "HTTP/1.1 400 Bad Request\r\n"
              "Content-Type: text/plain\r\n"
              "Content-Length: 44\r\n"
              "Connection: close\r\n"
              "\r\n"
              "Sec-WebSocket-Key is not base64 of 16 bytes\n");
        CHECK(buildErrorResponse(Error::MalformedRequest, "wsgate") ==
              "HTTP/1.1 400 Bad Request\r\n"
              "Content-Type: text/plain\r\n"
              "Content-Length: 23\r\n"
              "Connection: close\r\n"
              "Server: wsgate\r\n"
              "\r\n"
              "malformed HTTP request\n");
    }

    TEST_CASE("403 Forbidden") {
        CHECK(buildErrorResponse(Error::OriginRefused, "") == "HTTP/1.1 403 Forbidden\r\n"
                                                              "Content-Type: text/plain\r\n"
                                                              "Content-Length: 15\r\n"
                                                              "Connection: close\r\n"
                                                              "\r\n"
                                                              "origin refused\n");
    }

    TEST_CASE("405 Method Not Allowed names GET (RFC 7231 §6.5.5)") {
        CHECK(buildErrorResponse(Error::MethodNotGet, "") == "HTTP/1.1 405 Method Not Allowed\r\n"
                                                             "Allow: GET\r\n"
                                                             "Content-Type: text/plain\r\n"
                                                             "Content-Length: 18\r\n"
                                                             "Connection: close\r\n"
                                                             "\r\n"
                                                             "method is not GET\n");
    }

    TEST_CASE("408 Request Timeout") {
        CHECK(buildErrorResponse(Error::HandshakeTimeout, "") == "HTTP/1.1 408 Request Timeout\r\n"
                                                                 "Content-Type: text/plain\r\n"
                                                                 "Content-Length: 20\r\n"
                                                                 "Connection: close\r\n"
                                                                 "\r\n"
                                                                 "handshake timed out\n");
    }

    TEST_CASE("426 Upgrade Required names the version (§4.2.2 item 4)") {
        CHECK(buildErrorResponse(Error::UnsupportedVersion, "wsgate") ==
              "HTTP/1.1 426 Upgrade Required\r\n"
              "Upgrade: websocket\r\n"
              "Sec-WebSocket-Version: 13\r\n"
              "Content-Type: text/plain\r\n"
              "Content-Length: 52\r\n"
              "Connection: Upgrade, close\r\n"
              "Server: wsgate\r\n"
              "\r\n"
              "unsupported Sec-WebSocket-Version (13 is supported)\n");
        CHECK(buildErrorResponse(Error::MissingUpgrade, "")
                  .starts_with("HTTP/1.1 426 Upgrade Required\r\n"
                               "Upgrade: websocket\r\n"
                               "Sec-WebSocket-Version: 13\r\n"));
    }

    TEST_CASE("431 Request Header Fields Too Large") {
        CHECK(buildErrorResponse(Error::HeadersTooLarge, "") ==
              "HTTP/1.1 431 Request Header Fields Too Large\r\n"
              "Content-Type: text/plain\r\n"
              "Content-Length: 26\r\n"
              "Connection: close\r\n"
              "\r\n"
              "request headers too large\n");
    }

    TEST_CASE("503 Service Unavailable") {
        CHECK(buildErrorResponse(Error::TooManyPendingConnections, "") ==
              "HTTP/1.1 503 Service Unavailable\r\n"
              "Content-Type: text/plain\r\n"
              "Content-Length: 29\r\n"
              "Connection: close\r\n"
              "\r\n"
              "too many pending connections\n");
    }

    TEST_CASE("every handshake error has a status line that matches httpStatusFor") {
        for (int value = static_cast<int>(Error::MalformedRequest);
             value <= static_cast<int>(Error::HandshakeTimeout); ++value) {
            const auto error = static_cast<Error>(value);
            const int status = wsgate::httpStatusFor(error);
            INFO(make_error_code(error).message());
            const std::string response = buildErrorResponse(error, "");
            CHECK(response.starts_with("HTTP/1.1 " + std::to_string(status) + " "));
            const std::string body = make_error_code(error).message() + "\n";
            CHECK(response.ends_with("\r\n\r\n" + body));
            CHECK(response.find("Content-Length: " + std::to_string(body.size()) + "\r\n") !=
                  std::string::npos);
        }
    }

    TEST_CASE("an error that is not a handshake's is answered 500") {
        CHECK(buildErrorResponse(Error::InvalidUtf8, "")
                  .starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
    }
}
