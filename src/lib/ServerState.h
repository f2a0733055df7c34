// The state behind a Server. It outlives the Server object until libuv has
// closed its listener and timer.
#pragma once

#include "net/Connection.h"
#include "net/DeadlineQueue.h"
#include "net/LoopData.h"
#include "net/TlsContext.h"
#include "proto/Handshake.h"
#include "proto/Protocol.h"
#include "wsgate/Server.h"

#include <uv.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace wsgate::detail {

struct ServerState {
    ServerState(std::string name, Server::SslMode mode, LoopData& loopData);

    /// Reports a refused or failed handshake through serverError.
    void reportHandshakeError(Error error);
    void setError(CloseCode code, std::string text);
    /// Listens on socket `fd` (bound, or adopted from the application),
    /// watched by a new listener handle; on any error closes `fd` and sets
    /// the error.
    bool startListening(int fd);
    void closeListener();
    /// Accepts what waits in the listener's backlog, a bounded number per
    /// turn of the loop.
    void acceptConnections();
    /// What an accept's errno means: true to go on accepting (a connection
    /// that went away meanwhile), false to stop for this turn (none waiting,
    /// or an error, which is reported).
    bool handleAcceptError(int error);
    /// A socket accepted and not taken on (a negative errno): reported.
    void reportAcceptError(int rc);
    /// Out of descriptors: accepts and closes what waits, so that those
    /// clients see a closed connection rather than a hang.
    void shedConnections();
    /// Watches the listener unless paused or closed.
    void updateAccepting();
    /// Closes the handles and frees this once they are closed.
    void destroy();
    static void onListenerReadable(uv_poll_t* poll, int status, int events);
    static void onHandleClosed(uv_handle_t* handle);

    LoopData& loop;
    int listenFd = -1;
    uv_poll_t* listener = nullptr; // one per listen(), freed by its close callback
    net::DeadlineQueue handshakes; // connections in their handshake, by deadline
    std::deque<Connection*> pending;
    std::string serverName;
    std::vector<std::string> subprotocols;
    std::string errorText;
    proto::ProtocolLimits limits;
    std::size_t maxHandshakeSize = proto::defaultMaxHeaderBytes;
    std::int64_t handshakeTimeoutMs = 10000;
    std::uint32_t messageTimeoutMs = 60000;
    int maxPending = 30;
    int openHandles = 1; // the handshake timer
    Server::SslMode mode;
    CloseCode error = CloseCode::CloseCodeNormal;
    bool listening = false;
    bool paused = false;
    bool destroyed = false;

    std::function<void(std::error_code)> acceptError;
    std::function<void()> closed;
    std::function<void()> newConnection;
    std::function<void(CorsAuthenticator&)> originAuthenticationRequired;
    std::function<void(CloseCode)> serverError;

    // SecureMode: the context is shared with every connection made from it,
    // since accepted connections outlive the server.
    std::shared_ptr<net::TlsContext> tls;
    SslConfiguration sslConfiguration;
    std::function<void(const ClientInfo&, const SslError&)> peerVerifyError;
    std::function<bool(const ClientInfo&, const std::vector<SslError>&)> sslErrors;
    std::function<bool(const ClientInfo&, const SslError&)> handshakeInterruptedOnError;
    std::function<void(const ClientInfo&, PreSharedKeyAuthenticator&)>
        preSharedKeyAuthenticationRequired;
    std::function<void(const ClientInfo&, const SslAlert&)> alertReceived;
    std::function<void(const ClientInfo&, const SslAlert&)> alertSent;
};

} // namespace wsgate::detail
