#include "LoadGen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace wsgate::bench {

namespace {

constexpr std::size_t readBufferSize = 256 * 1024;
constexpr std::size_t maxResponseHead = 16 * 1024;
// Offsets into the pattern are taken modulo this prime, so two messages of
// one connection share an offset only if they are 4093 messages apart.
constexpr std::uint64_t patternSpan = 4093;
constexpr int maxEvents = 1024;
constexpr auto scanInterval = std::chrono::milliseconds(100);
constexpr std::uint64_t maxErrorLines = 20;
constexpr std::uint64_t stdinTag = UINT64_MAX;
/// How long a wakeup's first queued send may wait for its other events.
constexpr auto maxSendHold = std::chrono::microseconds(200);
// Masked copies of the echo pattern (MaskedPatterns), within a memory bound.
constexpr std::size_t maskedCopies = 8;
constexpr std::size_t maskedCopiesBytes = 64 * 1024 * 1024;
// From this size on, a message is sent by itself, straight from its masked
// copy: a system call per message costs little next to copying its bytes.
constexpr std::size_t directSendSize = 16 * 1024;

std::uint64_t patternOffset(std::uint32_t connection, std::uint64_t sequence) {
    return (sequence * 2654435761ULL + std::uint64_t{connection} * 40503ULL) % patternSpan;
}

// Seconds as the clock's duration, for deadlines taken from the options.
std::chrono::steady_clock::duration span(double seconds) {
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(seconds));
}

template <typename Duration>
double toSeconds(Duration d) {
    return std::chrono::duration<double>(d).count();
}

double ownCpuSeconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    auto tv = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
    return tv(usage.ru_utime) + tv(usage.ru_stime);
}

// utime + stime of a process, all threads, in clock ticks (proc(5), fields 14 and 15).
std::optional<std::uint64_t> processCpuTicks(pid_t pid) {
    std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(file, line)) {
        return std::nullopt;
    }
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    std::size_t close = line.rfind(')');
    if (close == std::string::npos) {
        return std::nullopt;
    }
    std::istringstream rest(line.substr(close + 1));
    std::string field;
    std::uint64_t utime = 0;
    std::uint64_t stime = 0;
    // Field 3 (state) is the first after ')'; utime is field 14.
    for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14) {
            utime = std::strtoull(field.c_str(), nullptr, 10);
        } else if (i == 15) {
            stime = std::strtoull(field.c_str(), nullptr, 10);
            return utime + stime;
        }
    }
    return std::nullopt;
}

std::optional<std::uint64_t> processRssKib(pid_t pid) {
    std::ifstream file("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(file, line)) {
        if (line.starts_with("VmRSS:")) {
            return std::strtoull(line.c_str() + 6, nullptr, 10);
        }
    }
    return std::nullopt;
}

std::string jsonEscape(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
            out += escaped;
        } else {
            out += c;
        }
    }
    return out;
}

// A failed mbedTLS call, with the socket's error behind it when there is one.
std::string tlsFailure(const char* what, const TlsClient& tls, int rc) {
    std::string text = std::string(what) + ": " + tlsErrorText(rc);
    if (tls.socketError() != 0) {
        text += std::string(": ") + std::strerror(tls.socketError());
    }
    return text;
}

const char* modeName(Mode mode) {
    switch (mode) {
    case Mode::Echo:
        return "echo";
    case Mode::Handshakes:
        return "handshakes";
    case Mode::Idle:
        return "idle";
    }
    return "?";
}

} // namespace

// Routes the frame reader's callbacks to the connection they belong to.
class LoadGen::FrameSink {
public:
    FrameSink(LoadGen& gen, Connection& conn) : gen_(gen), conn_(conn) {}

    bool onMessageStart(std::uint8_t opcode) {
        if (conn_.state == State::AwaitingEof) {
            gen_.fail(conn_, "a data frame after the server's close frame");
            return false;
        }
        if (gen_.options_.mode != Mode::Echo) {
            gen_.fail(conn_, "data message from the server, which was sent none");
            return false;
        }
        if (conn_.received == conn_.sent) {
            gen_.verifyFailed(conn_, "an echo arrived for a message never sent");
            return false;
        }
        if (opcode != gen_.opcode_) {
            gen_.verifyFailed(conn_, "the echo has opcode " + std::to_string(opcode) +
                                         ", the message had " + std::to_string(gen_.opcode_));
            return false;
        }
        conn_.messageOffset = 0;
        return true;
    }

    bool onPayload(const std::uint8_t* data, std::size_t length) {
        std::size_t size = gen_.options_.size;
        if (conn_.messageOffset + length > size) {
            gen_.verifyFailed(conn_, "the echo is longer than the " + std::to_string(size) +
                                         " bytes sent");
            return false;
        }
        const std::uint8_t* expected =
            gen_.pattern_.data() + patternOffset(conn_.index, conn_.received) + conn_.messageOffset;
        if (std::memcmp(data, expected, length) != 0) {
            std::size_t at = 0;
            while (data[at] == expected[at]) {
                ++at;
            }
            char detail[160];
            std::snprintf(detail, sizeof detail,
                          "byte %" PRIu64 " of %zu differs: expected 0x%02x, got 0x%02x",
                          conn_.messageOffset + at, size, expected[at], data[at]);
            gen_.verifyFailed(conn_, detail);
            return false;
        }
        conn_.messageOffset += length;
        return true;
    }

    bool onMessageEnd() {
        if (conn_.messageOffset != gen_.options_.size) {
            gen_.verifyFailed(conn_, "the echo is " + std::to_string(conn_.messageOffset) +
                                         " bytes, not " + std::to_string(gen_.options_.size));
            return false;
        }
        ++conn_.received;
        ++gen_.messages_;
        gen_.bytes_ += gen_.options_.size;
        if (gen_.phase_ == Phase::Measure && gen_.options_.messages != 0 &&
            gen_.messages_ - gen_.windowStart_.messages >= gen_.options_.messages) {
            gen_.measureDone_ = true;
        }
        if (gen_.sending()) {
            gen_.queueMessage(conn_);
        }
        return true;
    }

