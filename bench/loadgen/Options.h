// Command-line options of the load generator.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace wsgate::bench {

enum class Mode { Echo, Handshakes, Idle };

struct Options {
    Mode mode = Mode::Echo;
    std::string url;
    // Parsed from url.
    std::string host;
    std::uint32_t hostAddress = 0; // IPv4, network byte order
    std::uint16_t port = 0;
    std::string path = "/";
    bool tls = false; // wss://
    // wss:// handshakes: resume each slot's last session instead of a full handshake.
    bool tlsResume = false;
    // wss://: offer what browsers offer and let the server choose, instead
    // of one fixed suite and curve.
    bool tlsBrowserOffer = false;

    int connections = 100;
    int depth = 1;
    std::size_t size = 32;
    bool binary = false;

    double seconds = 5.0;
    double warmup = 1.0;
    std::uint64_t messages = 0; // 0: no message bound, only --seconds
    double holdSeconds = 60.0;
    bool holdStdin = false;

    int sourceIps = 1;
    int ramp = 32;
    double setupTimeout = 60.0;
    double opTimeout = 10.0;
    double closeTimeout = 5.0;
    std::uint64_t maxErrors = 100;
    bool waitEof = true;

    pid_t serverPid = 0;
    int cpu = -1;
    std::string label;
};

// Parses argv; prints the reason and returns nothing on bad input.
std::optional<Options> parseOptions(int argc, char** argv);

void printUsage();

} // namespace wsgate::bench
