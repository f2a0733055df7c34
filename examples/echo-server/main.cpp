// The counterpart of Qt's Echo Server example: every text message comes back
// as text, every binary message as binary. Its options let an outside test
// suite (Autobahn's fuzzingclient, a benchmark) drive it.
#include "wsgate/EventLoop.h"
#include "wsgate/Server.h"

#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

struct Options {
    std::string address = "127.0.0.1";
    std::uint16_t port = 1234;
    std::uint64_t maxMessage = 0;
    std::vector<std::string> subprotocols;
    long handshakeTimeoutMs = -2; // -2: the library's default
    std::string serverName = "wsgate-echo";
    std::string certificateFile;
    std::string keyFile;
    std::string clientCaFile;
    // A line on stderr per client: by default only when stderr is a
    // terminal, so that a log nobody reads (a pipe left full) cannot stop
    // the server, and a load test does not pay a write per connection.
    enum class ClientLines { Auto, Always, Never } clientLines = ClientLines::Auto;
};

void usage(const char* program) {
    std::fprintf(stderr,
                 "usage: %s [--address ADDR] [--port N] [--max-message BYTES]\n"
                 "          [--subprotocols a,b] [--handshake-timeout MS] [--server-name NAME]\n"
                 "          [--cert FILE --key FILE [--client-ca FILE]] [--quiet | --verbose]\n"
                 "  --address ADDR         listen address (default 127.0.0.1; '' for any)\n"
                 "  --port N               port, 0 picks a free one (default 1234)\n"
                 "  --max-message BYTES    largest incoming frame and message (default 16 MiB)\n"
                 "  --subprotocols a,b     subprotocols spoken, in preference order\n"
                 "  --handshake-timeout MS deadline for a handshake (default 10000; <0 none)\n"
                 "  --server-name NAME     value of the Server header ('' for none)\n"
                 "  --cert FILE            serve wss:// with this PEM certificate chain\n"
                 "  --key FILE             and this PEM private key\n"
                 "  --client-ca FILE       require client certificates signed by these CAs\n"
                 "  --quiet                no line per connection\n"
                 "  --verbose              a line per connection even when stderr is not a\n"
                 "                         terminal (by default only when it is)\n"
                 "SIGTERM or SIGINT: stop accepting, close every client with 1001, exit\n"
                 "once they have answered; a second signal drops them at once.\n",
                 program);
}

bool parseNumber(const char* text, long long min, long long max, long long& out) {
    char* end = nullptr;
    errno = 0;
    long long value = std::strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max) {
        return false;
    }
    out = value;
    return true;
}

bool parseOptions(int argc, char** argv, Options& options) {
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--quiet" || arg == "--verbose") {
            options.clientLines =
                arg == "--quiet" ? Options::ClientLines::Never : Options::ClientLines::Always;
            continue;
        }
        if (arg == "--help" || arg == "-h" || i + 1 >= argc) {
            return false;
        }
        const char* value = argv[++i];
        long long number = 0;
        if (arg == "--address") {
            options.address = value;
        } else if (arg == "--port" && parseNumber(value, 0, 65535, number)) {
            options.port = static_cast<std::uint16_t>(number);
        } else if (arg == "--max-message" && parseNumber(value, 1, 1LL << 62, number)) {
            options.maxMessage = static_cast<std::uint64_t>(number);
        } else if (arg == "--handshake-timeout" &&
                   parseNumber(value, -1, 24LL * 3600 * 1000, number)) {
            options.handshakeTimeoutMs = static_cast<long>(number);
        } else if (arg == "--cert") {
            options.certificateFile = value;
        } else if (arg == "--key") {
            options.keyFile = value;
        } else if (arg == "--client-ca") {
            options.clientCaFile = value;
        } else if (arg == "--server-name") {
            options.serverName = value;
        } else if (arg == "--subprotocols") {
            std::string list = value;
            std::size_t start = 0;
            while (start <= list.size()) {
                std::size_t comma = list.find(',', start);
                std::string item = list.substr(start, comma - start);
                if (!item.empty()) {
                    options.subprotocols.push_back(item);
                }
                if (comma == std::string::npos) {
                    break;
                }
                start = comma + 1;
            }
        } else {
            std::fprintf(stderr, "echo-server: bad option or value: %s %s\n", argv[i - 1], value);
            return false;
        }
    }
    return true;
}

