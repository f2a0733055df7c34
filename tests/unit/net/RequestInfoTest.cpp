// RequestInfo keeps an accepted request in one block and finds host and
// origin among the headers when they are there: whatever the request, its
// getters give back what the parser produced.
#include "net/Connection.h"
#include "proto/Handshake.h"

#include <doctest/doctest.h>
#include <string>
#include <string_view>

namespace {

using wsgate::detail::RequestInfo;

/// The request the parser makes of `text`, which must be a valid upgrade.
wsgate::proto::HandshakeRequest parse(std::string_view text) {
    wsgate::proto::HandshakeParser parser;
    std::size_t consumed = 0;
    REQUIRE(parser.receive(text.data(), text.size(), consumed) ==
            wsgate::proto::HandshakeParser::Status::Complete);
    return std::move(parser.request());
}

constexpr std::string_view upgradeHeaders = "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                            "Sec-WebSocket-Version: 13\r\n";

/// Every getter of `info` agrees with `request`.
void checkSame(const RequestInfo& info, const wsgate::proto::HandshakeRequest& request,
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
    }
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
    }

    TEST_CASE("host and origin taken from their headers") {
        const auto request =
            parse(std::string("GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\n") +
                  std::string(upgradeHeaders) + "Origin: https://app.example\r\n\r\n");
        RequestInfo info;
        info.assign(request, "chat.v2", true);
        checkSame(info, request, "chat.v2", true);
        CHECK(info.host() == "example.com:8080");
        CHECK(info.origin() == "https://app.example");
        CHECK(info.header("ORIGIN") == "https://app.example");
        CHECK(info.header("sec-websocket-version") == "13");
        CHECK(info.header("absent").empty());
    }

    TEST_CASE("no origin, and a header with an empty value") {
        const auto request = parse(std::string("GET / HTTP/1.1\r\nX-Empty:\r\nHost: a\r\n") +
                                   std::string(upgradeHeaders) + "\r\n");
        RequestInfo info;
        // No subprotocol chosen is a view without data.
        info.assign(request, std::string_view(), false);
        checkSame(info, request, "", false);
        CHECK(info.origin().empty());
        CHECK(info.header("x-empty").empty());
        CHECK(info.header("host") == "a");
    }

    TEST_CASE("an absolute-form target: the host is its authority, not the Host header") {
        const auto request = parse(
            std::string("GET ws://other.example:9/p HTTP/1.1\r\nHost: a\r\n") +
            std::string(upgradeHeaders) + "Sec-WebSocket-Origin: http://legacy.example\r\n\r\n");
        REQUIRE(request.host == "other.example:9");
        RequestInfo info;
        info.assign(request, "", false);
        checkSame(info, request, "", false);
        CHECK(info.header("host") == "a");
        CHECK(info.origin() == "http://legacy.example");
    }

    TEST_CASE("host and origin in no header are both kept") {
        wsgate::proto::HandshakeRequest request;
        request.target = "/x";
        request.host = "h.example";
        request.origin = "http://o.example";
        request.headers.push_back({"Name", "value"});
        RequestInfo info;
        info.assign(request, "sub", false);
        checkSame(info, request, "sub", false);

        request.headers.clear();
        info.assign(request, "", true);
        checkSame(info, request, "", true);
        CHECK(info.header("name").empty());
    }
}