    bool onControl(std::uint8_t opcode, const std::uint8_t* data, std::size_t length) {
        if (opcode == opPing) {
            // RFC 6455 §5.5.2: answer with the same application data, unless our
            // close has gone out: nothing may follow it (§5.5.1).
            if (conn_.closeSent) {
                return true;
            }
            appendFrame(gen_.tx_, opPong, data, length, gen_.random_.next32());
            return true;
        }
        if (opcode == opPong) {
            return true;
        }
        if (conn_.state == State::AwaitingEof) {
            gen_.fail(conn_, "a control frame after the server's close frame");
            return false;
        }
        return gen_.onServerClose(conn_, data, length);
    }

    void fail(const char* why) { gen_.fail(conn_, std::string("protocol error: ") + why); }

private:
    LoadGen& gen_;
    Connection& conn_;
};

LoadGen::LoadGen(const Options& options)
    : options_(options), opcode_(options.binary ? opBinary : opText) {
}

LoadGen::~LoadGen() {
    for (Connection& conn : connections_) {
        if (conn.fd >= 0) {
            ::close(conn.fd);
        }
    }
    if (epoll_ >= 0) {
        ::close(epoll_);
    }
}

bool LoadGen::setUp() {
    // Enough descriptors for every connection plus a margin for stdio and epoll.
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    rlim_t needed = static_cast<rlim_t>(options_.connections) + 64;
    if (limit.rlim_cur < needed) {
        limit.rlim_cur = std::min(limit.rlim_max, std::max(needed, limit.rlim_cur));
        setrlimit(RLIMIT_NOFILE, &limit);
        if (limit.rlim_cur < needed) {
            std::fprintf(stderr,
                         "loadgen: %d connections need %llu descriptors, the hard limit is %llu\n",
                         options_.connections, static_cast<unsigned long long>(needed),
                         static_cast<unsigned long long>(limit.rlim_max));
            return false;
        }
    }

    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) {
        std::perror("loadgen: epoll_create1");
        return false;
    }
    if (options_.mode == Mode::Idle && options_.holdStdin) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u64 = stdinTag;
        // A regular file or /dev/null cannot be watched; then only the duration ends the hold.
        stdinWatched_ = epoll_ctl(epoll_, EPOLL_CTL_ADD, STDIN_FILENO, &event) == 0;
        if (!stdinWatched_) {
            std::fprintf(stderr, "loadgen: stdin cannot be watched; holding for --hold-seconds\n");
        }
    }

    if (options_.tls) {
        tls_ = TlsClientContext::create(options_.tlsResume, options_.tlsBrowserOffer);
        if (!tls_) {
            return false;
        }
    }
    if (options_.mode == Mode::Echo) {
        pattern_.resize(options_.size + patternSpan);
        for (std::uint8_t& byte : pattern_) {
            std::uint32_t r = random_.next32();
            // Printable ASCII keeps text messages valid UTF-8.
            byte = options_.binary ? static_cast<std::uint8_t>(r)
                                   : static_cast<std::uint8_t>(' ' + r % 95);
        }
        std::size_t copies =
            std::clamp<std::size_t>(maskedCopiesBytes / pattern_.size(), 1, maskedCopies);
        maskedPatterns_.build(pattern_, copies, random_);
    }
    readBuffer_.resize(readBufferSize);
    connections_.resize(static_cast<std::size_t>(options_.connections));
    for (std::size_t i = 0; i < connections_.size(); ++i) {
        connections_[i].index = static_cast<std::uint32_t>(i);
    }
    return true;
}

int LoadGen::run() {
    if (!setUp()) {
        return 1;
    }
    if (options_.serverPid != 0) {
        rssBeforeKib_ = processRssKib(options_.serverPid);
    }
    runStart_ = Clock::now();
    nextScan_ = runStart_ + scanInterval;
    if (options_.mode == Mode::Handshakes) {
        // Each client loops on its own; there is nothing to set up first.
        phase_ = Phase::Warmup;
        phaseDeadline_ = runStart_ + span(options_.warmup);
        for (Connection& conn : connections_) {
            if (!startConnection(conn)) {
                break;
            }
        }
    } else {
        phase_ = Phase::Setup;
        phaseDeadline_ = runStart_ + span(options_.setupTimeout);
        startSetupConnections();
    }
    loop();
    printResult();
    return succeeded() ? 0 : 1;
}

void LoadGen::loop() {
    std::vector<epoll_event> events(maxEvents);
    while (phase_ != Phase::Done) {
        Clock::time_point now = Clock::now();
        Clock::time_point wake = std::min(phaseDeadline_, nextScan_);
        int timeoutMs = 0;
        if (wake > now) {
            timeoutMs = static_cast<int>(std::ceil(toSeconds(wake - now) * 1000.0));
        }
        int count = epoll_wait(epoll_, events.data(), maxEvents, timeoutMs);
        if (count < 0) {
            if (errno == EINTR) {
                continue;
            }
            std::perror("loadgen: epoll_wait");
            abortRun("epoll_wait failed");
            break;
        }
        processEvents(events.data(), count);
        advance(Clock::now());
    }
}

