// The Server and WebSocket API on an in-process loop, driven by raw clients
// over loopback: listening, the pending queue, adopted sockets, origins,
// subprotocols, pings, frames, flow control and teardown.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "wsgate/Server.h"

#include "support/ChildProcess.h"
#include "support/EchoTargets.h"
#include "support/LoopThread.h"
#include "support/RawClient.h"
#include "support/TlsClient.h"
#include "support/TlsTestMode.h"
#include "wsgate/WebSocket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <doctest/doctest.h>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace wsgate::test;
using namespace std::chrono_literals;
using wsgate::CloseCode;
using wsgate::CorsAuthenticator;
using wsgate::Server;
using wsgate::SocketState;
using wsgate::WebSocket;
using Clock = std::chrono::steady_clock;

namespace {

/// A Server on a LoopThread that takes nothing by itself, with every signal
/// recorded. Members are touched only on the loop thread.
struct ServerFixture {
    struct Events {
        int newConnection = 0;
        int closed = 0;
        std::vector<CloseCode> serverErrors;
        std::vector<std::error_code> acceptErrors;
    };

    // Declared before `thread`, so that they outlive the loop thread whose
    // teardown empties them.
    Events events;
    std::unique_ptr<Server> server;
    std::vector<std::unique_ptr<WebSocket>> taken;
    LoopThread thread;

    explicit ServerFixture(std::string name = "wsgate-test") {
        thread.addTeardown([this] {
            taken.clear();
            server.reset();
        });
        thread.call([&] {
            // wss:// when the suite runs under WSGATE_TEST_TLS=1.
            server = std::make_unique<Server>(name, testSslMode(), thread.loop());
            configureForTestMode(*server);
            server->onNewConnection([this] { ++events.newConnection; });
            server->onClosed([this] { ++events.closed; });
            server->onServerError([this](CloseCode code) { events.serverErrors.push_back(code); });
            server->onAcceptError([this](std::error_code e) { events.acceptErrors.push_back(e); });
        });
    }
    ~ServerFixture() { thread.finish(); }

    template <class F>
    auto call(F&& f) {
        return thread.call(std::forward<F>(f));
    }

    /// listen() on the loop thread; the port, or 0 when it failed.
    std::uint16_t listen(const std::string& address = "127.0.0.1") {
        return call([&]() -> std::uint16_t {
            if (!server->listen(address, 0)) {
                return 0;
            }
            return server->serverPort();
        });
    }

    /// Takes every pending connection and makes it echo; returns how many.
    std::size_t takeAll() {
        return call([&] {
            std::size_t n = 0;
            while (auto ws = server->nextPendingConnection()) {
                InProcessEcho::makeEcho(*ws);
                taken.push_back(std::move(ws));
                ++n;
            }
            return n;
        });
    }

    bool waitForNewConnections(int n) {
        return thread.waitUntil([&] { return events.newConnection >= n; });
    }
    bool waitForServerErrors(std::size_t n) {
        return thread.waitUntil([&] { return events.serverErrors.size() >= n; });
    }
};

RawClient connectTo(std::uint16_t port, const char* host = "127.0.0.1") {
    RawClient client;
    REQUIRE(client.connect(port, host));
    return client;
}

RawClient upgraded(std::uint16_t port, const char* host = "127.0.0.1") {
    RawClient client;
    REQUIRE(client.open(port, host));
    return client;
}

bool ipv6Available() {
    const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_addr = in6addr_loopback;
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    return ok;
}

/// A TCP socket listening on 127.0.0.1 with a kernel-chosen port.
/// Whether the socket of this process whose peer is `client` (the server's
/// side of that connection) has TCP_NODELAY set; false when none is found.
bool serverSideHasNoDelay(const RawClient& client) {
    sockaddr_storage local{};
    socklen_t localSize = sizeof local;
    if (::getsockname(client.fd(), reinterpret_cast<sockaddr*>(&local), &localSize) != 0) {
        return false;
    }
    const auto clientPort = reinterpret_cast<const sockaddr_in&>(local).sin_port;
    for (int fd = 0; fd < 4096; ++fd) {
        sockaddr_storage peer{};
        socklen_t peerSize = sizeof peer;
        if (fd == client.fd() ||
            ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peerSize) != 0 ||
            reinterpret_cast<const sockaddr_in&>(peer).sin_port != clientPort) {
            continue;
        }
        int on = 0;
        socklen_t size = sizeof on;
        return ::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &size) == 0 && on != 0;
    }
    return false;
}

int listeningSocket(std::uint16_t& port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t size = sizeof address;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0);
    port = ntohs(address.sin_port);
    return fd;
}

/// accept() with a timeout.
int acceptWithin(int listener, std::chrono::milliseconds timeout) {
    pollfd p{listener, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
        return -1;
    }
    return ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
}

std::uint16_t localPortOf(int fd) {
    sockaddr_storage address{};
    socklen_t size = sizeof address;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
    if (address.ss_family == AF_INET6) {
        return ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
    }
    return ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
}

