#include "support/ChildProcess.h"

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <doctest/doctest.h>
#include <thread>

namespace wsgate::test {

int runInChild(const std::function<bool()>& scenario, std::chrono::milliseconds timeout) {
    const pid_t child = ::fork();
    if (child == 0) {
        ::signal(SIGPIPE, SIG_DFL);
        bool ok = false;
        try {
            ok = scenario();
        } catch (...) {
            ok = false;
        }
        ::_exit(ok ? 0 : 1);
    }
    REQUIRE(child > 0);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (::waitpid(child, &status, WNOHANG) != child) {
        if (std::chrono::steady_clock::now() >= deadline) {
            ::kill(child, SIGKILL);
            ::waitpid(child, &status, 0);
            FAIL_CHECK("the child did not finish within ", timeout.count(), " ms");
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status;
}

std::string describeStatus(int status) {
    if (WIFEXITED(status)) {
        return "exit code " + std::to_string(WEXITSTATUS(status));
    }
    if (WIFSIGNALED(status)) {
        return std::string("killed by ") + strsignal(WTERMSIG(status));
    }
    return "status " + std::to_string(status);
}

bool killedBySigpipe(int status) noexcept {
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE;
}

bool exitedWithZero(int status) noexcept {
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

} // namespace wsgate::test