void LoadGen::advance(Clock::time_point now) {
    if (now >= nextScan_) {
        scanDeadlines(now);
        nextScan_ = now + scanInterval;
    }
    switch (phase_) {
    case Phase::Setup:
        startSetupConnections();
        if (open_ == options_.connections) {
            setupSeconds_ = toSeconds(now - runStart_);
            if (options_.mode == Mode::Echo) {
                phase_ = Phase::Warmup;
                phaseDeadline_ = now + span(options_.warmup);
                startSending();
            } else {
                // Idle: the server holds every connection now.
                beginMeasure(now);
                phase_ = Phase::Hold;
                phaseDeadline_ = now + span(options_.holdSeconds);
                if (options_.serverPid != 0) {
                    rssReadyKib_ = processRssKib(options_.serverPid);
                }
                std::printf("READY {\"connections\":%d,\"setup_seconds\":%.3f}\n", open_,
                            setupSeconds_);
                std::fflush(stdout);
            }
        } else if (now >= phaseDeadline_) {
            abortRun("setup timed out with " + std::to_string(open_) + " of " +
                     std::to_string(options_.connections) + " connections open");
        }
        break;
    case Phase::Warmup:
        if (now >= phaseDeadline_) {
            beginMeasure(now);
            phase_ = Phase::Measure;
            phaseDeadline_ = now + span(options_.seconds);
        }
        break;
    case Phase::Measure:
        if (now >= phaseDeadline_ || measureDone_) {
            windowEnd_ = snapshot(now);
            measured_ = true;
            beginClosing(now);
        }
        break;
    case Phase::Hold:
        if (now >= phaseDeadline_ || holdReleased_) {
            if (options_.serverPid != 0) {
                rssHeldKib_ = processRssKib(options_.serverPid);
            }
            windowEnd_ = snapshot(now);
            measured_ = true;
            beginClosing(now);
        }
        break;
    case Phase::Closing:
        if (active_ == 0) {
            phase_ = Phase::Done;
        } else if (now >= phaseDeadline_) {
            for (Connection& conn : connections_) {
                if (conn.fd >= 0) {
                    ++closeFailures_;
                    closeTcp(conn);
                }
            }
            logError("closing handshakes still open after --close-timeout: " +
                     std::to_string(closeFailures_));
            phase_ = Phase::Done;
        }
        break;
    case Phase::Done:
        break;
    }
}

void LoadGen::scanDeadlines(Clock::time_point now) {
    for (Connection& conn : connections_) {
        if (conn.fd < 0) {
            // A handshake client whose connect() failed outright retries here,
            // at most once per scan, so a refusing server cannot make it spin.
            if (options_.mode == Mode::Handshakes && sending()) {
                startConnection(conn);
            }
            continue;
        }
        if (now < conn.deadline) {
            continue;
        }
        if (conn.state == State::Connecting || conn.state == State::TlsHandshaking ||
            conn.state == State::Handshaking) {
            fail(conn, "connect and handshake took longer than --op-timeout");
        } else if ((conn.state == State::Closing || conn.state == State::AwaitingEof) &&
                   phase_ != Phase::Closing) {
            fail(conn, "no closing handshake within --close-timeout");
        }
    }
}

LoadGen::Snapshot LoadGen::snapshot(Clock::time_point now) const {
    Snapshot s;
    s.time = now;
    s.messages = messages_;
    s.bytes = bytes_;
    s.handshakes = handshakes_;
    if (options_.serverPid != 0) {
        s.serverTicks = processCpuTicks(options_.serverPid);
    }
    s.ownCpuSeconds = ownCpuSeconds();
    return s;
}

void LoadGen::beginMeasure(Clock::time_point now) {
    windowStart_ = snapshot(now);
}

void LoadGen::beginClosing(Clock::time_point now) {
    phase_ = Phase::Closing;
    phaseDeadline_ = now + span(options_.closeTimeout);
    for (Connection& conn : connections_) {
        if (conn.fd < 0) {
            continue;
        }
        if (conn.state == State::Open) {
            queueClose(conn);
            std::uint32_t generation = conn.generation;
            commit(conn);
            if (alive(conn, generation)) {
                conn.deadline = phaseDeadline_;
            }
        } else if (conn.state != State::Closing && conn.state != State::AwaitingEof) {
            // Still connecting: nothing to close politely.
            closeTcp(conn);
        }
    }
}

void LoadGen::startSetupConnections() {
    while (phase_ == Phase::Setup && started_ < options_.connections &&
           inHandshake_ < options_.ramp) {
        Connection& conn = connections_[static_cast<std::size_t>(started_)];
        ++started_;
        if (!startConnection(conn)) {
            return;
        }
    }
}

void LoadGen::startSending() {
    for (Connection& conn : connections_) {
        if (conn.state != State::Open) {
            continue;
        }
        // The first D messages of a connection go out in one write.
        for (int i = 0; i < options_.depth; ++i) {
            queueMessage(conn);
        }
        commit(conn);
    }
}

bool LoadGen::sending() const {
    return (phase_ == Phase::Warmup || phase_ == Phase::Measure) && !measureDone_;
}

