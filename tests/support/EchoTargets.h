// The two echo servers that suites run against: the example echo-server as a
// process, and the same behaviour on an in-process wsgate::Server.
#pragma once

#include "support/EchoServerProcess.h"
#include "support/LoopThread.h"
#include "wsgate/Server.h"
#include "wsgate/WebSocket.h"

#include <cstdint>
#include <doctest/doctest.h>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace wsgate::test {

/// The options that echo-server takes on its command line.
struct EchoOptions {
    std::string serverName;                  ///< --server-name
    std::vector<std::string> subprotocols;   ///< --subprotocols a,b
    std::optional<int> handshakeTimeoutMs;   ///< --handshake-timeout
    std::optional<std::uint64_t> maxMessage; ///< --max-message
};

/// examples/echo-server as a child process.
class ProcessEcho {
public:
    explicit ProcessEcho(const EchoOptions& options = {});
    bool started() const noexcept { return process_.started(); }
    std::uint16_t port() const noexcept { return process_.port(); }
    EchoServerProcess& process() noexcept { return process_; }

private:
    static std::vector<std::string> arguments(const EchoOptions& options);
    EchoServerProcess process_;
};

/// A wsgate::Server on a LoopThread that takes every connection as soon as
/// it is pending and echoes text as text and binary as binary, as
/// echo-server does (over wss:// under WSGATE_TEST_TLS=1). Its destructor
/// CHECKs that the loop runs dry.
class InProcessEcho {
public:
    /// What the server has seen; touch it only on the loop thread (call()).
    struct State {
        std::unique_ptr<Server> server;
        std::vector<std::unique_ptr<WebSocket>> sockets;
        std::vector<CloseCode> serverErrors;
        std::size_t disconnects = 0;
    };

    explicit InProcessEcho(const EchoOptions& options = {}, std::string address = "127.0.0.1");
    ~InProcessEcho();
    InProcessEcho(const InProcessEcho&) = delete;
    InProcessEcho& operator=(const InProcessEcho&) = delete;

    bool started() const noexcept { return port_ != 0; }
    std::uint16_t port() const noexcept { return port_; }
    LoopThread& thread() noexcept { return thread_; }

    /// Runs `f(State&)` on the loop thread and returns its result.
    template <class F>
    auto call(F&& f) {
        return thread_.call([&] { return f(state_); });
    }
    /// Waits until `n` connections have been taken.
    bool waitForSockets(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5));
    /// Destroys the server and sockets, and CHECKs that the loop runs dry.
    bool finish() { return thread_.finish(); }

    /// Gives a taken socket the echo behaviour (on the loop thread).
    static void makeEcho(WebSocket& socket);

private:
    // state_ is declared before thread_ so that it outlives the loop thread,
    // whose teardown empties it.
    State state_;
    LoopThread thread_;
    std::uint16_t port_ = 0;
};

} // namespace wsgate::test

TYPE_TO_STRING(wsgate::test::ProcessEcho);
TYPE_TO_STRING(wsgate::test::InProcessEcho);