/// "a, b, c", for comparisons that print readably when they fail.
std::string join(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) {
        out += (out.empty() ? "" : ", ") + item;
    }
    return out;
}

std::chrono::milliseconds since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

} // namespace

TEST_SUITE("Server: listening") {
    TEST_CASE("listen on 127.0.0.1 port 0") {
        ServerFixture f;
        f.call([&] { CHECK_FALSE(f.server->isListening()); });
        const std::uint16_t port = f.listen("127.0.0.1");
        REQUIRE(port != 0);
        f.call([&] {
            CHECK(f.server->isListening());
            CHECK(f.server->serverAddress() == "127.0.0.1");
            CHECK(f.server->serverPort() == port);
            CHECK(f.server->serverUrl() ==
                  std::string(testScheme()) + "://127.0.0.1:" + std::to_string(port));
            CHECK(f.server->socketDescriptor() >= 0);
            CHECK(f.server->secureMode() == testSslMode());
            CHECK(f.server->serverName() == "wsgate-test");
        });
        RawClient client = upgraded(port);
        CHECK(f.waitForNewConnections(1));
        CHECK(f.takeAll() == 1);
        CHECK(client.sendText("over IPv4"));
        CHECK(client.expectText("over IPv4"));
        // Small frames are not held back by Nagle's algorithm: the accepted
        // socket has TCP_NODELAY, which it inherits from the listener.
        CHECK(serverSideHasNoDelay(client));
    }

    TEST_CASE("listen on ::1 port 0") {
        if (!ipv6Available()) {
            MESSAGE("IPv6 loopback not available; skipped");
            return;
        }
        ServerFixture f;
        const std::uint16_t port = f.listen("::1");
        REQUIRE(port != 0);
        f.call([&] {
            CHECK(f.server->isListening());
            CHECK(f.server->serverAddress() == "::1");
            CHECK(f.server->serverUrl() ==
                  std::string(testScheme()) + "://[::1]:" + std::to_string(port));
        });
        RawClient client = upgraded(port, "::1");
        CHECK(f.waitForNewConnections(1));
        CHECK(f.takeAll() == 1);
        f.call([&] {
            CHECK(f.taken[0]->peerAddress() == "::1");
            CHECK(f.taken[0]->localAddress() == "::1");
            CHECK(f.taken[0]->localPort() == port);
        });
        CHECK(client.sendText("over IPv6"));
        CHECK(client.expectText("over IPv6"));
    }

    TEST_CASE("listen on any address takes IPv4 and IPv6 clients") {
        ServerFixture f;
        const std::uint16_t port = f.listen("");
        REQUIRE(port != 0);
        RawClient v4 = upgraded(port, "127.0.0.1");
        if (ipv6Available()) {
            RawClient v6 = upgraded(port, "::1");
            CHECK(f.waitForNewConnections(2));
        } else {
            CHECK(f.waitForNewConnections(1));
        }
    }

    TEST_CASE("listen fails on a port in use and on a bad address") {
        ServerFixture first;
        const std::uint16_t port = first.listen();
        REQUIRE(port != 0);
        ServerFixture second;
        second.call([&] {
            CHECK_FALSE(second.server->listen("127.0.0.1", port));
            CHECK_FALSE(second.server->isListening());
            CHECK_FALSE(second.server->errorString().empty());
            CHECK_FALSE(second.server->listen("not an address", 0));
            CHECK_FALSE(second.server->isListening());
            // A failed listen leaves the server usable.
            CHECK(second.server->listen("127.0.0.1", 0));
            CHECK(second.server->isListening());
        });
    }

    TEST_CASE("close() stops listening, fires closed, and refuses new clients") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        // One taken, one pending, one in the middle of its handshake.
        RawClient taken = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        RawClient pending = upgraded(port);
        REQUIRE(f.waitForNewConnections(2));
        RawClient halfway = connectTo(port);
        CHECK(halfway.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
        CHECK(halfway.quietFor(100ms));

        f.call([&] {
            f.server->close();
            CHECK_FALSE(f.server->isListening());
            CHECK(f.server->socketDescriptor() == -1);
        });
        CHECK(f.thread.waitUntil([&] { return f.events.closed == 1; }));

        RawClient late;
        CHECK_FALSE(late.connect(port));
        // Not yet taken: closed with 1001 (Server::close()).
        CHECK(pending.expectClose(1001).isClose());
        CHECK(pending.sendClose(1001));
        CHECK(pending.expectTcpClosed(serverCloseTimeout).closed);
        // Mid-handshake: dropped.
        bool eof = false;
        const std::string answer = halfway.readAll(3s, &eof);
        CHECK(eof);
        CHECK_FALSE(answer.rfind("HTTP/1.1 101", 0) == 0);
        // Taken: not the server's any more, so it keeps working.
        CHECK(taken.sendText("still served"));
        CHECK(taken.expectText("still served"));

        // And it can listen again.
        CHECK(f.listen() != 0);
        f.call([&] { CHECK(f.events.closed == 1); });
    }

    TEST_CASE("setSocketDescriptor adopts a listening socket") {
        ServerFixture f;
        std::uint16_t port = 0;
        const int fd = listeningSocket(port);
        CHECK(f.call([&] { return f.server->setSocketDescriptor(fd); }));
        f.call([&] {
            CHECK(f.server->isListening());
            CHECK(f.server->serverPort() == port);
            CHECK(f.server->socketDescriptor() >= 0);
        });
        RawClient client = upgraded(port);
        CHECK(f.waitForNewConnections(1));
        CHECK(f.takeAll() == 1);
        CHECK(client.sendBinary("adopted"));
        CHECK(client.expectBinary("adopted"));
    }

    TEST_CASE("setSocketDescriptor refuses a bad descriptor") {
        ServerFixture f;
        f.call([&] {
            CHECK_FALSE(f.server->setSocketDescriptor(-1));
            CHECK_FALSE(f.server->isListening());
        });
    }

    TEST_CASE("handleConnection runs the handshake on a socket accepted elsewhere") {
        ServerFixture f;
        f.call([&] { f.server->setHandshakeTimeout(300); });
        std::uint16_t port = 0;
        const int listener = listeningSocket(port);

        // Over TLS the handshake can only start once the server has the socket.
        RawClient client;
        REQUIRE(client.connectPlain(port));
        const int accepted = acceptWithin(listener, 5s);
        REQUIRE(accepted >= 0);
        CHECK(f.call([&] { return f.server->handleConnection(accepted); }));
        if (tlsTestMode()) {
            REQUIRE(client.startTls(defaultTlsClientOptions()));
        }
        CHECK(client.upgrade("/handed-over"));
        CHECK(f.waitForNewConnections(1));
        CHECK(f.takeAll() == 1);
        f.call([&] { CHECK(f.taken[0]->resourceName() == "/handed-over"); });
        CHECK(client.sendText("handled"));
        CHECK(client.expectText("handled"));
        // An adopted socket gets TCP_NODELAY set by the server itself.
        int on = 0;
        socklen_t size = sizeof on;
        CHECK(::getsockopt(accepted, IPPROTO_TCP, TCP_NODELAY, &on, &size) == 0);
        CHECK(on != 0);

        // It gets the handshake timeout too (over TLS: a silent TLS handshake).
        RawClient silent;
        REQUIRE(silent.connectPlain(port));
        const int second = acceptWithin(listener, 5s);
        REQUIRE(second >= 0);
        const auto start = Clock::now();
        CHECK(f.call([&] { return f.server->handleConnection(second); }));
        bool eof = false;
        silent.readAll(5s, &eof);
        INFO("closed after ", since(start).count(), " ms");
        CHECK(eof);
        CHECK(since(start) >= 250ms);
        CHECK(since(start) < 4s);
        ::close(listener);
    }

    TEST_CASE("out of descriptors, waiting clients are closed and the server keeps listening") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        // The clients' sockets exist before the limit drops; only the
        // server's accept() then lacks a descriptor.
        std::vector<int> sockets;
        for (int i = 0; i < 3; ++i) {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            REQUIRE(fd >= 0);
            sockets.push_back(fd);
        }
        // The limit is on descriptor numbers: the lowest free one is the
        // first that cannot be had.
        const int lowestFree = ::dup(0);
        REQUIRE(lowestFree >= 0);
        ::close(lowestFree);
        rlimit old{};
        REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
        rlimit low = old;
        low.rlim_cur = static_cast<rlim_t>(lowestFree);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = htons(port);
        for (int fd : sockets) {
            ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
        }
        // Clients the server could not take are closed, not left hanging
        // (Server::onAcceptError: libuv accepts and closes them itself).
        std::vector<bool> ended;
        for (int fd : sockets) {
            pollfd p{fd, POLLIN, 0};
            char byte = 0;
            ended.push_back(::poll(&p, 1, 3000) == 1 && ::recv(fd, &byte, 1, 0) <= 0);
        }
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
        for (std::size_t i = 0; i < sockets.size(); ++i) {
            CHECK_MESSAGE(ended[i], "client ", i, " was left open");
            ::close(sockets[i]);
        }
        f.call([&] {
            CHECK(f.server->isListening());
            // Documented: out of descriptors is the one accept error not reported.
            CHECK(f.events.acceptErrors.empty());
            CHECK(f.events.newConnection == 0);
        });
        RawClient client = upgraded(port);
        CHECK(f.waitForNewConnections(1));
    }

    TEST_CASE("pauseAccepting leaves new clients waiting until resumeAccepting") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        f.call([&] { f.server->pauseAccepting(); });
        // The kernel completes the TCP handshake from its backlog; the
        // server does not read the request (over TLS: the ClientHello).
        RawClient client;
        REQUIRE(client.connectPlain(port));
        const HttpRequest request = client.upgradeRequest();
        if (tlsTestMode()) {
            TlsClientOptions options = defaultTlsClientOptions();
            options.timeout = 300ms;
            CHECK_FALSE(client.startTls(options));
            CHECK(client.tls()->timedOut());
        } else {
            CHECK(client.send(request.serialize()));
            CHECK(client.quietFor(300ms));
        }
        f.call([&] {
            CHECK(f.server->isListening());
            CHECK(f.events.newConnection == 0);
            f.server->resumeAccepting();
        });
        if (tlsTestMode()) {
            client.tls()->setTimeout(defaultTimeout);
            REQUIRE(client.tls()->handshakeUntil(TlsClient::Step::Done));
            CHECK(client.send(request.serialize()));
        }
        const HttpResponse response = client.readResponse();
        INFO("response: ", response.describe());
        CHECK(response.status == 101);
        CHECK(response.header("Sec-WebSocket-Accept") ==
              expectedAcceptKey(request.header("Sec-WebSocket-Key")));
        CHECK(f.waitForNewConnections(1));
    }
}