bool LoadGen::startConnection(Connection& conn) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ++errors_;
        logError(std::string("socket: ") + std::strerror(errno));
        abortRun("cannot create sockets");
        return false;
    }
    int one = 1;
    if (options_.mode == Mode::Echo || options_.tls) {
        // Small echoes, and a TLS flight's records, must not wait for
        // Nagle's algorithm. Over ws:// the other modes never write while a
        // write is unanswered, so Nagle never holds them, and a handshake
        // cycle is a system call cheaper without it.
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (options_.sourceIps > 1) {
        // Each source address has its own ephemeral port range towards the server.
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        sockaddr_in source{};
        source.sin_family = AF_INET;
        std::uint32_t host = 0x7F000001U + sourceCounter_++ % std::uint32_t(options_.sourceIps);
        source.sin_addr.s_addr = htonl(host);
        if (bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof source) < 0) {
            ::close(fd);
            ++errors_;
            logError(std::string("bind: ") + std::strerror(errno));
            abortRun("cannot bind the source address");
            return false;
        }
    }
    sockaddr_in target{};
    target.sin_family = AF_INET;
    target.sin_port = htons(options_.port);
    target.sin_addr.s_addr = options_.hostAddress;
    if (connect(fd, reinterpret_cast<sockaddr*>(&target), sizeof target) < 0 &&
        errno != EINPROGRESS) {
        int error = errno;
        ::close(fd);
        ++errors_;
        logError(std::string("connect: ") + std::strerror(error));
        if (errors_ > options_.maxErrors || options_.mode != Mode::Handshakes) {
            abortRun("cannot connect");
        }
        return false;
    }
    if (tls_) {
        int rc = 0;
        if (!conn.tls) {
            conn.tls = TlsClient::create(*tls_);
        }
        if (!conn.tls || (rc = conn.tls->begin(fd)) != 0) {
            ::close(fd);
            ++errors_;
            if (rc != 0) {
                logError("TLS session reset: " + tlsErrorText(rc));
            }
            abortRun("cannot set up a TLS session");
            return false;
        }
    }
    conn.fd = fd;
    conn.state = State::Connecting;
    conn.closeSent = false;
    conn.reader = FrameReaderState{};
    conn.sent = conn.received = conn.messageOffset = 0;
    conn.deadline = Clock::now() + span(options_.opTimeout);
    epoll_event event{};
    // Edge-triggered: registered once, never modified; reads drain, writes queue.
    event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    event.data.u64 = (std::uint64_t{conn.generation} << 32) | conn.index;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) < 0) {
        std::perror("loadgen: epoll_ctl");
        ::close(fd);
        conn.fd = -1;
        abortRun("epoll_ctl failed");
        return false;
    }
    ++active_;
    ++inHandshake_;
    return true;
}

void LoadGen::onEvent(Connection& conn, std::uint32_t events, const std::uint8_t* batchData,
                      int batchResult) {
    if (conn.tls) {
        onTlsEvent(conn, events);
        return;
    }
    std::uint32_t generation = conn.generation;
    if (conn.state == State::Connecting) {
        if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) {
            return;
        }
        onConnected(conn, events);
        if (!alive(conn, generation)) {
            return;
        }
    } else if ((events & EPOLLOUT) != 0 && !conn.out.empty()) {
        flushOut(conn);
        if (!alive(conn, generation)) {
            return;
        }
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
        bool peerClosed = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
        bool open = batchResult != wsgate::net::IoRing::notMade
                        ? takeBatchedRead(conn, batchData, batchResult, peerClosed)
                        : readAvailable(conn, peerClosed);
        if (!open) {
            tx_.clear();
            return;
        }
    }
    commit(conn);
}

void LoadGen::processEvents(const epoll_event* events, int count) {
    if (recvSlices_.empty()) {
        recvSlices_.resize(recvSlots * recvSliceSize);
    }
    batching_ = true;
    Clock::time_point gatherStart = Clock::now();
    int results[recvSlots];
    for (int base = 0; base < count && phase_ != Phase::Done; base += static_cast<int>(recvSlots)) {
        int end = std::min(count, base + static_cast<int>(recvSlots));
        bool batchReads = ring_.usable();
        for (int i = base; i < end; ++i) {
            auto slot = static_cast<unsigned>(i - base);
            Connection* conn = liveConnection(events[i].data.u64);
            if (batchReads && conn != nullptr && wantsBatchedRead(*conn, events[i].events)) {
                ring_.prepareRecv(conn->fd, recvSlices_.data() + slot * recvSliceSize,
                                  recvSliceSize, slot);
            }
        }
        ring_.runByTag(results, static_cast<unsigned>(end - base));
        for (int i = base; i < end && phase_ != Phase::Done; ++i) {
            auto slot = static_cast<unsigned>(i - base);
            if (events[i].data.u64 == stdinTag) {
                onStdin();
                continue;
            }
            // Null for an event of a socket closed earlier in this batch.
            if (Connection* conn = liveConnection(events[i].data.u64)) {
                onEvent(*conn, events[i].events, recvSlices_.data() + slot * recvSliceSize,
                        results[slot]);
            }
            if (!sendQueue_.empty()) {
                // As the server does: a heavy event (a TLS key exchange)
                // must not hold the sends of the ones before it.
                Clock::time_point now = Clock::now();
                if (now - gatherStart > maxSendHold) {
                    sendQueued();
                    gatherStart = now;
                }
            }
        }
    }
    batching_ = false;
    sendQueued();
}

LoadGen::Connection* LoadGen::liveConnection(std::uint64_t tag) {
    if (tag == stdinTag) {
        return nullptr;
    }
    Connection& conn = connections_[tag & 0xFFFFFFFFU];
    bool live = conn.generation == static_cast<std::uint32_t>(tag >> 32) && conn.fd >= 0;
    return live ? &conn : nullptr;
}

