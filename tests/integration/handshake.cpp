// The opening handshake over real sockets (RFC 6455 §4), against the
// echo-server process and an in-process Server alike.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "support/EchoTargets.h"
#include "support/RawClient.h"
#include "support/TlsTestMode.h"

#include <chrono>
#include <doctest/doctest.h>
#include <string>
#include <thread>

using namespace wsgate::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

/// Sends `bytes` on a new connection and CHECKs that the server refuses the
/// handshake with `status`, a body, `Connection: close`, and then closes TCP.
template <class Target>
HttpResponse expectRefusedRaw(Target& target, const std::string& bytes, int status) {
    RawClient client;
    REQUIRE(client.connect(target.port()));
    client.send(bytes);
    HttpResponse response = client.readResponse();
    INFO("response: ", response.describe());
    CHECK(response.complete);
    CHECK(response.version == "HTTP/1.1");
    CHECK(response.status == status);
    CHECK_FALSE(response.body.empty());
    CHECK(response.hasToken("Connection", "close"));
    CHECK_FALSE(response.hasHeader("Sec-WebSocket-Accept"));
    if (!response.connectionClosed) {
        const TcpCloseResult rest = client.readUntilClosed(serverCloseTimeout);
        CHECK_MESSAGE(rest.closed, "the server kept the connection open after refusing");
        CHECK_MESSAGE(rest.frames.empty(), "frames after a refused handshake");
    }
    return response;
}

template <class Target>
HttpResponse expectRefused(Target& target, const HttpRequest& request, int status) {
    INFO("request: ", request.serialize().substr(0, 300));
    return expectRefusedRaw(target, request.serialize(), status);
}

/// A default upgrade request for a server on `port`.
HttpRequest requestFor(std::uint16_t port) {
    HttpRequest request;
    request.add("Host", "127.0.0.1:" + std::to_string(port));
    request.add("Upgrade", "websocket");
    request.add("Connection", "Upgrade");
    request.add("Sec-WebSocket-Key", randomKey());
    request.add("Sec-WebSocket-Version", "13");
    return request;
}

std::chrono::milliseconds since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

} // namespace