TEST_SUITE("Server: the pending queue") {
    TEST_CASE("past maxPendingConnections a handshake gets 503 and serverError fires") {
        ServerFixture f;
        CHECK(f.call([&] { return f.server->setMaxPendingConnections(2); }));
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient first = upgraded(port);
        RawClient second = upgraded(port);
        REQUIRE(f.waitForNewConnections(2));

        RawClient third = connectTo(port);
        const HttpResponse refused = third.handshake(third.upgradeRequest());
        INFO("response: ", refused.describe());
        CHECK(refused.status == 503);
        CHECK_FALSE(refused.body.empty());
        CHECK(third.readUntilClosed(serverCloseTimeout).closed);
        CHECK(f.waitForServerErrors(1));
        f.call([&] {
            REQUIRE(f.events.serverErrors.size() == 1);
            CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeAbnormalDisconnection);
            CHECK(f.events.newConnection == 2);
            CHECK(f.server->hasPendingConnections());
        });

        // Taking one makes room for one more.
        f.call([&] { f.taken.push_back(f.server->nextPendingConnection()); });
        RawClient fourth = upgraded(port);
        CHECK(f.waitForNewConnections(3));
        CHECK(f.takeAll() == 2);
        f.call([&] { CHECK_FALSE(f.server->hasPendingConnections()); });
    }

    TEST_CASE("nextPendingConnection hands connections over in order, then null") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        std::vector<RawClient> clients;
        for (int i = 0; i < 3; ++i) {
            RawClient client = connectTo(port);
            HttpRequest request = client.upgradeRequest("/client-" + std::to_string(i) + "?x=1");
            request.set("Origin", "http://origin-" + std::to_string(i) + ".example");
            request.add("X-Custom", "value " + std::to_string(i));
            const HttpResponse response = client.handshake(request);
            REQUIRE(response.status == 101);
            // Wait for each so that the order is the order of the handshakes.
            REQUIRE(f.waitForNewConnections(i + 1));
            clients.push_back(std::move(client));
        }
        f.call([&] {
            CHECK(f.events.newConnection == 3);
            for (int i = 0; i < 3; ++i) {
                CAPTURE(i);
                REQUIRE(f.server->hasPendingConnections());
                std::unique_ptr<WebSocket> ws = f.server->nextPendingConnection();
                REQUIRE(ws != nullptr);
                const std::string n = std::to_string(i);
                CHECK(ws->state() == SocketState::ConnectedState);
                CHECK(ws->isValid());
                CHECK(ws->resourceName() == "/client-" + n + "?x=1");
                CHECK(ws->requestUrl() == std::string(testScheme()) + "://127.0.0.1:" +
                                              std::to_string(port) + "/client-" + n + "?x=1");
                CHECK(ws->origin() == "http://origin-" + n + ".example");
                CHECK(ws->requestHeader("x-custom") == "value " + n);
                CHECK(ws->requestHeader("absent").empty());
                CHECK(ws->subprotocol().empty());
                CHECK(ws->peerAddress() == "127.0.0.1");
                CHECK(ws->peerPort() == localPortOf(clients[i].fd()));
                CHECK(ws->localAddress() == "127.0.0.1");
                CHECK(ws->localPort() == port);
                bool sawCustom = false;
                for (const auto& [name, value] : ws->requestHeaders()) {
                    sawCustom = sawCustom || (name == "X-Custom" && value == "value " + n);
                }
                CHECK(sawCustom);
                InProcessEcho::makeEcho(*ws);
                f.taken.push_back(std::move(ws));
            }
            CHECK_FALSE(f.server->hasPendingConnections());
            CHECK(f.server->nextPendingConnection() == nullptr);
        });
        for (std::size_t i = 0; i < clients.size(); ++i) {
            CHECK(clients[i].sendText("to " + std::to_string(i)));
            CHECK(clients[i].expectText("to " + std::to_string(i)));
        }
    }

    TEST_CASE("a pending connection that disconnects is not handed out alive") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        {
            // A pending connection need not be read until it is taken, so
            // the client just leaves.
            RawClient gone = upgraded(port);
            REQUIRE(f.waitForNewConnections(1));
        }
        RawClient stays = upgraded(port);
        REQUIRE(f.waitForNewConnections(2));
        std::this_thread::sleep_for(50ms);
        f.call([&] {
            // Either the dead one is dropped from the queue, or it comes out
            // unconnected; a connected live one must come out in any case.
            bool live = false;
            while (auto ws = f.server->nextPendingConnection()) {
                live = live || ws->isValid();
                InProcessEcho::makeEcho(*ws);
                f.taken.push_back(std::move(ws));
            }
            CHECK(live);
        });
        CHECK(stays.sendText("alive"));
        CHECK(stays.expectText("alive"));
    }
}

