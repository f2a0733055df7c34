// RequestInfo keeps an accepted request in one block, with well-known header
// names and the three usual upgrade headers coded as single bytes, and finds
// host and origin among the headers when they are there: whatever the
// request, its getters give back what the parser produced.
#include "net/RequestInfo.h"

#include "proto/Handshake.h"

#include <cctype>
#include <cstddef>
#include <doctest/doctest.h>
#include <string>
#include <string_view>

namespace {

using wsgate::detail::RequestInfo;
using wsgate::proto::HandshakeRequest;
using HeaderList = wsgate::WebSocket::HeaderList;

/// The request the parser makes of `text`, which must be a valid upgrade.
HandshakeRequest parse(std::string_view text) {
    wsgate::proto::HandshakeParser parser;
    std::size_t consumed = 0;
    REQUIRE(parser.receive(text.data(), text.size(), consumed) ==
            wsgate::proto::HandshakeParser::Status::Complete);
    CHECK(consumed == text.size());
    return std::move(parser.request());
}

constexpr std::string_view upgradeHeaders = "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                            "Sec-WebSocket-Version: 13\r\n";

/// What bench/loadgen sends (makeUpgradeRequest), on its usual port.
constexpr std::string_view loadGeneratorRequest =
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:40123\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// What a desktop browser sends, in its order and spelling.
constexpr std::string_view browserRequest =
    "GET /chat?room=lobby HTTP/1.1\r\n"
    "Host: app.example.com\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36\r\n"
    "Upgrade: websocket\r\n"
    "Origin: https://app.example.com\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n"
    "Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "Sec-WebSocket-Protocol: chat.v2, chat.v1\r\n"
    "X-Forwarded-For: 203.0.113.7\r\n"
    "X-Custom-Trace: abc123\r\n"
    "\r\n";

/// `text` with every ASCII letter in upper case, or in lower case.
std::string recased(std::string_view text, bool upper) {
    std::string out(text);
    for (char& c : out) {
        const auto byte = static_cast<unsigned char>(c);
        c = static_cast<char>(upper ? std::toupper(byte) : std::tolower(byte));
    }
    return out;
}

/// The size the block had when every name and value was stored as text:
/// four bytes, then each string with its NUL, an empty origin included.
std::size_t plainSize(const HandshakeRequest& request, std::string_view subprotocol) {
    std::size_t size = 4 + request.target.size() + 1 + subprotocol.size() + 1;
    bool hostFound = false;
    bool originFound = false;
    for (const auto& header : request.headers) {
        size += header.name.size() + 1 + header.value.size() + 1;
        hostFound = hostFound || header.value == request.host;
        originFound = originFound || header.value == request.origin;
    }
    size += hostFound ? 0 : request.host.size() + 1;
    size += originFound ? 0 : request.origin.size() + 1;
    return size;
}

/// Every getter of `info` agrees with `request`: the same bytes, the same
/// case, the same order, and header() finds what the parser's own lookup
/// finds under any case of the name.
void checkSame(const RequestInfo& info, const HandshakeRequest& request,
               std::string_view subprotocol, bool secure) {
    CHECK(info.target() == request.target);
    CHECK(info.host() == request.host);
    CHECK(info.origin() == request.origin);
    CHECK(info.subprotocol() == subprotocol);
    CHECK(info.secure() == secure);
    const auto list = info.headerList();
    REQUIRE(list.size() == request.headers.size());
    for (std::size_t i = 0; i < list.size(); ++i) {
        CHECK(list[i].first == request.headers[i].name);
        CHECK(list[i].second == request.headers[i].value);
        const std::string_view name = request.headers[i].name;
        CHECK(info.header(name) == request.header(name));
        CHECK(info.header(recased(name, false)) == request.header(name));
        CHECK(info.header(recased(name, true)) == request.header(name));
    }
    CHECK(info.header("X-Not-Sent").empty());
}

/// `request` stored, then checked against itself.
RequestInfo storeAndCheck(const HandshakeRequest& request, std::string_view subprotocol = {},
                          bool secure = false) {
    RequestInfo info;
    info.assign(request, subprotocol, secure);
    checkSame(info, request, subprotocol, secure);
    return info;
}

/// The bytes a one-header request with `name: value` takes.
std::size_t storedWith(std::string_view name, std::string_view value) {
    HandshakeRequest request;
    request.target = "/";
    request.host = "h";
    request.headers.push_back({"Host", "h"});
    request.headers.push_back({std::string(name), std::string(value)});
    return storeAndCheck(request).storedBytes();
}

} // namespace

