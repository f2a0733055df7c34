#include "support/EchoTargets.h"

#include "support/TlsTestMode.h"

namespace wsgate::test {

std::vector<std::string> ProcessEcho::arguments(const EchoOptions& options) {
    // No line per connection: the concurrency suite would fill the log.
    std::vector<std::string> args{"--quiet"};
    if (!options.serverName.empty()) {
        args.insert(args.end(), {"--server-name", options.serverName});
    }
    if (!options.subprotocols.empty()) {
        std::string list;
        for (const auto& p : options.subprotocols) {
            list += (list.empty() ? "" : ",") + p;
        }
        args.insert(args.end(), {"--subprotocols", list});
    }
    if (options.handshakeTimeoutMs) {
        args.insert(args.end(),
                    {"--handshake-timeout", std::to_string(*options.handshakeTimeoutMs)});
    }
    if (options.maxMessage) {
        args.insert(args.end(), {"--max-message", std::to_string(*options.maxMessage)});
    }
    return args;
}

ProcessEcho::ProcessEcho(const EchoOptions& options) : process_(arguments(options)) {
}

InProcessEcho::InProcessEcho(const EchoOptions& options, std::string address) {
    thread_.addTeardown([this] {
        state_.sockets.clear();
        state_.server.reset();
    });
    port_ = thread_.call([&]() -> std::uint16_t {
        state_.server = std::make_unique<Server>(options.serverName, testSslMode(), thread_.loop());
        Server& server = *state_.server;
        configureForTestMode(server);
        if (!options.subprotocols.empty()) {
            server.setSupportedSubprotocols(options.subprotocols);
        }
        if (options.handshakeTimeoutMs) {
            server.setHandshakeTimeout(*options.handshakeTimeoutMs);
        }
        if (options.maxMessage) {
            server.setMaxAllowedIncomingMessageSize(*options.maxMessage);
            server.setMaxAllowedIncomingFrameSize(*options.maxMessage);
        }
        server.onServerError([this](CloseCode code) { state_.serverErrors.push_back(code); });
        server.onNewConnection([this] {
            while (auto socket = state_.server->nextPendingConnection()) {
                makeEcho(*socket);
                socket->onDisconnected([this] { ++state_.disconnects; });
                state_.sockets.push_back(std::move(socket));
            }
        });
        if (!server.listen(address, 0)) {
            FAIL_CHECK("listen(", address, ", 0) failed: ", server.errorString());
            return 0;
        }
        return server.serverPort();
    });
}

InProcessEcho::~InProcessEcho() {
    thread_.finish();
}

bool InProcessEcho::waitForSockets(std::size_t n, std::chrono::milliseconds timeout) {
    return thread_.waitUntil([&] { return state_.sockets.size() >= n; }, timeout);
}

void InProcessEcho::makeEcho(WebSocket& socket) {
    WebSocket* s = &socket;
    socket.onTextMessageReceived([s](std::string_view message) { s->sendTextMessage(message); });
    socket.onBinaryMessageReceived(
        [s](std::string_view message) { s->sendBinaryMessage(message); });
}

} // namespace wsgate::test