TEST_SUITE("Server: handshake policy") {
    TEST_CASE("onOriginAuthenticationRequired can refuse an origin with 403") {
        std::vector<std::string> seen; // outlives the loop thread that writes it
        ServerFixture f;
        f.call([&] {
            f.server->onOriginAuthenticationRequired([&](CorsAuthenticator& authenticator) {
                seen.push_back(authenticator.origin());
                CHECK(authenticator.allowed());
                if (authenticator.origin() == "http://evil.example") {
                    authenticator.setAllowed(false);
                }
            });
        });
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);

        RawClient evil = connectTo(port);
        HttpRequest request = evil.upgradeRequest();
        request.set("Origin", "http://evil.example");
        const HttpResponse refused = evil.handshake(request);
        INFO("response: ", refused.describe());
        CHECK(refused.status == 403);
        CHECK_FALSE(refused.body.empty());
        CHECK(evil.readUntilClosed(serverCloseTimeout).closed);
        CHECK(f.waitForServerErrors(1));

        RawClient good = connectTo(port);
        request = good.upgradeRequest();
        request.set("Origin", "http://good.example");
        CHECK(good.handshake(request).status == 101);

        RawClient none = connectTo(port);
        CHECK(none.handshake(none.upgradeRequest()).status == 101);

        CHECK(f.waitForNewConnections(2));
        f.call([&] {
            CHECK(f.events.newConnection == 2);
            REQUIRE(seen.size() == 3);
            CHECK(seen[0] == "http://evil.example");
            CHECK(seen[1] == "http://good.example");
            CHECK(seen[2].empty());
            // Unset the handler before `seen` goes out of scope.
            f.server->onOriginAuthenticationRequired(nullptr);
        });
    }

    TEST_CASE("setSupportedSubprotocols picks the client's first supported offer") {
        ServerFixture f;
        f.call([&] {
            f.server->setSupportedSubprotocols({"beta", "alpha"});
            CHECK(f.server->supportedSubprotocols() == std::vector<std::string>{"beta", "alpha"});
        });
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = connectTo(port);
        HttpRequest request = client.upgradeRequest();
        request.set("Sec-WebSocket-Protocol", "gamma, alpha, beta");
        const HttpResponse response = client.handshake(request);
        INFO("response: ", response.describe());
        CHECK(response.status == 101);
        CHECK(response.header("Sec-WebSocket-Protocol") == "alpha");
        CHECK(f.waitForNewConnections(1));
        f.call([&] {
            auto ws = f.server->nextPendingConnection();
            REQUIRE(ws != nullptr);
            CHECK(ws->subprotocol() == "alpha");
            f.taken.push_back(std::move(ws));
        });
    }

    TEST_CASE("setMaxHandshakeSize lowers the 431 limit") {
        ServerFixture f;
        f.call([&] {
            f.server->setMaxHandshakeSize(1024);
            CHECK(f.server->maxHandshakeSize() == 1024);
        });
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = connectTo(port);
        HttpRequest request = client.upgradeRequest();
        request.add("X-Padding", std::string(1100, 'p'));
        const HttpResponse response = client.handshake(request);
        INFO("response: ", response.describe());
        CHECK(response.status == 431);
        CHECK(f.waitForServerErrors(1));

        RawClient small = connectTo(port);
        CHECK(small.handshake(small.upgradeRequest()).status == 101);
    }

    TEST_CASE("failed handshakes are reported through serverError") {
        ServerFixture f;
        f.call([&] { f.server->setHandshakeTimeout(200); });
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient bad = connectTo(port);
        CHECK(bad.send("GARBAGE\r\n\r\n"));
        CHECK(bad.readResponse().status == 400);
        CHECK(f.waitForServerErrors(1));
        RawClient slow = connectTo(port);
        CHECK(slow.readUntilClosed(3s).closed);
        CHECK(f.waitForServerErrors(2));
        f.call([&] { CHECK(f.events.newConnection == 0); });
    }

    TEST_CASE("setters validate and defaults are Qt's") {
        ServerFixture f;
        f.call([&] {
            Server& s = *f.server;
            CHECK(s.maxPendingConnections() == 30);
            CHECK(s.handshakeTimeoutMS() == 10000);
            CHECK(s.maxHandshakeSize() == 16 * 1024);
            CHECK(Server::supportedVersions() == std::vector<int>{13});
            CHECK_FALSE(s.setMaxPendingConnections(0));
            CHECK_FALSE(s.setMaxPendingConnections(-1));
            CHECK_FALSE(s.setMaxPendingConnections(INT_MAX));
            CHECK_FALSE(s.setMaxPendingConnections(65536));
            CHECK(s.maxPendingConnections() == 30);
            CHECK(s.setMaxPendingConnections(1));
            CHECK(s.maxPendingConnections() == 1);
            CHECK(s.setMaxPendingConnections(65535));
            CHECK(s.maxPendingConnections() == 65535);
            s.setHandshakeTimeout(-1);
            CHECK(s.handshakeTimeoutMS() == -1);
            s.setHandshakeTimeout(std::chrono::milliseconds(1234));
            CHECK(s.handshakeTimeout() == std::chrono::milliseconds(1234));
            s.setServerName("renamed");
            CHECK(s.serverName() == "renamed");
            s.setMaxAllowedIncomingFrameSize(1234);
            CHECK(s.maxAllowedIncomingFrameSize() == 1234);
            s.setMaxAllowedIncomingMessageSize(5678);
            CHECK(s.maxAllowedIncomingMessageSize() == 5678);
            CHECK(s.socketDescriptor() == -1);
            CHECK_FALSE(s.hasPendingConnections());
            CHECK(s.nextPendingConnection() == nullptr);
        });
    }

    TEST_CASE("a renamed server names itself in new handshakes") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        f.call([&] { f.server->setServerName("second-name"); });
        RawClient client = connectTo(port);
        const HttpResponse response = client.handshake(client.upgradeRequest());
        CHECK(response.status == 101);
        CHECK(response.header("Server") == "second-name");
    }
}

