// Many clients at once against one server: every echoed byte checked, and
// no file descriptor left behind by connections that end in every way.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "net/IoRing.h"
#include "support/EchoServerProcess.h"
#include "support/EchoTargets.h"
#include "support/RawClient.h"
#include "support/TlsTestMode.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <dirent.h>
#include <doctest/doctest.h>
#include <latch>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace wsgate::test;
using namespace std::chrono_literals;

namespace {

/// With 200 threads on a couple of cores under the sanitizers, one round
/// trip can wait a long time for a core; it must still not hang forever.
constexpr auto slowTimeout = 60s;

struct Expected {
    std::uint8_t opcode;
    std::string payload;
};

/// One client's whole life: handshake, wait for the others, `messages`
/// echoes with up to `window` in flight, close. Returns what went wrong,
/// empty when nothing did.
std::string runClient(std::uint16_t port, int id, int messages, std::size_t window,
                      std::latch& allConnected, std::atomic<std::uint64_t>& bytesChecked) {
    RawClient client;
    client.setTimeout(slowTimeout);
    std::string failure;
    if (!client.connect(port, "127.0.0.1", slowTimeout)) {
        failure = "connect failed";
    } else {
        const HttpRequest request = client.upgradeRequest("/client/" + std::to_string(id));
        const HttpResponse response = client.handshake(request, slowTimeout);
        if (response.status != 101 || response.header("Sec-WebSocket-Accept") !=
                                          expectedAcceptKey(request.header("Sec-WebSocket-Key"))) {
            failure = "handshake: " + response.describe();
        }
    }
    // Everyone is connected before anyone sends, so that all of them are
    // open at the same time.
    allConnected.arrive_and_wait();
    if (!failure.empty()) {
        return failure;
    }

    std::mt19937_64 rng(static_cast<std::uint64_t>(id) * 7919 + 1);
    // Sizes spread evenly over orders of magnitude, 1 B to 64 KiB, with both
    // ends always present.
    std::uniform_real_distribution<double> logSize(0.0, std::log(65536.0));
    std::deque<Expected> inFlight;
    auto receiveOne = [&]() -> bool {
        const Expected expected = std::move(inFlight.front());
        inFlight.pop_front();
        const ReceivedMessage m = client.readMessage(slowTimeout);
        if (!m.ok() || m.opcode != expected.opcode || !m.controlFrames.empty()) {
            failure = "message: status " + std::string(readStatusName(m.status)) +
                      (m.unexpected ? ", unexpected " + m.unexpected->describe() : "") +
                      ", opcode " + std::to_string(m.opcode) + " expected " +
                      std::to_string(expected.opcode);
            return false;
        }
        if (m.payload != expected.payload) {
            failure = "payload: " + describeDifference(expected.payload, m.payload);
            return false;
        }
        bytesChecked += m.payload.size();
        return true;
    };
    for (int k = 0; k < messages; ++k) {
        std::size_t size = static_cast<std::size_t>(std::exp(logSize(rng)));
        if (k == 0) {
            size = 1;
        } else if (k == 1) {
            size = 65536;
        }
        size = std::clamp<std::size_t>(size, 1, 65536);
        const bool text = (rng() % 2) == 0;
        Expected e{text ? opcode::text : opcode::binary,
                   text ? randomUtf8(size) : randomBytes(size)};
        if (!client.send(frame(e.opcode, e.payload))) {
            return "send of message " + std::to_string(k) + " failed";
        }
        inFlight.push_back(std::move(e));
        if (inFlight.size() >= window && !receiveOne()) {
            return failure + " (message " + std::to_string(k) + ")";
        }
    }
    while (!inFlight.empty()) {
        if (!receiveOne()) {
            return failure + " (draining)";
        }
    }
    if (!client.sendClose(1000, "done")) {
        return "send of close failed";
    }
    const ReceivedFrame close = client.readFrame(slowTimeout);
    if (!close.isClose() || close.closeCode() != 1000) {
        return "close: " + close.describe();
    }
    if (!client.readUntilClosed(slowTimeout).closed) {
        return "the server did not close TCP";
    }
    return {};
}

void runMany(std::uint16_t port, int clients, int messages, std::size_t window) {
    std::latch allConnected(clients);
    std::atomic<std::uint64_t> bytesChecked{0};
    std::vector<std::string> failures(static_cast<std::size_t>(clients));
    std::vector<std::thread> threads;
    threads.reserve(failures.size());
    for (int i = 0; i < clients; ++i) {
        threads.emplace_back([&, i] {
            failures[static_cast<std::size_t>(i)] =
                runClient(port, i, messages, window, allConnected, bytesChecked);
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    int failed = 0;
    for (std::size_t i = 0; i < failures.size(); ++i) {
        if (!failures[i].empty() && ++failed <= 5) {
            FAIL_CHECK("client ", i, ": ", failures[i]);
        }
    }
    CHECK(failed == 0);
    MESSAGE(clients, " clients, ", bytesChecked.load(), " echoed bytes checked");
}

/// Open file descriptors of process `pid`.
int countFds(pid_t pid) {
    const std::string path = "/proc/" + std::to_string(pid) + "/fd";
    DIR* dir = opendir(path.c_str());
    if (dir == nullptr) {
        return -1;
    }
    int n = 0;
    while (const dirent* entry = readdir(dir)) {
        n += entry->d_name[0] != '.' ? 1 : 0;
    }
    closedir(dir);
    return n;
}

} // namespace

TEST_SUITE("Concurrency") {
    TEST_CASE("200 concurrent clients against the echo-server process, every byte checked") {
        ProcessEcho server;
        REQUIRE(server.started());
        runMany(server.port(), 200, 50, 4);
    }

    TEST_CASE("50 concurrent clients against an in-process Server, every byte checked") {
        InProcessEcho server;
        REQUIRE(server.started());
        runMany(server.port(), 50, 20, 2);
        CHECK(server.call([](InProcessEcho::State& s) { return s.sockets.size(); }) == 50);
    }

    TEST_CASE("broadcasts from message callbacks keep every connection's order, and "
              "bytesWritten adds up to what went out") {
        // Writes made in one connection's callback to the others land while
        // the loop gathers the wakeup's sends (src/net/IoRing.h): a
        // connection's bytes must still leave in the order they were written.
        constexpr int clients = 8;
        constexpr int perClient = 80;
        constexpr std::size_t padding = 12000;
        InProcessEcho server;
        REQUIRE(server.started());
        std::vector<RawClient> raw(clients);
        for (auto& c : raw) {
            c.setTimeout(slowTimeout);
            REQUIRE(c.open(server.port()));
        }
        REQUIRE(server.waitForSockets(clients));
        auto written = std::make_shared<std::size_t>(0);
        server.call([written](InProcessEcho::State& state) {
            auto* sockets = &state.sockets;
            for (auto& socket : state.sockets) {
                socket->onTextMessageReceived([sockets](std::string_view message) {
                    for (auto& each : *sockets) {
                        each->sendTextMessage(message);
                    }
                });
                socket->onBytesWritten([written](std::size_t bytes) { *written += bytes; });
            }
            return 0;
        });
        std::vector<std::string> failures(clients);
        std::vector<std::size_t> frameBytes(clients, 0);
        std::vector<std::thread> threads;
        for (int i = 0; i < clients; ++i) {
            threads.emplace_back([&, i] {
                RawClient& c = raw[static_cast<std::size_t>(i)];
                // All sent at once, so that many are in each wakeup.
                std::string burst;
                for (int k = 0; k < perClient; ++k) {
                    burst += frame(opcode::text, std::to_string(i) + ":" + std::to_string(k) +
                                                     std::string(padding, '.'));
                }
                if (!c.send(burst)) {
                    failures[static_cast<std::size_t>(i)] = "send failed";
                    return;
                }
                // Read late, so that the server finds sockets full and
                // keeps part of a batched send for later.
                std::this_thread::sleep_for(300ms);
                std::vector<int> next(clients, 0);
                for (int n = 0; n < clients * perClient; ++n) {
                    const ReceivedMessage m = c.readMessage(slowTimeout);
                    if (!m.ok()) {
                        failures[static_cast<std::size_t>(i)] =
                            "message " + std::to_string(n) + ": " + readStatusName(m.status);
                        return;
                    }
                    frameBytes[static_cast<std::size_t>(i)] +=
                        (m.payload.size() < 126 ? 2 : 4) + m.payload.size();
                    std::size_t colon = m.payload.find(':');
                    int from = std::stoi(m.payload.substr(0, colon));
                    int seq = std::stoi(m.payload.substr(colon + 1));
                    if (from < 0 || from >= clients ||
                        seq != next[static_cast<std::size_t>(from)]) {
                        failures[static_cast<std::size_t>(i)] =
                            "out of order: " + m.payload.substr(0, colon + 4) + " expected seq " +
                            std::to_string(next[static_cast<std::size_t>(from)]);
                        return;
                    }
                    ++next[static_cast<std::size_t>(from)];
                }
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        for (int i = 0; i < clients; ++i) {
            CHECK_MESSAGE(failures[static_cast<std::size_t>(i)].empty(), "client ", i, ": ",
                          failures[static_cast<std::size_t>(i)]);
        }
        std::size_t expected = 0;
        for (std::size_t b : frameBytes) {
            expected += b;
        }
        CHECK(expected > 0);
        if (tlsTestMode()) {
            // bytesWritten counts what went to the socket: records, with
            // their headers and tags.
            CHECK(server.thread().waitUntil([&] { return *written > expected; }));
        } else {
            // Every byte a client read was reported written, and no more.
            CHECK(server.thread().waitUntil([&] { return *written == expected; }));
            CHECK(server.call([written](InProcessEcho::State&) { return *written; }) == expected);
        }
    }

    TEST_CASE("bytesToWrite counts what waits in the loop's batch of sends") {
        // A message callback writes to another connection: with batched
        // sends the frame waits for the end of the wakeup, and bytesToWrite
        // says so; with plain calls it has gone to the socket already.
        InProcessEcho server;
        REQUIRE(server.started());
        RawClient a;
        RawClient b;
        REQUIRE(a.open(server.port()));
        REQUIRE(b.open(server.port()));
        REQUIRE(server.waitForSockets(2));
        auto seen = std::make_shared<std::size_t>(~std::size_t{0});
        server.call([seen](InProcessEcho::State& state) {
            wsgate::WebSocket* other = state.sockets[1].get();
            state.sockets[0]->onTextMessageReceived([other, seen](std::string_view message) {
                other->sendTextMessage(message);
                *seen = other->bytesToWrite();
            });
            return 0;
        });
        // Which of the two sockets is `a` is not known: send on both until
        // the one with the callback answers through the other.
        const std::string message = "to the other one";
        REQUIRE(a.sendText(message));
        REQUIRE(b.sendText(message));
        REQUIRE(server.thread().waitUntil([&] { return *seen != ~std::size_t{0}; }));
        const bool batched = server.call([](InProcessEcho::State&) {
            wsgate::net::IoRing ring;
            return ring.usable();
        });
        const std::size_t waiting = server.call([seen](InProcessEcho::State&) { return *seen; });
        if (tlsTestMode()) {
            // Over TLS the frame is a record, larger than the frame.
            CHECK((batched ? waiting > 2 + message.size() : waiting == 0));
        } else {
            CHECK(waiting == (batched ? 2 + message.size() : 0));
        }
    }

    TEST_CASE("connections that end in every way leave no descriptor behind") {
        EchoOptions options;
        options.handshakeTimeoutMs = 500;
        ProcessEcho server(options);
        REQUIRE(server.started());
        const pid_t pid = server.process().pid();
        {
            // Warm up whatever the server opens once (e.g. its first client).
            RawClient warm;
            REQUIRE(warm.open(server.port()));
            CHECK(warm.sendClose(1000));
            CHECK(warm.expectClose(1000).isClose());
            CHECK(warm.expectTcpClosed().closed);
        }
        // The server may still be finishing the warm-up connection: take the
        // baseline once the count has held still for 200 ms.
        int baseline = countFds(pid);
        for (int stable = 0, i = 0; stable < 10 && i < 250; ++i) {
            std::this_thread::sleep_for(20ms);
            const int count = countFds(pid);
            stable = count == baseline ? stable + 1 : 0;
            baseline = count;
        }
        REQUIRE(baseline > 0);

        for (int round = 0; round < 20; ++round) {
            CAPTURE(round);
            std::vector<RawClient> clients;
            for (int way = 0; way < 8; ++way) {
                RawClient c;
                REQUIRE(c.connect(server.port()));
                switch (way) {
                case 0: // a clean close handshake
                    REQUIRE(c.upgrade());
                    c.sendClose(1000);
                    break;
                case 1: // TCP closed after the handshake
                    REQUIRE(c.upgrade());
                    break;
                case 2: // reset after the handshake
                    REQUIRE(c.upgrade());
                    c.abort();
                    break;
                case 3: // reset in the middle of the request
                    c.send("GET / HTTP/1.1\r\nHost: x\r\n");
                    c.abort();
                    break;
                case 4: // a refused handshake
                    c.send("POST / HTTP/1.1\r\nHost: x\r\n\r\n");
                    break;
                case 5: // half a frame, then gone
                    REQUIRE(c.upgrade());
                    c.send(frame(opcode::binary, std::string(5000, 'x')).substr(0, 2000));
                    break;
                case 6: // a protocol error
                    REQUIRE(c.upgrade());
                    c.send(std::string("\x83\x80\x00\x00\x00\x00", 6));
                    break;
                default: // silent until the handshake timeout
                    break;
                }
                clients.push_back(std::move(c));
            }
            clients.clear();
        }
        // Give the server time to notice every close and the silent ones'
        // handshake timeout to pass.
        int now = -1;
        for (int i = 0; i < 300; ++i) {
            now = countFds(pid);
            if (now == baseline) {
                break;
            }
            std::this_thread::sleep_for(20ms);
        }
        CHECK(now == baseline);
        RawClient after;
        CHECK(after.open(server.port()));
        CHECK(after.sendText("still fine"));
        CHECK(after.expectText("still fine"));
    }

    TEST_CASE("echo-server serves more clients than the soft descriptor limit it started with") {
        // Most machines start a process at a soft limit of 1,024 with a far
        // higher hard limit; here the soft limit is lowered to 64 for the
        // child only, and 200 clients must all be served at once.
        constexpr int clients = 200;
        rlimit original{};
        REQUIRE(::getrlimit(RLIMIT_NOFILE, &original) == 0);
        if (original.rlim_max < 4 * clients) {
            MESSAGE("skipped: the hard descriptor limit is ", original.rlim_max);
            return;
        }
        std::optional<ProcessEcho> server;
        {
            rlimit lowered = original;
            lowered.rlim_cur = 64;
            REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
            server.emplace(); // the child inherits the lowered limit
            REQUIRE(::setrlimit(RLIMIT_NOFILE, &original) == 0);
        }
        REQUIRE(server->started());
        std::vector<RawClient> open(clients);
        for (int i = 0; i < clients; ++i) {
            REQUIRE_MESSAGE(open[i].open(server->port()), "client ", i);
        }
        for (int i = 0; i < clients; ++i) {
            const std::string text = "client " + std::to_string(i);
            CHECK(open[i].sendText(text));
            CHECK_MESSAGE(open[i].expectText(text), "client ", i);
        }
    }

    TEST_CASE("echo-server keeps serving when nobody reads its stderr, and --verbose logs there") {
        // A pipe of one page, never read: with a line per client, echo-server
        // would block in write(2) after about 160 clients.
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        REQUIRE(::fcntl(fds[0], F_SETPIPE_SZ, 4096) >= 0);
        // Only the test's end reads without waiting; echo-server's end blocks.
        REQUIRE(::fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);
        auto readAll = [&] {
            std::string text;
            char buf[4096];
            for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) {
                text.append(buf, static_cast<std::size_t>(n));
            }
            return text;
        };
        {
            EchoServerProcess server({}, 20s, fds[1]);
            REQUIRE(server.started());
            for (int i = 0; i < 500; ++i) {
                RawClient client;
                client.setTimeout(2s);
                REQUIRE_MESSAGE(client.open(server.port()), "client ", i);
            }
            RawClient last;
            REQUIRE(last.open(server.port()));
            CHECK(last.sendText("still here"));
            CHECK(last.expectText("still here"));
        }
        CHECK(readAll().find("client ") == std::string::npos);
        {
            EchoServerProcess server({"--verbose"}, 20s, fds[1]);
            REQUIRE(server.started());
            RawClient client;
            REQUIRE(client.open(server.port()));
            CHECK(client.sendText("logged"));
            CHECK(client.expectText("logged"));
        }
        CHECK(readAll().find("client 127.0.0.1:") != std::string::npos);
        ::close(fds[0]);
        ::close(fds[1]);
    }
}
