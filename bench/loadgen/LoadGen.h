// The load generator's event loop: one thread, epoll, non-blocking sockets.
#pragma once

#include "Options.h"
#include "Protocol.h"
#include "Tls.h"
#include "net/IoRing.h"

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace wsgate::bench {

class LoadGen {
public:
    explicit LoadGen(const Options& options);
    ~LoadGen();
    LoadGen(const LoadGen&) = delete;
    LoadGen& operator=(const LoadGen&) = delete;

    // Runs the mode to the end, prints the result line; returns the exit status.
    int run();

private:
    using Clock = std::chrono::steady_clock;

    enum class Phase { Setup, Warmup, Measure, Hold, Closing, Done };
    // TlsHandshaking: wss:// only, between TCP connect and the HTTP upgrade.
    // AwaitingEof: both close frames have crossed and the server is expected
    // to close TCP first (RFC 6455 §7.1.1).
    enum class State {
        Unused,
        Connecting,
        TlsHandshaking,
        Handshaking,
        Open,
        Closing,
        AwaitingEof
    };

    struct Connection {
        int fd = -1;
        std::uint32_t index = 0;
        // Bumped whenever the fd is closed, so that events still queued for
        // the old socket are recognised and dropped.
        std::uint32_t generation = 0;
        State state = State::Unused;
        bool closeSent = false;
        bool queued = false; // in sendQueue_: `out` goes in the wakeup's batch of sends
        HandshakeKey handshake;
        std::string response;
        FrameReaderState reader;
        // Bytes for the socket (ciphertext for wss://) that it did not take yet.
        ByteBuffer out;
        // wss:// only; kept across the connections of a slot.
        std::unique_ptr<TlsClient> tls;
        std::uint64_t sent = 0;
        std::uint64_t received = 0;
        std::uint64_t messageOffset = 0;
        Clock::time_point deadline;
    };

    // The numbers that the measured window is the difference of.
    struct Snapshot {
        Clock::time_point time;
        std::uint64_t messages = 0;
        std::uint64_t bytes = 0;
        std::uint64_t handshakes = 0;
        std::optional<std::uint64_t> serverTicks;
        double ownCpuSeconds = 0;
    };

    class FrameSink;
    friend class FrameSink;

    bool setUp();
    void loop();
    void advance(Clock::time_point now);
    void scanDeadlines(Clock::time_point now);
    void beginMeasure(Clock::time_point now);
    void beginClosing(Clock::time_point now);
    void startSetupConnections();
    void startSending();
    Snapshot snapshot(Clock::time_point now) const;

    bool startConnection(Connection& conn);
    void onEvent(Connection& conn, std::uint32_t events, const std::uint8_t* batchData = nullptr,
                 int batchResult = wsgate::net::IoRing::notMade);
    /// One wakeup's events: where the kernel has io_uring, every ws:// read
    /// in one system call, and every send at the end in another (wss://
    /// reads through mbedTLS as before).
    void processEvents(const epoll_event* events, int count);
    /// The connection an epoll or send-queue tag names, if its socket is
    /// still the one the tag was made for.
    Connection* liveConnection(std::uint64_t tag);
    bool wantsBatchedRead(const Connection& conn, std::uint32_t events) const;
    /// Takes the result of a batched read, reading on if it filled its slice.
    bool takeBatchedRead(Connection& conn, const std::uint8_t* data, int result, bool peerClosed);
    bool onBytes(Connection& conn, const std::uint8_t* data, std::size_t length);
    void sendQueued();
    void onConnected(Connection& conn, std::uint32_t events);
    void sendUpgradeRequest(Connection& conn);
    bool readAvailable(Connection& conn, bool peerClosed);
    void onPeerEof(Connection& conn);

    // wss:// (Tls.h): the same steps with mbedTLS between the socket and them.
    void onTlsEvent(Connection& conn, std::uint32_t events);
    bool readTls(Connection& conn, bool peerClosed);
    bool continueTlsHandshake(Connection& conn);
    void sendTls(Connection& conn, const std::uint8_t* data, std::size_t length);
    void flushTls(Connection& conn);
    bool onHandshakeBytes(Connection& conn, const std::uint8_t* data, std::size_t length);
    bool onFrameBytes(Connection& conn, const std::uint8_t* data, std::size_t length);
    void onOpen(Connection& conn);
    bool onServerClose(Connection& conn, const std::uint8_t* payload, std::size_t length);
    void finishClose(Connection& conn);
    void onStdin();

    void queueMessage(Connection& conn);
    void queueClose(Connection& conn);
    void commit(Connection& conn);
    void sendBytes(Connection& conn, const std::uint8_t* data, std::size_t length);
    void sendRaw(Connection& conn, const std::uint8_t* data, std::size_t length);
    /// head then body, sent at once; copied only if the socket cannot take
    /// them all, or earlier bytes wait.
    void sendNow(Connection& conn, const std::uint8_t* head, std::size_t headLength,
                 const std::uint8_t* body, std::size_t bodyLength);
    void flushOut(Connection& conn);

    void closeTcp(Connection& conn);
    void fail(Connection& conn, const std::string& why);
    void verifyFailed(Connection& conn, const std::string& what);
    void abortRun(const std::string& why);
    bool alive(const Connection& conn, std::uint32_t generation) const {
        return conn.generation == generation && conn.fd >= 0;
    }
    bool sending() const;
    void logError(const std::string& message);

    bool succeeded() const;
    void printResult();

    Options options_;
    // Declared before the connections, whose TLS sessions use it.
    std::unique_ptr<TlsClientContext> tls_;
    int epoll_ = -1;
    bool stdinWatched_ = false;
    Random random_;
    std::uint8_t opcode_;
    // Echo payloads are slices of this random block, at an offset that
    // depends on the connection and the sequence number, so that a lost,
    // repeated or reordered echo shows as a byte mismatch.
    std::vector<std::uint8_t> pattern_;
    MaskedPatterns maskedPatterns_;
    std::vector<Connection> connections_;
    std::vector<std::uint8_t> readBuffer_;
    // The same batching as the server's (src/net/IoRing.h): a system call
    // costs about a microsecond on the VMs this runs on, and a load
    // generator that pays two per message is the limit of the small-message
    // cases before the server is.
    wsgate::net::IoRing ring_;
    static constexpr unsigned recvSlots = 32;
    static constexpr std::size_t recvSliceSize = 4096;
    std::vector<std::uint8_t> recvSlices_;
    bool batching_ = false;
    std::vector<std::uint64_t> sendQueue_; // (generation << 32) | index
    // Frames for the connection being served, sent as one write.
    ByteBuffer tx_;

    Phase phase_ = Phase::Setup;
    Clock::time_point runStart_;
    Clock::time_point phaseDeadline_;
    Clock::time_point nextScan_;
    bool holdReleased_ = false;
    bool measureDone_ = false;
    bool aborted_ = false;
    std::string abortReason_;

    int started_ = 0;
    int open_ = 0;
    int inHandshake_ = 0;
    int active_ = 0;
    std::uint32_t sourceCounter_ = 0;

    std::uint64_t messages_ = 0;
    std::uint64_t bytes_ = 0;
    std::uint64_t handshakes_ = 0;
    std::uint64_t errors_ = 0;
    std::uint64_t verifyFailures_ = 0;
    std::uint64_t closeFailures_ = 0;
    std::uint64_t errorsLogged_ = 0;
    std::uint64_t tlsFull_ = 0;
    std::uint64_t tlsResumed_ = 0;
    std::string tlsCipherSuite_;
    std::string tlsAlpn_;

    double setupSeconds_ = 0;
    Snapshot windowStart_;
    Snapshot windowEnd_;
    bool measured_ = false;
    std::optional<std::uint64_t> rssBeforeKib_;
    std::optional<std::uint64_t> rssReadyKib_;
    std::optional<std::uint64_t> rssHeldKib_;
};

} // namespace wsgate::bench