TEST_SUITE("WebSocket: API behaviour") {
    TEST_CASE("ping() gets onPong with the round trip and the payload") {
        std::vector<std::pair<std::chrono::microseconds, std::string>>
            pongs; // outlives the loop thread that writes it
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        f.call([&] {
            f.taken[0]->onPong([&](std::chrono::microseconds elapsed, std::string_view payload) {
                pongs.emplace_back(elapsed, std::string(payload));
            });
            f.taken[0]->ping("are you there");
        });
        const ReceivedFrame ping = client.readFrame();
        INFO("got: ", ping.describe());
        REQUIRE(ping.isFrame());
        CHECK(int(ping.opcode) == int(opcode::ping));
        CHECK(ping.payload == "are you there");
        std::this_thread::sleep_for(50ms);
        CHECK(client.sendPong(ping.payload));
        CHECK(f.thread.waitUntil([&] { return !pongs.empty(); }));
        f.call([&] {
            REQUIRE(pongs.size() == 1);
            CHECK(pongs[0].first >= 50ms);
            CHECK(pongs[0].first < 5s);
            CHECK(pongs[0].second == "are you there");
        });
        // An unsolicited pong reports 0.
        CHECK(client.sendPong("unasked"));
        CHECK(f.thread.waitUntil([&] { return pongs.size() == 2; }));
        f.call([&] {
            CHECK(pongs[1].first == std::chrono::microseconds(0));
            CHECK(pongs[1].second == "unasked");
            // A payload over 125 bytes is cut to 125 (§5.5).
            f.taken[0]->ping(std::string(200, 'p'));
            f.taken[0]->onPong(nullptr);
        });
        const ReceivedFrame longPing = client.readFrame();
        CHECK(int(longPing.opcode) == int(opcode::ping));
        CHECK(longPing.payload == std::string(125, 'p'));
    }

    TEST_CASE("onPingReceived reports pings, which are answered automatically") {
        std::vector<std::string> pings; // outlives the loop thread that writes it
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        f.call([&] {
            f.taken[0]->onPingReceived([&](std::string_view p) { pings.emplace_back(p); });
        });
        CHECK(client.sendPing("hello"));
        CHECK(client.expectPong("hello"));
        CHECK(f.thread.waitUntil([&] { return pings.size() == 1; }));
        f.call([&] {
            CHECK(pings[0] == "hello");
            f.taken[0]->onPingReceived(nullptr);
        });
    }

    TEST_CASE("frame callbacks see each fragment with isLastFrame, before the message") {
        std::vector<std::string> log; // outlives the loop thread that writes it
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        f.call([&] {
            WebSocket& ws = *f.taken[0];
            ws.onTextFrameReceived([&](std::string_view frame, bool last) {
                log.push_back("text frame " + std::string(frame) + (last ? " last" : ""));
            });
            ws.onBinaryFrameReceived([&](std::string_view frame, bool last) {
                log.push_back("binary frame " + std::string(frame) + (last ? " last" : ""));
            });
            ws.onTextMessageReceived(
                [&](std::string_view m) { log.push_back("text message " + std::string(m)); });
            ws.onBinaryMessageReceived(
                [&](std::string_view m) { log.push_back("binary message " + std::string(m)); });
        });
        CHECK(client.send(frame(opcode::text, "one ", false) +
                          frame(opcode::continuation, "two ", false) +
                          frame(opcode::ping, "between") + frame(opcode::continuation, "three")));
        CHECK(client.expectPong("between"));
        CHECK(client.sendBinary("whole"));
        CHECK(f.thread.waitUntil([&] { return log.size() >= 6; }));
        f.call([&] {
            const std::vector<std::string> expected = {
                "text frame one ",         "text frame two ",
                "text frame three last",   "text message one two three",
                "binary frame whole last", "binary message whole"};
            CHECK(join(log) == join(expected));
            WebSocket& ws = *f.taken[0];
            ws.onTextFrameReceived(nullptr);
            ws.onBinaryFrameReceived(nullptr);
            InProcessEcho::makeEcho(ws);
        });
    }

    TEST_CASE("pauseReading holds messages back until resumeReading") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        f.call([&] {
            f.taken[0]->pauseReading();
            CHECK(f.taken[0]->isReadingPaused());
        });
        CHECK(client.sendText("held"));
        CHECK(client.sendPing("held too"));
        CHECK(client.quietFor(300ms));
        f.call([&] {
            f.taken[0]->resumeReading();
            CHECK_FALSE(f.taken[0]->isReadingPaused());
        });
        CHECK(client.expectText("held"));
        CHECK(client.expectPong("held too"));
    }

    TEST_CASE("bytesWritten and state changes are reported") {
        std::size_t written = 0;      // outlives the loop thread that writes it
        std::vector<std::string> log; // outlives the loop thread that writes it
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        f.call([&] {
            WebSocket& ws = *f.taken[0];
            ws.onBytesWritten([&](std::size_t n) { written += n; });
            ws.onStateChanged([&](SocketState s) {
                log.push_back(s == SocketState::ClosingState       ? "closing"
                              : s == SocketState::UnconnectedState ? "unconnected"
                                                                   : "connected");
            });
            ws.onAboutToClose([&] { log.push_back("aboutToClose"); });
            ws.onDisconnected([&] { log.push_back("disconnected"); });
            CHECK(ws.sendBinaryMessage(std::string(1000, 'w')) == 1000);
        });
        CHECK(client.expectBinary(std::string(1000, 'w')));
        // 1000 bytes of payload need a 4-byte header.
        CHECK(f.thread.waitUntil([&] { return written >= 1004; }));
        f.call([&] {
            CHECK(f.taken[0]->bytesToWrite() == 0);
            f.taken[0]->close();
        });
        CHECK(client.expectClose(1000).isClose());
        CHECK(client.sendClose(1000));
        CHECK(client.expectTcpClosed(serverCloseTimeout).closed);
        CHECK(f.thread.waitUntil([&] { return log.size() >= 4; }));
        f.call([&] {
            const std::vector<std::string> expected = {"aboutToClose", "closing", "unconnected",
                                                       "disconnected"};
            CHECK(join(log) == join(expected));
            WebSocket& ws = *f.taken[0];
            ws.onBytesWritten(nullptr);
            ws.onStateChanged(nullptr);
            ws.onAboutToClose(nullptr);
            ws.onDisconnected(nullptr);
        });
    }

    TEST_CASE("a protocol error is reported through onError, then onDisconnected") {
        std::vector<std::string> log; // outlives the loop thread that writes it
        std::error_code error;        // outlives the loop thread that writes it
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        f.call([&] {
            WebSocket& ws = *f.taken[0];
            ws.onError([&](std::error_code e) {
                error = e;
                log.push_back("error");
            });
            ws.onDisconnected([&] { log.push_back("disconnected"); });
        });
        FrameSpec bad;
        bad.opcode = opcode::text;
        bad.payload = "x";
        bad.rsv2 = true;
        CHECK(client.sendFrame(bad));
        CHECK(client.expectFailure(1002, 3s));
        CHECK(f.thread.waitUntil([&] { return log.size() >= 2; }));
        f.call([&] {
            CHECK(join(log) == "error, disconnected");
            CHECK(error == wsgate::Error::ReservedBitsSet);
            CHECK(error == wsgate::ErrorCondition::ProtocolViolation);
            WebSocket& ws = *f.taken[0];
            CHECK(ws.closeCode() == CloseCode::CloseCodeProtocolError);
            CHECK(ws.error() == wsgate::Error::ReservedBitsSet);
            CHECK(ws.state() == SocketState::UnconnectedState);
            ws.onError(nullptr);
            ws.onDisconnected(nullptr);
        });
    }
}