bool LoadGen::wantsBatchedRead(const Connection& conn, std::uint32_t events) const {
    return !conn.tls && conn.state != State::Connecting &&
           (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
}

bool LoadGen::takeBatchedRead(Connection& conn, const std::uint8_t* data, int result,
                              bool peerClosed) {
    if (result > 0) {
        std::uint32_t generation = conn.generation;
        auto length = static_cast<std::size_t>(result);
        if (!onBytes(conn, data, length) || !alive(conn, generation)) {
            return false;
        }
        // A full slice may have left bytes behind, and a FIN needs a read of
        // its own to be seen.
        return length < recvSliceSize && !peerClosed ? true : readAvailable(conn, peerClosed);
    }
    if (result == 0) {
        onPeerEof(conn);
        return false;
    }
    if (result == -EAGAIN) {
        return true;
    }
    if (result == -EINTR) {
        return readAvailable(conn, peerClosed); // nothing was read: read now
    }
    fail(conn, std::string("read: ") + std::strerror(-result));
    return false;
}

void LoadGen::sendQueued() {
    std::size_t next = 0;
    while (next < sendQueue_.size()) {
        std::size_t end = std::min(sendQueue_.size(), next + wsgate::net::IoRing::capacity);
        bool batchSends = ring_.usable();
        for (std::size_t i = next; batchSends && i < end; ++i) {
            if (Connection* conn = liveConnection(sendQueue_[i])) {
                ring_.prepareSend(conn->fd, conn->out.data(), conn->out.size(),
                                  static_cast<std::uint32_t>(i - next));
            }
        }
        int results[wsgate::net::IoRing::capacity];
        ring_.runByTag(results, static_cast<unsigned>(end - next));
        for (std::size_t i = next; i < end; ++i) {
            Connection* conn = liveConnection(sendQueue_[i]);
            if (conn == nullptr) {
                continue;
            }
            conn->queued = false;
            int result = results[i - next];
            if (result >= 0) {
                conn->out.consume(static_cast<std::size_t>(result));
            } else if (result == wsgate::net::IoRing::notMade || result == -EINTR) {
                flushOut(*conn);
            } else if (result != -EAGAIN) {
                fail(*conn, std::string("send: ") + std::strerror(-result));
            }
            // What is left goes on EPOLLOUT.
        }
        next = end;
    }
    sendQueue_.clear();
}

void LoadGen::onConnected(Connection& conn, std::uint32_t events) {
    // EPOLLOUT alone is a connect that succeeded; only a failed one has an
    // error to read (one system call fewer per handshake cycle).
    if ((events & (EPOLLERR | EPOLLHUP)) != 0) {
        int error = 0;
        socklen_t length = sizeof error;
        getsockopt(conn.fd, SOL_SOCKET, SO_ERROR, &error, &length);
        fail(conn, std::string("connect: ") +
                       (error != 0 ? std::strerror(error) : "the connection was closed"));
        return;
    }
    if (conn.tls) {
        // readTls drives the TLS handshake; the upgrade request follows it.
        conn.state = State::TlsHandshaking;
        return;
    }
    sendUpgradeRequest(conn);
}

void LoadGen::sendUpgradeRequest(Connection& conn) {
    conn.state = State::Handshaking;
    conn.handshake = makeHandshakeKey(random_);
    std::string request =
        makeUpgradeRequest(options_.host, options_.port, options_.path,
                           std::string_view(conn.handshake.key.data(), conn.handshake.key.size()));
    sendBytes(conn, reinterpret_cast<const std::uint8_t*>(request.data()), request.size());
}

bool LoadGen::readAvailable(Connection& conn, bool peerClosed) {
    std::uint32_t generation = conn.generation;
    for (;;) {
        ssize_t n = ::read(conn.fd, readBuffer_.data(), readBuffer_.size());
        if (n > 0) {
            auto length = static_cast<std::size_t>(n);
            if (!onBytes(conn, readBuffer_.data(), length) || !alive(conn, generation)) {
                return false;
            }
            // A short read drained the socket and the next arrival raises a new
            // edge, except a FIN that came with this data: read on to see it.
            if (length < readBuffer_.size() && !peerClosed) {
                return true;
            }
        } else if (n == 0) {
            onPeerEof(conn);
            return false;
        } else if (errno == EAGAIN) {
            return true;
        } else if (errno != EINTR) {
            fail(conn, std::string("read: ") + std::strerror(errno));
            return false;
        }
    }
}

bool LoadGen::onBytes(Connection& conn, const std::uint8_t* data, std::size_t length) {
    return conn.state == State::Handshaking ? onHandshakeBytes(conn, data, length)
                                            : onFrameBytes(conn, data, length);
}

void LoadGen::onPeerEof(Connection& conn) {
    if (conn.state == State::AwaitingEof) {
        finishClose(conn);
        return;
    }
    fail(conn, conn.state == State::Handshaking || conn.state == State::TlsHandshaking
                   ? "the server closed the connection during the handshake"
                   : "the server closed the connection without a closing handshake");
}

bool LoadGen::onHandshakeBytes(Connection& conn, const std::uint8_t* data, std::size_t length) {
    std::size_t searchFrom = conn.response.size() >= 3 ? conn.response.size() - 3 : 0;
    conn.response.append(reinterpret_cast<const char*>(data), length);
    std::size_t end = conn.response.find("\r\n\r\n", searchFrom);
    if (end == std::string::npos) {
        if (conn.response.size() > maxResponseHead) {
            fail(conn, "the handshake response head is too long");
            return false;
        }
        return true;
    }
    std::string_view head(conn.response.data(), end + 4);
    const char* problem = checkUpgradeResponse(
        head, std::string_view(conn.handshake.accept.data(), conn.handshake.accept.size()));
    if (problem != nullptr) {
        std::string status = conn.response.substr(0, conn.response.find("\r\n"));
        fail(conn, std::string("handshake refused: ") + problem + " (" + status + ")");
        return false;
    }
    // Frames may follow the head in the same read.
    std::string rest = conn.response.substr(end + 4);
    std::string().swap(conn.response);
    std::uint32_t generation = conn.generation;
    onOpen(conn);
    if (!alive(conn, generation)) {
        return false;
    }
    return rest.empty() ||
           onFrameBytes(conn, reinterpret_cast<const std::uint8_t*>(rest.data()), rest.size());
}

bool LoadGen::onFrameBytes(Connection& conn, const std::uint8_t* data, std::size_t length) {
    FrameSink sink(*this, conn);
    return readFrames(conn.reader, data, length, sink);
}

void LoadGen::onOpen(Connection& conn) {
    conn.state = State::Open;
    --inHandshake_;
    ++open_;
    if (options_.mode == Mode::Handshakes) {
        // The upgrade is done; close at once (RFC 6455 §7.1.2) and count the
        // cycle when the server's close arrives.
        queueClose(conn);
        conn.deadline = Clock::now() + span(options_.closeTimeout);
    } else if (options_.mode == Mode::Echo && sending()) {
        for (int i = 0; i < options_.depth; ++i) {
            queueMessage(conn);
        }
    }
}

bool LoadGen::onServerClose(Connection& conn, const std::uint8_t* payload, std::size_t length) {
    unsigned code = length >= 2 ? (unsigned{payload[0]} << 8) | payload[1] : 1005;
    if (!conn.closeSent) {
        // The server closed first, which none of the modes asks it to.
        queueClose(conn);
        commit(conn);
        fail(conn, "the server closed the connection with code " + std::to_string(code));
        return false;
    }
    if (conn.received != conn.sent) {
        verifyFailed(conn, "the server closed with " + std::to_string(conn.sent - conn.received) +
                               " messages not echoed");
        return false;
    }
    if (code != closeNormal) {
        fail(conn, "the server answered the close with code " + std::to_string(code));
        return false;
    }
    if (options_.waitEof) {
        // Keep reading: the server's FIN may already be queued behind the frame.
        conn.state = State::AwaitingEof;
        return true;
    }
    if (conn.tls) {
        // We close first, so TLS is ended properly (RFC 5246 §7.2.1).
        std::uint32_t generation = conn.generation;
        conn.tls->closeNotify();
        flushTls(conn);
        if (!alive(conn, generation)) {
            return false;
        }
    }
    finishClose(conn);
    return false;
}

void LoadGen::finishClose(Connection& conn) {
    closeTcp(conn);
    if (options_.mode == Mode::Handshakes) {
        ++handshakes_;
        if (sending()) {
            startConnection(conn);
        }
    }
}

void LoadGen::onStdin() {
    char buffer[256];
    ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
    if (n <= 0 || std::memchr(buffer, '\n', static_cast<std::size_t>(n)) != nullptr) {
        holdReleased_ = true;
        if (n <= 0) {
            // EOF stays readable; stop watching so the loop does not spin.
            epoll_ctl(epoll_, EPOLL_CTL_DEL, STDIN_FILENO, nullptr);
            stdinWatched_ = false;
        }
    }
}

void LoadGen::queueMessage(Connection& conn) {
    MaskedPatterns::Slice slice =
        maskedPatterns_.slice(patternOffset(conn.index, conn.sent), random_);
    ++conn.sent;
    std::array<std::uint8_t, maxFrameHeader> header{};
    std::size_t headerLength =
        writeFrameHeader(header.data(), opcode_, options_.size, slice.maskKey);
    if (options_.size >= directSendSize && !conn.tls) {
        commit(conn); // frames queued before this one go first
        sendNow(conn, header.data(), headerLength, slice.payload, options_.size);
        return;
    }
    tx_.append(header.data(), headerLength);
    tx_.append(slice.payload, options_.size);
}

void LoadGen::queueClose(Connection& conn) {
    std::uint8_t payload[2] = {static_cast<std::uint8_t>(closeNormal >> 8),
                               static_cast<std::uint8_t>(closeNormal & 0xFF)};
    appendFrame(tx_, opClose, payload, sizeof payload, random_.next32());
    conn.closeSent = true;
    conn.state = State::Closing;
}

void LoadGen::commit(Connection& conn) {
    if (tx_.empty()) {
        return;
    }
    sendBytes(conn, tx_.data(), tx_.size());
    tx_.clear();
}

void LoadGen::sendBytes(Connection& conn, const std::uint8_t* data, std::size_t length) {
    if (conn.tls) {
        sendTls(conn, data, length);
        return;
    }
    sendRaw(conn, data, length);
}

void LoadGen::sendRaw(Connection& conn, const std::uint8_t* data, std::size_t length) {
    if (batching_ && (conn.out.empty() || conn.queued)) {
        // With the wakeup's other sends, in one system call (sendQueued).
        conn.out.append(data, length);
        if (!conn.queued) {
            conn.queued = true;
            sendQueue_.push_back((std::uint64_t{conn.generation} << 32) | conn.index);
        }
        return;
    }
    sendNow(conn, data, length, nullptr, 0);
}

void LoadGen::sendNow(Connection& conn, const std::uint8_t* head, std::size_t headLength,
                      const std::uint8_t* body, std::size_t bodyLength) {
    if (conn.fd < 0) {
        return;
    }
    if (!conn.out.empty()) {
        // Earlier bytes are still waiting (for EPOLLOUT or sendQueued); keep the order.
        conn.out.append(head, headLength);
        conn.out.append(body, bodyLength);
        return;
    }
    std::size_t done = 0;
    std::size_t total = headLength + bodyLength;
    while (done < total) {
        iovec parts[2];
        std::size_t count = 0;
        if (done < headLength) {
            parts[count++] = {const_cast<std::uint8_t*>(head) + done, headLength - done};
        }
        std::size_t bodyDone = done > headLength ? done - headLength : 0;
        if (bodyDone < bodyLength) {
            parts[count++] = {const_cast<std::uint8_t*>(body) + bodyDone, bodyLength - bodyDone};
        }
        msghdr message{};
        message.msg_iov = parts;
        message.msg_iovlen = count;
        ssize_t n = ::sendmsg(conn.fd, &message, MSG_NOSIGNAL);
        if (n >= 0) {
            done += static_cast<std::size_t>(n);
        } else if (errno == EAGAIN) {
            break;
        } else if (errno != EINTR) {
            fail(conn, std::string("send: ") + std::strerror(errno));
            return;
        }
    }
    // What the socket did not take waits for EPOLLOUT.
    if (done < headLength) {
        conn.out.append(head + done, headLength - done);
        done = headLength;
    }
    conn.out.append(body + (done - headLength), total - done);
}

void LoadGen::flushOut(Connection& conn) {
    while (!conn.out.empty()) {
        ssize_t n = ::send(conn.fd, conn.out.data(), conn.out.size(), MSG_NOSIGNAL);
        if (n >= 0) {
            conn.out.consume(static_cast<std::size_t>(n));
        } else if (errno == EAGAIN) {
            return;
        } else if (errno != EINTR) {
            fail(conn, std::string("send: ") + std::strerror(errno));
            return;
        }
    }
    // Large frames leave a large buffer behind; idle connections should not keep it.
    conn.out.release();
}

void LoadGen::closeTcp(Connection& conn) {
    if (conn.fd < 0) {
        return;
    }
    if (conn.queued) {
        // Queued bytes were as good as sent: they go before the close.
        conn.queued = false;
        flushOut(conn);
        if (conn.fd < 0) {
            return;
        }
    }
    ::close(conn.fd);
    conn.fd = -1;
    ++conn.generation;
    if (conn.tls) {
        conn.tls->detach();
    }
    if (conn.state == State::Connecting || conn.state == State::TlsHandshaking ||
        conn.state == State::Handshaking) {
        --inHandshake_;
    } else {
        --open_;
    }
    conn.state = State::Unused;
    conn.out.release();
    std::string().swap(conn.response);
    --active_;
}

void LoadGen::fail(Connection& conn, const std::string& why) {
    ++errors_;
    logError("connection " + std::to_string(conn.index) + ": " + why);
    closeTcp(conn);
    if (options_.mode != Mode::Handshakes || errors_ > options_.maxErrors) {
        // Echo and idle runs are only meaningful with every connection up.
        abortRun(why);
    } else if (sending()) {
        startConnection(conn);
    }
}

void LoadGen::verifyFailed(Connection& conn, const std::string& what) {
    ++verifyFailures_;
    std::fprintf(stderr, "loadgen: VERIFICATION FAILED on connection %u, message %" PRIu64 ": %s\n",
                 conn.index, conn.received, what.c_str());
    closeTcp(conn);
    abortRun("verification failed");
}

void LoadGen::abortRun(const std::string& why) {
    if (aborted_) {
        return;
    }
    aborted_ = true;
    abortReason_ = why;
    std::fprintf(stderr, "loadgen: run aborted: %s\n", why.c_str());
    for (Connection& conn : connections_) {
        closeTcp(conn);
    }
    phase_ = Phase::Done;
}

void LoadGen::logError(const std::string& message) {
    if (errorsLogged_ < maxErrorLines) {
        std::fprintf(stderr, "loadgen: %s\n", message.c_str());
    } else if (errorsLogged_ == maxErrorLines) {
        std::fprintf(stderr, "loadgen: further errors are counted but not shown\n");
    }
    ++errorsLogged_;
}

bool LoadGen::succeeded() const {
    return measured_ && !aborted_ && errors_ == 0 && verifyFailures_ == 0 && closeFailures_ == 0;
}

void LoadGen::printResult() {
    std::string json = "{";
    auto add = [&json](const char* key, const std::string& value) {
        if (json.size() > 1) {
            json += ',';
        }
        json += '"';
        json += key;
        json += "\":";
        json += value;
    };
    auto number = [](double value, int decimals) {
        char text[64];
        std::snprintf(text, sizeof text, "%.*f", decimals, value);
        return std::string(text);
    };
    auto quoted = [](std::string_view text) { return '"' + jsonEscape(text) + '"'; };

    add("mode", quoted(modeName(options_.mode)));
    if (!options_.label.empty()) {
        add("label", quoted(options_.label));
    }
    add("url", quoted(options_.url));
    add("connections", std::to_string(options_.connections));
    if (options_.mode == Mode::Echo) {
        add("depth", std::to_string(options_.depth));
        add("size", std::to_string(options_.size));
        add("opcode", quoted(options_.binary ? "binary" : "text"));
    }
    add("setup_seconds", number(setupSeconds_, 3));
    if (options_.tls) {
        add("tls", "true");
        add("tls_resume", options_.tlsResume ? "true" : "false");
        add("tls_browser_offer", options_.tlsBrowserOffer ? "true" : "false");
        add("tls_cipher_suite", tlsCipherSuite_.empty() ? "null" : quoted(tlsCipherSuite_));
        add("tls_alpn", tlsAlpn_.empty() ? "null" : quoted(tlsAlpn_));
        add("tls_handshakes_full", std::to_string(tlsFull_));
        add("tls_handshakes_resumed", std::to_string(tlsResumed_));
    }

    double window = measured_ ? toSeconds(windowEnd_.time - windowStart_.time) : 0.0;
    add("seconds", number(window, 3));
    std::uint64_t messages = measured_ ? windowEnd_.messages - windowStart_.messages : 0;
    std::uint64_t bytes = measured_ ? windowEnd_.bytes - windowStart_.bytes : 0;
    std::uint64_t handshakes = measured_ ? windowEnd_.handshakes - windowStart_.handshakes : 0;
    bool rated = window > 0;
    if (options_.mode == Mode::Echo) {
        add("messages", std::to_string(messages));
        add("bytes", std::to_string(bytes));
        add("messages_per_s", number(rated ? double(messages) / window : 0, 1));
        add("mb_per_s", number(rated ? double(bytes) / 1e6 / window : 0, 3));
    } else if (options_.mode == Mode::Handshakes) {
        add("handshakes", std::to_string(handshakes));
        add("handshakes_per_s", number(rated ? double(handshakes) / window : 0, 1));
    }

    if (measured_ && windowStart_.serverTicks && windowEnd_.serverTicks) {
        static const long ticksPerSecond = sysconf(_SC_CLK_TCK);
        double cpuUs = double(*windowEnd_.serverTicks - *windowStart_.serverTicks) * 1e6 /
                       double(ticksPerSecond);
        add("server_cpu_us", number(cpuUs, 0));
        add("server_cpu_util", number(rated ? cpuUs / 1e6 / window : 0, 3));
        if (options_.mode == Mode::Echo && messages > 0) {
            add("server_cpu_us_per_message", number(cpuUs / double(messages), 4));
            add("server_cpu_us_per_mb", number(cpuUs / (double(bytes) / 1e6), 2));
        } else if (options_.mode == Mode::Handshakes && handshakes > 0) {
            add("server_cpu_us_per_handshake", number(cpuUs / double(handshakes), 2));
        }
    }
    if (options_.mode == Mode::Idle) {
        auto optional = [](const std::optional<std::uint64_t>& v) {
            return v ? std::to_string(*v) : std::string("null");
        };
        add("server_rss_kib_before", optional(rssBeforeKib_));
        add("server_rss_kib_ready", optional(rssReadyKib_));
        add("server_rss_kib_held", optional(rssHeldKib_));
        if (rssBeforeKib_ && rssHeldKib_ && options_.connections > 0) {
            double perConnection = (double(*rssHeldKib_) - double(*rssBeforeKib_)) * 1024.0 /
                                   double(options_.connections);
            add("server_bytes_per_connection", number(perConnection, 0));
        }
    }
    if (measured_ && rated) {
        add("loadgen_cpu_util",
            number((windowEnd_.ownCpuSeconds - windowStart_.ownCpuSeconds) / window, 3));
    }
    add("errors", std::to_string(errors_));
    add("verify_failures", std::to_string(verifyFailures_));
    add("close_failures", std::to_string(closeFailures_));

    add("ok", succeeded() ? "true" : "false");
    if (aborted_) {
        add("abort_reason", quoted(abortReason_));
    }
    json += '}';
    std::printf("%s\n", json.c_str());
    std::fflush(stdout);
}

void LoadGen::onTlsEvent(Connection& conn, std::uint32_t events) {
    std::uint32_t generation = conn.generation;
    bool peerClosed = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    if (conn.state == State::Connecting) {
        if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) {
            return;
        }
        onConnected(conn, events);
        if (!alive(conn, generation)) {
            return;
        }
    } else if ((events & EPOLLOUT) != 0 && !conn.out.empty()) {
        flushOut(conn);
        if (!alive(conn, generation)) {
            return;
        }
    }
    // A fresh TCP connection goes on at once with the ClientHello.
    if (conn.state == State::TlsHandshaking ||
        (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
        if (!readTls(conn, peerClosed)) {
            tx_.clear();
            return;
        }
    }
    commit(conn);
}

bool LoadGen::readTls(Connection& conn, bool peerClosed) {
    std::uint32_t generation = conn.generation;
    TlsClient& tls = *conn.tls;
    tls.beginEvent(peerClosed);
    if (conn.state == State::TlsHandshaking) {
        if (!continueTlsHandshake(conn)) {
            return false;
        }
        if (conn.state == State::TlsHandshaking) {
            return true;
        }
    }
    // Read until mbedTLS wants more from the socket: with edge-triggered
    // epoll, stopping earlier would leave bytes that raise no new event.
    std::size_t filled = 0;
    for (;;) {
        int n = tls.read(readBuffer_.data() + filled, readBuffer_.size() - filled);
        if (n > 0) {
            filled += static_cast<std::size_t>(n);
            // Gather records while another whole one still fits.
            if (readBuffer_.size() - filled >= MBEDTLS_SSL_MAX_CONTENT_LEN) {
                continue;
            }
        }
        // An alert that mbedTLS wrote while reading.
        flushTls(conn);
        if (!alive(conn, generation)) {
            return false;
        }
        if (filled > 0) {
            bool more = conn.state == State::Handshaking
                            ? onHandshakeBytes(conn, readBuffer_.data(), filled)
                            : onFrameBytes(conn, readBuffer_.data(), filled);
            if (!more || !alive(conn, generation)) {
                return false;
            }
            filled = 0;
        }
        if (n > 0) {
            continue;
        }
        if (n == MBEDTLS_ERR_SSL_WANT_READ) {
            return true;
        }
        if (n == 0 || n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            onPeerEof(conn);
            return false;
        }
        fail(conn, tlsFailure("TLS read", tls, n));
        return false;
    }
}

bool LoadGen::continueTlsHandshake(Connection& conn) {
    std::uint32_t generation = conn.generation;
    int rc = conn.tls->handshake();
    if (rc == 0) {
        ++(conn.tls->resumed() ? tlsResumed_ : tlsFull_);
        if (tlsCipherSuite_.empty()) {
            tlsCipherSuite_ = conn.tls->cipherSuite();
            const char* alpn = conn.tls->alpn();
            tlsAlpn_ = alpn != nullptr ? alpn : "";
        }
        // Our last handshake records and the upgrade request leave in one write.
        sendUpgradeRequest(conn);
        return alive(conn, generation);
    }
    flushTls(conn);
    if (!alive(conn, generation)) {
        return false;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ) {
        return true;
    }
    if (rc == MBEDTLS_ERR_SSL_CONN_EOF) {
        onPeerEof(conn);
    } else {
        fail(conn, tlsFailure("TLS handshake", *conn.tls, rc));
    }
    return false;
}

void LoadGen::sendTls(Connection& conn, const std::uint8_t* data, std::size_t length) {
    int rc = conn.tls->write(data, length);
    if (rc != 0) {
        tls_->output().clear();
        fail(conn, tlsFailure("TLS write", *conn.tls, rc));
        return;
    }
    flushTls(conn);
}

void LoadGen::flushTls(Connection& conn) {
    ByteBuffer& output = tls_->output();
    if (output.empty()) {
        return;
    }
    sendRaw(conn, output.data(), output.size());
    output.clear();
}

} // namespace wsgate::bench
