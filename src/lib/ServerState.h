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
    /// Makes a listener handle; false with the error set when it cannot.
    bool openListener();
    /// Listens on the open listener unless `rc` (of binding or adopting it)
    /// is an error; on any error closes it and sets the error.
    bool startListening(int rc);
    void closeListener();
    /// Closes the handles and frees this once they are closed.
    void destroy();
    static void onConnection(uv_stream_t* listener, int status);
    static void onHandleClosed(uv_handle_t* handle);

    LoopData& loop;
    uv_tcp_t* listener = nullptr;  // one per listen(), freed by its close callback
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
