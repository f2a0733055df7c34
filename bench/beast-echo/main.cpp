// beast-echo: Boost.Beast as a reference echo server for the benchmark
// (bench/run --servers wsgate,qt,beast).
//
// Like qt-echo and wsgate's echo-server: 127.0.0.1 on a free port (or
// --port N), the URL on the first stdout line, text echoed as text and
// binary as binary, a 64 MiB message limit, no compression, no idle
// timeout. One thread and one io_context, as Beast's single-threaded
// examples run; each connection reads a message, writes it back, and reads
// the next, the one read and one write at a time that Beast's stream allows.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t maxMessage = 64 * 1024 * 1024;

class Session : public std::enable_shared_from_this<Session> {
public:
    explicit Session(tcp::socket socket) : ws_(std::move(socket)) {}

    void start() {
        ws_.next_layer().set_option(tcp::no_delay(true));
        // Beast's server defaults, except the idle timeout: none, as the
        // other servers have.
        websocket::stream_base::timeout timeouts =
            websocket::stream_base::timeout::suggested(beast::role_type::server);
        timeouts.idle_timeout = websocket::stream_base::none();
        ws_.set_option(timeouts);
        ws_.read_message_max(maxMessage);
        ws_.auto_fragment(false);
        ws_.async_accept([self = shared_from_this()](beast::error_code ec) {
            if (!ec) {
                self->read();
            }
        });
    }

private:
    void read() {
        ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (!ec) {
                self->write();
            }
        });
    }

    void write() {
        ws_.text(ws_.got_text());
        ws_.async_write(buffer_.data(),
                        [self = shared_from_this()](beast::error_code ec, std::size_t) {
                            if (!ec) {
                                self->buffer_.consume(self->buffer_.size());
                                self->read();
                            }
                        });
    }

    websocket::stream<tcp::socket> ws_;
    beast::flat_buffer buffer_;
};

class Listener {
public:
    Listener(asio::io_context& context, unsigned short port)
        : acceptor_(context, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port)) {}

    unsigned short port() const { return acceptor_.local_endpoint().port(); }

    void accept() {
        acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
            if (!ec) {
                std::make_shared<Session>(std::move(socket))->start();
            }
            accept();
        });
    }

private:
    tcp::acceptor acceptor_;
};

} // namespace

int main(int argc, char** argv) {
    unsigned long port = 0;
    for (int i = 1; i < argc; ++i) {
        char* end = nullptr;
        if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc &&
            (port = std::strtoul(argv[i + 1], &end, 10), *end == '\0' && port <= 65535)) {
            ++i;
            continue;
        }
        std::fprintf(stderr, "usage: beast-echo [--port N]\n");
        return 2;
    }
    try {
        // One thread: no locking in the io_context.
        asio::io_context context(1);
        Listener listener(context, static_cast<unsigned short>(port));
        listener.accept();
        std::printf("ws://127.0.0.1:%u\n", static_cast<unsigned>(listener.port()));
        std::fflush(stdout);
        context.run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "beast-echo: %s\n", e.what());
        return 1;
    }
    return 0;
}