TEST_SUITE("RequestInfo") {
    TEST_CASE("an empty one answers empty") {
        RequestInfo info;
        CHECK(info.target().empty());
        CHECK(info.host().empty());
        CHECK(info.origin().empty());
        CHECK(info.subprotocol().empty());
        CHECK_FALSE(info.secure());
        CHECK(info.header("host").empty());
        CHECK(info.headerList().empty());
        CHECK(info.storedBytes() == 0);
    }

    TEST_CASE("the load generator's request, in one 64-byte malloc chunk") {
        const auto request = parse(loadGeneratorRequest);
        const RequestInfo info = storeAndCheck(request);
        CHECK(info.host() == "127.0.0.1:40123");
        CHECK(info.header("upgrade") == "websocket");
        CHECK(info.header("CONNECTION") == "Upgrade");
        CHECK(info.header("sec-websocket-version") == "13");
        CHECK(info.header("Sec-WebSocket-Key") == "x3JJHMbDL1EzLkh9GBhXDw==");
        // glibc serves up to 56 bytes from a 64-byte chunk; the text form
        // needed a 144-byte one.
        CHECK(plainSize(request, {}) == 134);
        CHECK(info.storedBytes() <= 56);
        // Four bytes, "/", no subprotocol, Host coded with its value, the key
        // coded with its value, three pairs; the absent origin costs nothing.
        CHECK(info.storedBytes() == 4 + 2 + 1 + 17 + 26 + 3);
    }

    TEST_CASE("a browser's request with many headers") {
        const auto request = parse(browserRequest);
        REQUIRE(request.origin == "https://app.example.com");
        const RequestInfo info = storeAndCheck(request, "chat.v2", true);
        CHECK(info.host() == "app.example.com");
        CHECK(info.origin() == "https://app.example.com");
        CHECK(info.header("x-custom-trace") == "abc123");
        CHECK(info.header("sec-websocket-extensions") ==
              "permessage-deflate; client_max_window_bits");
        // Every name but X-Custom-Trace is coded and three headers are
        // stored whole: 212 bytes of names and values that are not kept.
        CHECK(plainSize(request, "chat.v2") == 636);
        CHECK(info.storedBytes() == 636 - 212);
    }

    TEST_CASE("names that match the table only case-insensitively keep their case") {
        const auto request =
            parse("GET / HTTP/1.1\r\nhost: a.example\r\nUPGRADE: websocket\r\n"
                  "connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-Websocket-Version: 13\r\nORIGIN: http://o.example\r\n"
                  "user-agent: test/1\r\nCookie: a=b\r\n\r\n");
        const RequestInfo info = storeAndCheck(request);
        CHECK(info.headerList() == HeaderList{{"host", "a.example"},
                                              {"UPGRADE", "websocket"},
                                              {"connection", "Upgrade"},
                                              {"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="},
                                              {"Sec-Websocket-Version", "13"},
                                              {"ORIGIN", "http://o.example"},
                                              {"user-agent", "test/1"},
                                              {"Cookie", "a=b"}});
        CHECK(info.origin() == "http://o.example");
    }

    TEST_CASE("a known name whose value is not the usual one keeps that value") {
        const auto request = parse("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n"
                                   "Connection: keep-alive, Upgrade\r\n"
                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                   "sec-websocket-version: 13\r\n"
                                   "Connection: Upgrade\r\n\r\n");
        const RequestInfo info = storeAndCheck(request);
        CHECK(info.headerList() == HeaderList{{"Host", "a"},
                                              {"Upgrade", "WebSocket"},
                                              {"Connection", "keep-alive, Upgrade"},
                                              {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                                              {"sec-websocket-version", "13"},
                                              {"Connection", "Upgrade"}});
        // header() gives the first of several.
        CHECK(info.header("connection") == "keep-alive, Upgrade");
    }

    TEST_CASE("empty values, under known names and others") {
        const auto request = parse(
            std::string("GET / HTTP/1.1\r\nX-Empty:\r\nHost: a\r\n") + std::string(upgradeHeaders) +
            "Cookie:\r\nUser-Agent: \r\nPragma:\r\nX-Also-Empty:   \r\n\r\n");
        // No subprotocol chosen is a view without data.
        const RequestInfo info = storeAndCheck(request, std::string_view(), false);
        CHECK(info.origin().empty());
        CHECK(info.header("x-empty").empty());
        CHECK(info.header("cookie").empty());
        CHECK(info.header("host") == "a");
        CHECK(info.header("x-also-empty").empty());
        CHECK(info.headerList().size() == 10);
    }

    TEST_CASE("the most headers the parser accepts") {
        std::string text = "GET /many HTTP/1.1\r\nHost: many.example\r\n";
        text += upgradeHeaders;
        text += "Origin: http://many.example\r\n";
        std::size_t count = 6;
        // Known names, text names, empty values and the pairs again, in turn.
        for (std::size_t i = 0; count < wsgate::proto::maxHeaderCount; ++i, ++count) {
            switch (i % 5) {
            case 0:
                text += "Cookie: c" + std::to_string(i) + "\r\n";
                break;
            case 1:
                text += "X-Header-" + std::to_string(i) + ": v" + std::to_string(i) + "\r\n";
                break;
            case 2:
                text += "User-Agent:\r\n";
                break;
            case 3:
                text += "Connection: Upgrade\r\n";
                break;
            default:
                text += "x-forwarded-for: 10.0.0." + std::to_string(i) + "\r\n";
                break;
            }
        }
        text += "\r\n";
        const auto request = parse(text);
        REQUIRE(request.headers.size() == wsgate::proto::maxHeaderCount);
        const RequestInfo info = storeAndCheck(request, "p", true);
        CHECK(info.headerList().back().first == "Connection");
        CHECK(info.header("x-header-91") == "v91");
        CHECK(info.origin() == "http://many.example");
        CHECK(info.storedBytes() < plainSize(request, "p"));
    }

    TEST_CASE("an absolute-form target: the host is its authority, not the Host header") {
        const auto request = parse(
            std::string("GET ws://other.example:9/p HTTP/1.1\r\nHost: a\r\n") +
            std::string(upgradeHeaders) + "Sec-WebSocket-Origin: http://legacy.example\r\n\r\n");
        REQUIRE(request.host == "other.example:9");
        const RequestInfo info = storeAndCheck(request);
        CHECK(info.header("host") == "a");
        CHECK(info.origin() == "http://legacy.example");
    }

    TEST_CASE("host and origin in no header are both kept, after coded headers") {
        const auto parsed = parse(std::string("GET ws://h.example/x HTTP/1.1\r\nHost: a\r\n") +
                                  std::string(upgradeHeaders) + "\r\n");
        HandshakeRequest request = parsed;
        request.origin = "http://o.example";
        RequestInfo info = storeAndCheck(request, "sub");
        CHECK(info.host() == "h.example");
        // Coded: Host's name (4 bytes saved), the key's name (17) and the
        // three pairs (17, 18 and 24).
        CHECK(info.storedBytes() == plainSize(request, "sub") - 4 - 17 - 17 - 18 - 24);

        request.headers.clear();
        info.assign(request, "", true);
        checkSame(info, request, "", true);
        CHECK(info.header("upgrade").empty());
    }

    TEST_CASE("a host or origin equal to a coded pair's value is found there") {
        HandshakeRequest request;
        request.target = "/";
        request.host = "13";
        request.origin = "websocket";
        request.headers.push_back({"Upgrade", "websocket"});
        request.headers.push_back({"Sec-WebSocket-Version", "13"});
        const RequestInfo info = storeAndCheck(request);
        CHECK(info.storedBytes() == 4 + 2 + 1 + 2);
    }

    TEST_CASE("a known name costs one byte, a pair one byte, other spellings their text") {
        // The browser's names, all but one in the table; the pairs' names
        // with another value are coded as names.
        for (const auto& header : parse(browserRequest).headers) {
            const std::string_view name = header.name;
            CAPTURE(name);
            // As text the name takes its length and a NUL; coded, one byte.
            const std::size_t saved = name == "X-Custom-Trace" ? 0 : name.size();
            CHECK(storedWith(recased(name, false), "v") == storedWith(name, "v") + saved);
            CHECK(storedWith(recased(name, true), "v") == storedWith(name, "v") + saved);
        }
        CHECK(storedWith("Upgrade", "websocket") + 10 == storedWith("Upgrade", "WebSocket"));
        CHECK(storedWith("Connection", "Upgrade") + 8 == storedWith("Connection", "upgrade"));
        CHECK(storedWith("Sec-WebSocket-Version", "13") + 2 ==
              storedWith("Sec-WebSocket-Version", "8"));
        // Four bytes, "/", no subprotocol, Host coded with "h", then the text.
        CHECK(storedWith("X-Unknown", "v") == 4 + 2 + 1 + 3 + 10 + 2);
    }
}