TEST_SUITE("RFC 6455 4.2.2 accepting a handshake") {
    TEST_CASE("the accept key helper matches RFC 6455's worked example") {
        // §1.3: this key gives this accept value.
        CHECK(expectedAcceptKey("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    TEST_CASE_TEMPLATE("a valid upgrade gets 101 with the right accept key", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        const HttpRequest request = client.upgradeRequest();
        const HttpResponse response = client.handshake(request);
        INFO("response: ", response.describe());
        REQUIRE(response.complete);
        CHECK(response.version == "HTTP/1.1");
        CHECK(response.status == 101);
        CHECK(response.header("Sec-WebSocket-Accept") ==
              expectedAcceptKey(request.header("Sec-WebSocket-Key")));
        CHECK(response.hasToken("Upgrade", "websocket"));
        CHECK(response.hasToken("Connection", "Upgrade"));
        // Nothing was offered, so nothing may be chosen (§4.2.2 /subprotocol/, /extensions/).
        CHECK_FALSE(response.hasHeader("Sec-WebSocket-Protocol"));
        CHECK_FALSE(response.hasHeader("Sec-WebSocket-Extensions"));
        // A 101 has no body and the server sends no frame unasked.
        CHECK(response.extra.empty());
        CHECK(client.quietFor(100ms));
        CHECK(client.sendText("hello"));
        CHECK(client.expectText("hello"));
    }

    TEST_CASE_TEMPLATE("the key of RFC 6455's example gets its accept value", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        HttpRequest request = client.upgradeRequest("/chat");
        request.set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        request.set("Origin", "http://example.com");
        const HttpResponse response = client.handshake(request);
        INFO("response: ", response.describe());
        CHECK(response.status == 101);
        CHECK(response.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    TEST_CASE_TEMPLATE("the Server header carries the configured name", Target, ProcessEcho,
                       InProcessEcho) {
        EchoOptions options;
        options.serverName = "wsgate-test/1.0";
        Target server(options);
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        const HttpResponse accepted = client.handshake(client.upgradeRequest());
        INFO("response: ", accepted.describe());
        CHECK(accepted.status == 101);
        CHECK(accepted.header("Server") == "wsgate-test/1.0");

        // Refusals name the server too.
        HttpRequest bad = requestFor(server.port());
        bad.set("Sec-WebSocket-Version", "8");
        const HttpResponse refused = expectRefused(server, bad, 426);
        CHECK(refused.header("Server") == "wsgate-test/1.0");
    }

    TEST_CASE("an empty server name sends no Server header") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        const HttpResponse response = client.handshake(client.upgradeRequest());
        INFO("response: ", response.describe());
        CHECK(response.status == 101);
        CHECK_FALSE(response.hasHeader("Server"));
    }

    TEST_CASE_TEMPLATE("header names and the Upgrade and Connection tokens are case-insensitive",
                       Target, ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        const std::string key = randomKey();
        HttpRequest request;
        request.add("host", "127.0.0.1:" + std::to_string(server.port()));
        request.add("UPGRADE", "WebSocket");
        // §4.2.1: Connection is a list that includes the token "Upgrade".
        request.add("connection", "keep-alive, UPGRADE");
        request.add("sec-websocket-key", key);
        request.add("SEC-WEBSOCKET-VERSION", "13");
        const HttpResponse response = client.handshake(request);
        INFO("response: ", response.describe());
        CHECK(response.status == 101);
        CHECK(response.header("Sec-WebSocket-Accept") == expectedAcceptKey(key));
        CHECK(client.sendText("ok"));
        CHECK(client.expectText("ok"));
    }

    TEST_CASE_TEMPLATE("HTTP's field syntax is honoured", Target, ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        HttpRequest request = client.upgradeRequest();
        const std::string key = request.header("Sec-WebSocket-Key");
        SUBCASE("whitespace around a value is not part of it") {
            // RFC 9112 §5: optional whitespace around the field value.
            request.set("Sec-WebSocket-Key", " \t" + key + "\t ");
        }
        SUBCASE("Connection split over two field lines") {
            // RFC 9110 §5.3: repeated field lines form one list.
            request.set("Connection", "keep-alive");
            request.add("Connection", "Upgrade");
        }
        SUBCASE("an absolute http URI as the target") {
            // RFC 6455 §4.2.1: the Request-URI may be an absolute HTTP URI.
            request.target = "http://127.0.0.1:" + std::to_string(server.port()) + "/chat";
        }
        const HttpResponse response = client.handshake(request);
        INFO("response: ", response.describe());
        CHECK(response.status == 101);
        CHECK(response.header("Sec-WebSocket-Accept") == expectedAcceptKey(key));
    }

    TEST_CASE("the resource name of an absolute target is its path and query") {
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        HttpRequest request = client.upgradeRequest();
        request.target = "http://127.0.0.1:" + std::to_string(server.port()) + "/chat?room=1";
        CHECK(client.handshake(request).status == 101);
        REQUIRE(server.waitForSockets(1));
        server.call([&](InProcessEcho::State& s) {
            CHECK(s.sockets[0]->resourceName() == "/chat?room=1");
            CHECK(s.sockets[0]->requestUrl() == std::string(testScheme()) + "://127.0.0.1:" +
                                                    std::to_string(server.port()) + "/chat?room=1");
        });
    }

    TEST_CASE_TEMPLATE("a request that arrives byte by byte is accepted", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        const HttpRequest request = client.upgradeRequest("/a/path?with=query");
        CHECK(client.sendByteByByte(request.serialize(), 0ms));
        const HttpResponse response = client.readResponse();
        INFO("response: ", response.describe());
        CHECK(response.status == 101);
        CHECK(response.header("Sec-WebSocket-Accept") ==
              expectedAcceptKey(request.header("Sec-WebSocket-Key")));
    }

    TEST_CASE_TEMPLATE("frames sent in the same write as the request are processed", Target,
                       ProcessEcho, InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        const HttpRequest request = client.upgradeRequest();
        std::string bytes = request.serialize();
        bytes += frame(opcode::text, "first");
        bytes += frame(opcode::binary, std::string("\x00\x01\xFF", 3));
        bytes += frame(opcode::ping, "p");
        SUBCASE("in one write") {
            CHECK(client.send(bytes));
        }
        SUBCASE("with a frame split across the request's write and the next") {
            // Cut inside the first frame's header.
            CHECK(client.sendSplit(bytes, {request.serialize().size() + 1}, 20ms));
        }
        const HttpResponse response = client.readResponse();
        INFO("response: ", response.describe());
        REQUIRE(response.status == 101);
        CHECK(client.expectText("first"));
        CHECK(client.expectBinary(std::string("\x00\x01\xFF", 3)));
        CHECK(client.expectPong("p"));
    }
}

TEST_SUITE("RFC 6455 4.2.1 refusing a handshake") {
    TEST_CASE_TEMPLATE("invalid requests get the right status and a body", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        HttpRequest request = requestFor(server.port());

        SUBCASE("POST is 405 with Allow: GET") {
            request.method = "POST";
            const HttpResponse response = expectRefused(server, request, 405);
            // RFC 9110 §15.5.6: a 405 MUST carry Allow.
            CHECK(response.hasToken("Allow", "GET"));
        }
        SUBCASE("PUT is 405") {
            request.method = "PUT";
            expectRefused(server, request, 405);
        }
        SUBCASE("HTTP/1.0 is 400") {
            request.version = "HTTP/1.0";
            expectRefused(server, request, 400);
        }
        SUBCASE("no Host is 400") {
            request.remove("Host");
            expectRefused(server, request, 400);
        }
        SUBCASE("no Upgrade is 426 naming websocket") {
            request.remove("Upgrade");
            const HttpResponse response = expectRefused(server, request, 426);
            // RFC 9110 §15.5.22: a 426 MUST send Upgrade with the protocol required.
            CHECK(response.hasToken("Upgrade", "websocket"));
        }
        SUBCASE("an Upgrade to another protocol is 426") {
            request.set("Upgrade", "h2c");
            expectRefused(server, request, 426);
        }
        SUBCASE("Connection without the upgrade token is 400") {
            request.set("Connection", "keep-alive");
            expectRefused(server, request, 400);
        }
        SUBCASE("no Connection is 400") {
            request.remove("Connection");
            expectRefused(server, request, 400);
        }
        SUBCASE("a key of 15 bytes is 400") {
            request.set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25j");
            expectRefused(server, request, 400);
        }
        SUBCASE("a key of 17 bytes, as long as a valid one, is 400") {
            request.set("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA=");
            expectRefused(server, request, 400);
        }
        SUBCASE("a key that is not base64 is 400") {
            request.set("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!w==");
            expectRefused(server, request, 400);
        }
        SUBCASE("no key is 400") {
            request.remove("Sec-WebSocket-Key");
            expectRefused(server, request, 400);
        }
        SUBCASE("two keys are 400") {
            // §11.3.1: Sec-WebSocket-Key MUST NOT appear more than once.
            request.add("Sec-WebSocket-Key", randomKey());
            expectRefused(server, request, 400);
        }
        SUBCASE("version 8 is 426 naming version 13") {
            request.set("Sec-WebSocket-Version", "8");
            const HttpResponse response = expectRefused(server, request, 426);
            // §4.2.2: the refusal names the versions the server understands.
            CHECK(response.header("Sec-WebSocket-Version") == "13");
        }
        SUBCASE("no version is refused") {
            request.remove("Sec-WebSocket-Version");
            RawClient client;
            REQUIRE(client.connect(server.port()));
            const HttpResponse response = client.handshake(request);
            INFO("response: ", response.describe());
            CHECK((response.status == 400 || response.status == 426));
            CHECK_FALSE(response.body.empty());
        }
        SUBCASE("headers over 16 KiB are 431") {
            request.add("X-Padding", std::string(17 * 1024, 'a'));
            expectRefused(server, request, 431);
        }
        SUBCASE("a body is 400") {
            request.set("Content-Length", "5");
            request.body = "hello";
            expectRefused(server, request, 400);
        }
        SUBCASE("a chunked body is 400") {
            request.set("Transfer-Encoding", "chunked");
            request.body = "5\r\nhello\r\n0\r\n\r\n";
            expectRefused(server, request, 400);
        }
        SUBCASE("a header line without a colon is 400") {
            std::string bytes = request.serialize();
            bytes.insert(bytes.find("\r\n") + 2, "this is not a header\r\n");
            expectRefusedRaw(server, bytes, 400);
        }
        SUBCASE("binary garbage is 400") {
            // The start of a TLS ClientHello sent to a ws:// port.
            std::string bytes("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11);
            bytes += randomBytes(64);
            bytes += "\r\n\r\n";
            expectRefusedRaw(server, bytes, 400);
        }
        SUBCASE("a request line that is not HTTP is 400") {
            expectRefusedRaw(server, "HELLO THERE\r\n\r\n", 400);
        }
    }
}

TEST_SUITE("RFC 6455 4.2.2 subprotocols") {
    TEST_CASE_TEMPLATE("the first offer the server speaks is chosen, never one not offered", Target,
                       ProcessEcho, InProcessEcho) {
        EchoOptions options;
        options.subprotocols = {"chat", "superchat"};
        Target server(options);
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        HttpRequest request = client.upgradeRequest();
        std::string expected;

        SUBCASE("the client's order decides") {
            request.add("Sec-WebSocket-Protocol", "superchat, chat");
            expected = "superchat";
        }
        SUBCASE("unknown offers are skipped") {
            request.add("Sec-WebSocket-Protocol", "foo, chat");
            expected = "chat";
        }
        SUBCASE("offers spread over several headers") {
            request.add("Sec-WebSocket-Protocol", "foo");
            request.add("Sec-WebSocket-Protocol", "superchat, chat");
            expected = "superchat";
        }
        SUBCASE("no offer, no header") {
            expected = "";
        }
        SUBCASE("only unknown offers, no header") {
            request.add("Sec-WebSocket-Protocol", "foo, bar");
            expected = "";
        }
        SUBCASE("a prefix of a known name is not it") {
            request.add("Sec-WebSocket-Protocol", "cha, superchatty");
            expected = "";
        }

        const HttpResponse response = client.handshake(request);
        INFO("response: ", response.describe());
        CHECK(response.status == 101);
        const auto values = response.headerValues("Sec-WebSocket-Protocol");
        if (expected.empty()) {
            CHECK(values.empty());
        } else {
            REQUIRE(values.size() == 1);
            CHECK(values[0] == expected);
        }
        CHECK(client.sendText("after negotiation"));
        CHECK(client.expectText("after negotiation"));
    }

    TEST_CASE_TEMPLATE("a server without subprotocols chooses none", Target, ProcessEcho,
                       InProcessEcho) {
        Target server;
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.connect(server.port()));
        HttpRequest request = client.upgradeRequest();
        request.add("Sec-WebSocket-Protocol", "chat");
        const HttpResponse response = client.handshake(request);
        INFO("response: ", response.describe());
        CHECK(response.status == 101);
        CHECK_FALSE(response.hasHeader("Sec-WebSocket-Protocol"));
    }
}

TEST_SUITE("RFC 6455 4.2 handshake timeout") {
    TEST_CASE_TEMPLATE("a client that stalls is closed at the deadline", Target, ProcessEcho,
                       InProcessEcho) {
        EchoOptions options;
        options.handshakeTimeoutMs = 300;
        Target server(options);
        REQUIRE(server.started());
        // The deadline runs from accept, before a TLS handshake in connect().
        const auto start = Clock::now();
        RawClient client;
        REQUIRE(client.connect(server.port()));

        SUBCASE("mid-request") {
            const std::string request = client.upgradeRequest().serialize();
            CHECK(client.send(request.substr(0, request.size() / 2)));
        }
        SUBCASE("before sending anything") {
        }
        SUBCASE("after the request line") {
            CHECK(client.send("GET / HTTP/1.1\r\n"));
        }

        bool eof = false;
        const std::string answer = client.readAll(5s, &eof);
        const auto elapsed = since(start);
        INFO("closed after ", elapsed.count(), " ms; answer: ", answer.substr(0, 200));
        CHECK(eof);
        CHECK(elapsed >= 250ms);
        CHECK(elapsed < 4s);
        // The server may say 408 before closing, or just close.
        if (!answer.empty()) {
            CHECK(answer.rfind("HTTP/1.1 408 ", 0) == 0);
        }
    }

    TEST_CASE_TEMPLATE("the deadline covers the whole handshake, not idle time", Target,
                       ProcessEcho, InProcessEcho) {
        EchoOptions options;
        options.handshakeTimeoutMs = 300;
        Target server(options);
        REQUIRE(server.started());
        // The deadline runs from accept, before a TLS handshake in connect().
        const auto start = Clock::now();
        RawClient client;
        REQUIRE(client.connect(server.port()));
        // A byte every 40 ms is never idle for long, but it does not finish in time.
        std::string request = client.upgradeRequest().serialize();
        bool closed = false;
        for (char c : request) {
            if (!client.send(std::string_view(&c, 1)) || !client.quietFor(40ms)) {
                closed = true;
                break;
            }
        }
        const auto elapsed = since(start);
        INFO("stopped after ", elapsed.count(), " ms");
        REQUIRE(closed);
        bool eof = false;
        const std::string answer = client.readAll(3s, &eof);
        CHECK(eof);
        CHECK(elapsed >= 250ms);
        CHECK(elapsed < 3s);
        if (!answer.empty()) {
            CHECK(answer.rfind("HTTP/1.1 408 ", 0) == 0);
        }
    }

    TEST_CASE_TEMPLATE("a finished handshake is not cut by the deadline", Target, ProcessEcho,
                       InProcessEcho) {
        EchoOptions options;
        options.handshakeTimeoutMs = 300;
        Target server(options);
        REQUIRE(server.started());
        RawClient client;
        REQUIRE(client.open(server.port()));
        CHECK(client.quietFor(700ms));
        CHECK(client.sendText("still here"));
        CHECK(client.expectText("still here"));
    }
}