TEST_SUITE("the test harness itself") {
    // Every in-process test relies on LoopThread::finish() noticing a loop
    // that does not run dry; this one must fail for the others to mean it.
    TEST_CASE("a loop kept alive by a timer is caught" * doctest::should_fail()) {
        LoopThread thread;
        thread.call([&] { thread.loop().singleShot(2s, [] {}); });
        CHECK_FALSE(thread.finish(300ms));
    }
}

TEST_SUITE("WebSocket and Server: destruction") {
    TEST_CASE("destroying a connected WebSocket closes it with 1001") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        f.call([&] { f.taken.clear(); });
        CHECK(client.expectClose(1001).isClose());
        CHECK(client.sendClose(1001));
        const TcpCloseResult rest = client.expectTcpClosed(serverCloseTimeout);
        CHECK(rest.frames.empty());
    }

    TEST_CASE("a WebSocket may destroy itself from its own callback") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        f.call(
            [&] { f.taken[0]->onTextMessageReceived([&](std::string_view) { f.taken.clear(); }); });
        // Two messages in one read: the second arrives after the socket is gone.
        CHECK(client.send(frame(opcode::text, "destroy me") + frame(opcode::text, "and again")));
        CHECK(client.expectClose(1001).isClose());
        CHECK(client.sendClose(1001));
        CHECK(client.expectTcpClosed(serverCloseTimeout).frames.empty());
        f.call([&] { CHECK(f.taken.empty()); });
    }

    TEST_CASE("a callback may abort and destroy connections whose bytes wait in the same turn") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        constexpr int count = 8;
        std::vector<RawClient> clients;
        for (int i = 0; i < count; ++i) {
            clients.push_back(upgraded(port));
        }
        REQUIRE(f.waitForNewConnections(count));
        REQUIRE(f.takeAll() == count);
        int delivered = 0;
        f.call([&] {
            for (auto& ws : f.taken) {
                WebSocket* self = ws.get();
                ws->onTextMessageReceived([&f, &delivered, self](std::string_view) {
                    ++delivered;
                    // Every other connection goes, object and socket, while
                    // its readiness may still be queued in this very turn.
                    for (auto& other : f.taken) {
                        if (other && other.get() != self) {
                            other->abort();
                            other.reset();
                        }
                    }
                });
            }
        });
        // Sent from the loop thread, so that all of them are waiting when
        // the loop next asks the kernel which sockets are readable.
        f.call([&] {
            for (auto& client : clients) {
                CHECK(client.send(frame(opcode::text, "first one wins")));
            }
        });
        CHECK(f.thread.waitUntil([&] { return delivered > 0; }));
        // The others' sockets were closed before `delivered` was set, so only
        // the winner's read waits out its timeout.
        int closedClients = 0;
        for (auto& client : clients) {
            closedClients += client.readUntilClosed(500ms).closed ? 1 : 0;
        }
        // The winner stays open; the rest were closed without a close frame.
        CHECK(closedClients == count - 1);
        f.call([&] { CHECK(delivered == 1); });
    }

    TEST_CASE("sending to a client that has gone does not SIGPIPE the program") {
        // The library sends with MSG_NOSIGNAL and leaves SIGPIPE alone; the
        // child has it at its default action, which would kill it.
        const int status = runInChild(
            [] {
                ServerFixture f;
                const std::uint16_t port = f.listen();
                RawClient client = upgraded(port);
                if (port == 0 || !f.waitForNewConnections(1) || f.takeAll() != 1) {
                    return false;
                }
                // Not reading, the server does not see the client leave.
                f.call([&] { f.taken[0]->pauseReading(); });
                client.close();
                std::this_thread::sleep_for(50ms);
                // The first message draws a reset; one after it meets EPIPE.
                for (int i = 0; i < 10; ++i) {
                    f.call([&] { f.taken[0]->sendTextMessage(std::string(1000, 'x')); });
                    std::this_thread::sleep_for(10ms);
                }
                return f.call([&] { return !f.taken[0]->isValid(); });
            },
            20s);
        INFO("the child: ", describeStatus(status));
        CHECK_FALSE(killedBySigpipe(status));
        CHECK(status == 0);
    }

    TEST_CASE("a WebSocket may be destroyed from onDisconnected") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        f.call([&] { f.taken[0]->onDisconnected([&] { f.taken.clear(); }); });
        CHECK(client.sendClose(1000));
        CHECK(client.expectClose(1000).isClose());
        CHECK(client.expectTcpClosed(serverCloseTimeout).closed);
        CHECK(f.thread.waitUntil([&] { return f.taken.empty(); }));
    }

    TEST_CASE("destroying the Server closes pending connections with 1001, not taken ones") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient taken = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        RawClient pending1 = upgraded(port);
        RawClient pending2 = upgraded(port);
        REQUIRE(f.waitForNewConnections(3));

        f.call([&] { f.server.reset(); });
        for (RawClient* pending : {&pending1, &pending2}) {
            CHECK(pending->expectClose(1001).isClose());
            CHECK(pending->sendClose(1001));
            CHECK(pending->expectTcpClosed(serverCloseTimeout).frames.empty());
        }
        RawClient late;
        CHECK_FALSE(late.connect(port));
        CHECK(taken.sendText("outlives the server"));
        CHECK(taken.expectText("outlives the server"));
        CHECK(taken.sendClose(1000));
        CHECK(taken.expectClose(1000).isClose());
        CHECK(taken.expectTcpClosed(serverCloseTimeout).closed);
    }

    TEST_CASE("the loop runs dry after a busy connection is torn down mid-message") {
        ServerFixture f;
        const std::uint16_t port = f.listen();
        REQUIRE(port != 0);
        RawClient client = upgraded(port);
        REQUIRE(f.waitForNewConnections(1));
        REQUIRE(f.takeAll() == 1);
        // Half a frame and a fragmented message in flight when everything goes.
        CHECK(
            client.send(frame(opcode::text, "start", false) +
                        frame(opcode::continuation, std::string(1000, 'x'), false).substr(0, 500)));
        CHECK(client.quietFor(50ms));
        client.close();
        CHECK(f.thread.finish());
    }
}
