// loadgen: the benchmark's own WebSocket load generator. One thread, epoll,
// no dependency on the wsgate library, so that it measures any RFC 6455
// server the same way. See docs/benchmarks.md.

#include "LoadGen.h"
#include "Options.h"

#include <signal.h>

#include <cstdio>
#include <sched.h>
#include <string_view>

int main(int argc, char** argv) {
    if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
        wsgate::bench::printUsage();
        return 0;
    }
    std::optional<wsgate::bench::Options> options = wsgate::bench::parseOptions(argc, argv);
    if (!options) {
        return 2;
    }
    // A peer reset must show as EPIPE on the write, not kill the process.
    signal(SIGPIPE, SIG_IGN);
    if (options->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(options->cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            std::perror("loadgen: sched_setaffinity");
            return 2;
        }
    }
    wsgate::bench::LoadGen gen(*options);
    return gen.run();
}
