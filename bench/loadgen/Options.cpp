#include "Options.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace wsgate::bench {

namespace {

constexpr int maxConnections = 1'000'000;
constexpr std::size_t maxSize = 256ULL * 1024 * 1024;
constexpr int maxDepth = 4096;
constexpr double maxSeconds = 24 * 3600.0;

template <typename T>
bool parseInteger(std::string_view text, T& out, T low, T high) {
    T value{};
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value < low || value > high) {
        return false;
    }
    out = value;
    return true;
}

bool parseSeconds(std::string_view text, double& out) {
    // from_chars for double is in GCC 12 but not in every libc++; strtod is enough.
    std::string copy(text);
    char* end = nullptr;
    double value = std::strtod(copy.c_str(), &end);
    if (copy.empty() || *end != '\0' || !(value >= 0.0) || value > maxSeconds) {
        return false;
    }
    out = value;
    return true;
}

// Accepts sizes like 32, 64K, 1M (binary multiples).
bool parseSize(std::string_view text, std::size_t& out) {
    std::size_t multiplier = 1;
    if (!text.empty()) {
        char suffix = text.back();
        if (suffix == 'K' || suffix == 'k') {
            multiplier = 1024;
        } else if (suffix == 'M' || suffix == 'm') {
            multiplier = 1024 * 1024;
        }
        if (multiplier != 1) {
            text.remove_suffix(1);
        }
    }
    std::size_t value = 0;
    if (!parseInteger<std::size_t>(text, value, 0, maxSize / multiplier)) {
        return false;
    }
    out = value * multiplier;
    return true;
}

// The benchmark only ever talks to this machine: anything outside 127/8 is refused.
bool parseUrl(Options& options) {
    std::string_view url = options.url;
    constexpr std::string_view wsScheme = "ws://";
    constexpr std::string_view wssScheme = "wss://";
    if (url.starts_with(wssScheme)) {
        options.tls = true;
        url.remove_prefix(wssScheme.size());
    } else if (url.starts_with(wsScheme)) {
        url.remove_prefix(wsScheme.size());
    } else {
        std::fprintf(stderr, "loadgen: the URL must start with ws:// or wss://\n");
        return false;
    }
    std::size_t slash = url.find('/');
    std::string_view authority = url.substr(0, slash);
    options.path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
    std::size_t colon = authority.rfind(':');
    if (colon == std::string_view::npos) {
        std::fprintf(stderr, "loadgen: the URL needs a port\n");
        return false;
    }
    options.host = std::string(authority.substr(0, colon));
    if (!parseInteger<std::uint16_t>(authority.substr(colon + 1), options.port, 1, 65535)) {
        std::fprintf(stderr, "loadgen: bad port in the URL\n");
        return false;
    }
    std::string numeric = options.host == "localhost" ? "127.0.0.1" : options.host;
    in_addr address{};
    if (inet_pton(AF_INET, numeric.c_str(), &address) != 1) {
        std::fprintf(stderr, "loadgen: the host must be an IPv4 loopback address\n");
        return false;
    }
    if ((ntohl(address.s_addr) >> 24) != 127) {
        std::fprintf(stderr, "loadgen: refusing %s: only 127.0.0.0/8 may be targeted\n",
                     options.host.c_str());
        return false;
    }
    options.hostAddress = address.s_addr;
    return true;
}

} // namespace

void printUsage() {
    std::fprintf(stderr, R"(usage: loadgen --url ws[s]://127.0.0.1:PORT/PATH [options]

  --mode echo|handshakes|idle   what to measure (default echo)
  --connections N               connections (echo, idle) or concurrent clients (handshakes)
  --depth D                     echo: messages in flight per connection (default 1)
  --size BYTES                  echo: payload size, K and M suffixes allowed (default 32)
  --binary | --text             echo: frame type (default text)
  --seconds S                   measured window (default 5)
  --warmup S                    unmeasured run before the window (default 1)
  --messages M                  also end the window after M echoed messages
  --hold-seconds S              idle: hold the connections this long (default 60)
  --hold-stdin                  idle: also stop holding at a stdin line or EOF
  --source-ips K                spread connections over 127.0.0.1 .. 127.0.0.K
  --ramp N                      at most N handshakes in progress during setup (default 32)
  --setup-timeout S             bound on opening all connections (default 60)
  --op-timeout S                bound on one connect + handshake (default 10)
  --close-timeout S             bound on the closing handshakes at the end (default 5)
  --max-errors N                give up after N errors (default 100)
  --tls-resume                  wss://: resume the slot's previous TLS session (ticket)
                                instead of a full handshake each time
  --tls-browser-offer           wss://: offer the suites and curves browsers offer, in
                                their order, and let the server choose (default: one
                                suite, AES-128-GCM, and one curve, P-256, for every server)
  --no-wait-eof                 close TCP as soon as the server's close frame arrives,
                                instead of waiting for the server to close first
  --server-pid PID              report that process's CPU time over the window
  --cpu N                       pin this process to CPU N
  --label TEXT                  copied into the result line

Prints one JSON line with the result; exits 1 if any error or verification failure.
)");
}