/// Every client, each until it disconnects. A vector costs a pointer per
/// client where a list costs a 32-byte node: a client that leaves takes the
/// last one's place, and that one's disconnect callback learns its new index.
class Clients {
public:
    void add(std::unique_ptr<wsgate::WebSocket> socket) {
        sockets_.push_back(std::move(socket));
        watch(sockets_.size() - 1);
    }

    std::size_t size() const noexcept { return sockets_.size(); }

    /// Called each time the last client leaves.
    void onEmpty(std::function<void()> f) { onEmpty_ = std::move(f); }

    /// Calls `f` on every client. Backwards, because a client that leaves
    /// inside `f` takes the last one's place, which was already visited.
    template <class F>
    void forEach(F f) {
        for (std::size_t i = sockets_.size(); i-- > 0;) {
            if (i < sockets_.size()) {
                f(*sockets_[i]);
            }
        }
    }

private:
    void watch(std::size_t index) {
        sockets_[index]->onDisconnected([this, index] { remove(index); });
    }

    // Runs inside the leaving client's own callback, which may destroy it.
    void remove(std::size_t index) {
        if (index + 1 != sockets_.size()) {
            std::swap(sockets_[index], sockets_.back());
            watch(index);
        }
        sockets_.pop_back();
        if (sockets_.empty() && onEmpty_) {
            onEmpty_();
        }
    }

    std::vector<std::unique_ptr<wsgate::WebSocket>> sockets_;
    std::function<void()> onEmpty_;
};

/// SIGTERM (systemd, docker stop) and SIGINT (Ctrl-C) stop the server the
/// way a client would want: no new connections, a close frame with 1001
/// "going away" to every client, and the exit once each has answered or
/// its close timeout (5 s) has dropped it. A second signal drops them all
/// at once.
class GracefulStop {
public:
    GracefulStop(wsgate::EventLoop& loop, wsgate::Server& server, Clients& clients, bool quiet)
        : loop_(loop), server_(server), clients_(clients), quiet_(quiet) {
        auto* uvLoop = static_cast<uv_loop_t*>(loop.nativeHandle());
        for (std::size_t i = 0; i < signals_.size(); ++i) {
            uv_signal_init(uvLoop, &signals_[i]);
            signals_[i].data = this;
            uv_signal_start(&signals_[i], onSignal, i == 0 ? SIGTERM : SIGINT);
            // The signals alone do not keep the loop running.
            uv_unref(reinterpret_cast<uv_handle_t*>(&signals_[i]));
        }
        clients_.onEmpty([this] {
            if (stopping_) {
                finish();
            }
        });
    }

    ~GracefulStop() {
        // Only reached once the loop has stopped: close the handles on it.
        if (!closed_) {
            close();
            uv_run(static_cast<uv_loop_t*>(loop_.nativeHandle()), UV_RUN_NOWAIT);
        }
    }

    GracefulStop(const GracefulStop&) = delete;
    GracefulStop& operator=(const GracefulStop&) = delete;

private:
    static void onSignal(uv_signal_t* handle, int signum) {
        static_cast<GracefulStop*>(handle->data)->stop(signum);
    }

    void stop(int signum) {
        if (stopping_) {
            if (!quiet_) {
                std::fprintf(stderr, "echo-server: %s again, dropping %zu clients\n",
                             strsignal(signum), clients_.size());
            }
            clients_.forEach([](wsgate::WebSocket& socket) { socket.abort(); });
            return;
        }
        stopping_ = true;
        if (!quiet_) {
            std::fprintf(stderr, "echo-server: %s, closing %zu clients\n", strsignal(signum),
                         clients_.size());
        }
        server_.close();
        clients_.forEach([](wsgate::WebSocket& socket) {
            socket.close(wsgate::CloseCode::CloseCodeGoingAway, "server shutting down");
        });
        if (clients_.size() == 0) {
            finish();
        }
    }

    void finish() {
        close();
        loop_.stop();
    }

    void close() {
        closed_ = true;
        for (uv_signal_t& signal : signals_) {
            uv_close(reinterpret_cast<uv_handle_t*>(&signal), nullptr);
        }
    }

    wsgate::EventLoop& loop_;
    wsgate::Server& server_;
    Clients& clients_;
    bool quiet_;
    bool stopping_ = false;
    bool closed_ = false;
    std::array<uv_signal_t, 2> signals_{};
};

/// Raises the soft limit on open descriptors to the hard one. Most
/// distributions start a process at 1,024, which would refuse every client
/// past about a thousand; the hard limit (524,288 for a systemd service on
/// Debian 12) is what the administrator allows. A select(2) caller would
/// break past 1,024, which is why the soft limit stays low by default, and
/// neither libuv nor wsgate calls select.
void raiseDescriptorLimit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) {
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
        std::fprintf(stderr, "echo-server: cannot raise the descriptor limit: %s\n",
                     std::strerror(errno));
    }
}

} // namespace

int main(int argc, char** argv) {
    Options options;
    if (!parseOptions(argc, argv, options)) {
        usage(argv[0]);
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);
    raiseDescriptorLimit();
    const bool quiet = options.clientLines == Options::ClientLines::Never;
    const bool clientLines = options.clientLines == Options::ClientLines::Always ||
                             (!quiet && ::isatty(STDERR_FILENO) == 1);

    if (options.certificateFile.empty() != options.keyFile.empty() ||
        (!options.clientCaFile.empty() && options.certificateFile.empty())) {
        std::fprintf(stderr,
                     "echo-server: --cert and --key go together (and --client-ca with them)\n");
        return 2;
    }
    bool secure = !options.certificateFile.empty();

    wsgate::EventLoop loop;
    wsgate::Server server(options.serverName,
                          secure ? wsgate::Server::SslMode::SecureMode
                                 : wsgate::Server::SslMode::NonSecureMode,
                          loop);
    if (secure) {
        wsgate::SslConfiguration ssl;
        bool loaded = ssl.setLocalCertificateChainFromFile(options.certificateFile) &&
                      ssl.setPrivateKeyFromFile(options.keyFile);
        if (loaded && !options.clientCaFile.empty()) {
            loaded = ssl.setCaCertificatesFromFile(options.clientCaFile);
            ssl.setPeerVerifyMode(wsgate::SslConfiguration::PeerVerifyMode::VerifyPeer);
        }
        if (!loaded) {
            std::fprintf(stderr, "echo-server: %s\n", ssl.errorString().c_str());
            return 1;
        }
        if (!server.setSslConfiguration(ssl)) {
            std::fprintf(stderr, "echo-server: %s\n", server.errorString().c_str());
            return 1;
        }
        server.onPeerVerifyError([&](const wsgate::ClientInfo& client, const wsgate::SslError& e) {
            if (clientLines) {
                std::fprintf(stderr, "client %s:%u: %s\n", client.address.c_str(), client.port,
                             e.errorString().c_str());
            }
        });
    }
    if (options.maxMessage != 0) {
        server.setMaxAllowedIncomingFrameSize(options.maxMessage);
        server.setMaxAllowedIncomingMessageSize(options.maxMessage);
    }
    if (options.handshakeTimeoutMs != -2) {
        server.setHandshakeTimeout(static_cast<int>(options.handshakeTimeoutMs));
    }
    server.setSupportedSubprotocols(options.subprotocols);
    Clients clients;
    // Before the URL is printed: whoever reads it may signal at once.
    GracefulStop gracefulStop(loop, server, clients, quiet);
    // An echo server keeps every client it accepts; the default of 30 pending
    // only matters when nobody takes them, which cannot happen here.
    if (!server.listen(options.address, options.port)) {
        std::fprintf(stderr, "echo-server: cannot listen on %s:%u: %s\n", options.address.c_str(),
                     options.port, server.errorString().c_str());
        return 1;
    }
    std::printf("%s\n", server.serverUrl().c_str());
    std::fflush(stdout);

    server.onNewConnection([&] {
        while (auto socket = server.nextPendingConnection()) {
            wsgate::WebSocket* raw = socket.get();
            if (clientLines) {
                std::fprintf(stderr, "client %s:%u %s\n", raw->peerAddress().c_str(),
                             raw->peerPort(), raw->resourceName().c_str());
            }
            raw->onTextMessageReceived([raw](std::string_view m) { raw->sendTextMessage(m); });
            raw->onBinaryMessageReceived([raw](std::string_view m) { raw->sendBinaryMessage(m); });
            clients.add(std::move(socket));
        }
    });
    return loop.run() < 0 ? 1 : 0;
}