std::optional<Options> parseOptions(int argc, char** argv) {
    Options options;
    bool sawSeconds = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        auto value = [&](std::string_view& out) {
            if (i + 1 >= argc) {
                return false;
            }
            out = argv[++i];
            return true;
        };
        std::string_view v;
        bool ok = true;
        if (arg == "--binary") {
            options.binary = true;
        } else if (arg == "--text") {
            options.binary = false;
        } else if (arg == "--hold-stdin") {
            options.holdStdin = true;
        } else if (arg == "--tls-resume") {
            options.tlsResume = true;
        } else if (arg == "--tls-browser-offer") {
            options.tlsBrowserOffer = true;
        } else if (arg == "--no-wait-eof") {
            options.waitEof = false;
        } else if (arg == "--help" || arg == "-h") {
            printUsage();
            return std::nullopt;
        } else if (!value(v)) {
            ok = false;
        } else if (arg == "--url") {
            options.url = std::string(v);
        } else if (arg == "--mode") {
            if (v == "echo") {
                options.mode = Mode::Echo;
            } else if (v == "handshakes") {
                options.mode = Mode::Handshakes;
            } else if (v == "idle") {
                options.mode = Mode::Idle;
            } else {
                ok = false;
            }
        } else if (arg == "--connections") {
            ok = parseInteger(v, options.connections, 1, maxConnections);
        } else if (arg == "--depth") {
            ok = parseInteger(v, options.depth, 1, maxDepth);
        } else if (arg == "--size") {
            ok = parseSize(v, options.size);
        } else if (arg == "--seconds") {
            ok = parseSeconds(v, options.seconds);
            sawSeconds = true;
        } else if (arg == "--warmup") {
            ok = parseSeconds(v, options.warmup);
        } else if (arg == "--messages") {
            ok = parseInteger<std::uint64_t>(v, options.messages, 1, UINT64_MAX);
        } else if (arg == "--hold-seconds") {
            ok = parseSeconds(v, options.holdSeconds);
        } else if (arg == "--source-ips") {
            ok = parseInteger(v, options.sourceIps, 1, 254);
        } else if (arg == "--ramp") {
            ok = parseInteger(v, options.ramp, 1, maxConnections);
        } else if (arg == "--setup-timeout") {
            ok = parseSeconds(v, options.setupTimeout);
        } else if (arg == "--op-timeout") {
            ok = parseSeconds(v, options.opTimeout);
        } else if (arg == "--close-timeout") {
            ok = parseSeconds(v, options.closeTimeout);
        } else if (arg == "--max-errors") {
            ok = parseInteger<std::uint64_t>(v, options.maxErrors, 0, UINT64_MAX);
        } else if (arg == "--server-pid") {
            ok = parseInteger<pid_t>(v, options.serverPid, 1, INT32_MAX);
        } else if (arg == "--cpu") {
            ok = parseInteger(v, options.cpu, 0, 4095);
        } else if (arg == "--label") {
            options.label = std::string(v);
        } else {
            ok = false;
        }
        if (!ok) {
            std::fprintf(stderr, "loadgen: bad or incomplete option %s\n", argv[i]);
            printUsage();
            return std::nullopt;
        }
    }
    if (options.url.empty()) {
        std::fprintf(stderr, "loadgen: --url is required\n");
        printUsage();
        return std::nullopt;
    }
    if (!parseUrl(options)) {
        return std::nullopt;
    }
    if ((options.tlsResume || options.tlsBrowserOffer) && !options.tls) {
        std::fprintf(stderr, "loadgen: --tls-resume and --tls-browser-offer need a wss:// URL\n");
        return std::nullopt;
    }
    // A message bound alone still needs a time bound; make it generous.
    if (options.messages != 0 && !sawSeconds) {
        options.seconds = 600.0;
    }
    if (options.seconds <= 0.0) {
        std::fprintf(stderr, "loadgen: --seconds must be positive\n");
        return std::nullopt;
    }
    return options;
}

} // namespace wsgate::bench
