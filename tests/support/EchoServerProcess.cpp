#include "support/EchoServerProcess.h"

#include "support/ChildProcess.h"
#include "support/TlsTestMode.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>

namespace wsgate::test {

EchoServerProcess::EchoServerProcess(std::vector<std::string> args,
                                     std::chrono::milliseconds startTimeout, int stderrFd) {
    const char* path = std::getenv("WSGATE_ECHO_SERVER");
    if (path == nullptr || *path == '\0') {
        error_ = "WSGATE_ECHO_SERVER is not set (run the test through ctest)";
        FAIL_CHECK(error_);
        return;
    }
    std::vector<std::string> argvStrings{path, "--port", "0"};
    // Under WSGATE_TEST_TLS=1 every suite's server speaks wss://, unless the
    // test chose its own certificate.
    if (tlsTestMode() && std::find(args.begin(), args.end(), "--cert") == args.end()) {
        const TestCertificateFiles& files = testCertificateFiles();
        argvStrings.insert(argvStrings.end(), {"--cert", files.certificate, "--key", files.key});
    }
    argvStrings.insert(argvStrings.end(), args.begin(), args.end());
    // Built before fork(): only async-signal-safe calls may follow it.
    std::vector<char*> argv;
    for (auto& s : argvStrings) {
        argv.push_back(s.data());
    }
    argv.push_back(nullptr);

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        error_ = std::string("pipe2: ") + std::strerror(errno);
        FAIL_CHECK(error_);
        return;
    }
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
        // The server must not outlive a test binary that crashed.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(126);
        }
        dup2(fds[1], STDOUT_FILENO);
        if (stderrFd >= 0) {
            dup2(stderrFd, STDERR_FILENO);
        }
        execv(argv[0], argv.data());
        _exit(127);
    }
    ::close(fds[1]);
    if (pid_ < 0) {
        ::close(fds[0]);
        error_ = std::string("fork: ") + std::strerror(errno);
        FAIL_CHECK(error_);
        return;
    }
    stdoutFd_ = fds[0];

    // The first line is the URL; read byte by byte so that nothing after it
    // is taken from the pipe here.
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + startTimeout;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{stdoutFd_, POLLIN, 0};
        const int rc = ::poll(&p, 1, left.count() < 0 ? 0 : static_cast<int>(left.count()));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            error_ =
                "echo-server printed no URL within " + std::to_string(startTimeout.count()) + " ms";
            break;
        }
        char c = 0;
        const ssize_t n = ::read(stdoutFd_, &c, 1);
        if (n <= 0) {
            error_ = "echo-server closed its stdout before printing a URL: \"" + line + "\"";
            break;
        }
        if (c == '\n') {
            break;
        }
        line.push_back(c);
    }
    if (error_.empty()) {
        const auto colon = line.rfind(':');
        const std::size_t schemeEnd = line.find("://");
        const bool knownScheme = line.rfind("ws://", 0) == 0 || line.rfind("wss://", 0) == 0;
        if (knownScheme && colon != std::string::npos && colon > schemeEnd + 3) {
            const long port = std::strtol(line.c_str() + colon + 1, nullptr, 10);
            if (port > 0 && port < 65536) {
                port_ = static_cast<std::uint16_t>(port);
                url_ = line;
            }
        }
        if (port_ == 0) {
            error_ = "echo-server's first line is not ws[s]://HOST:PORT: \"" + line + "\"";
        }
    }
    if (!error_.empty()) {
        FAIL_CHECK(error_);
    }
    drain_ = std::thread([fd = stdoutFd_] {
        char sink[4096];
        while (::read(fd, sink, sizeof sink) > 0) {
        }
    });
}

EchoServerProcess::~EchoServerProcess() {
    if (pid_ > 0) {
        const bool wasRunning = running();
        CHECK_MESSAGE(wasRunning, "echo-server exited during the test with ",
                      describeStatus(earlyStatus_));
        const int status = stop();
        if (wasRunning) {
            // A sanitizer report makes the process exit non-zero; a clean
            // stop is exit 0 or death by the SIGTERM we sent.
            const bool clean =
                exitedWithZero(status) || (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
            CHECK_MESSAGE(clean, "echo-server stopped with ", describeStatus(status));
        }
    }
    if (drain_.joinable()) {
        drain_.join();
    }
    if (stdoutFd_ >= 0) {
        ::close(stdoutFd_);
    }
}

bool EchoServerProcess::running() {
    if (pid_ <= 0) {
        return false;
    }
    if (exitedEarly_) {
        return false;
    }
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
        exitedEarly_ = true;
        earlyStatus_ = status;
        return false;
    }
    return true;
}

int EchoServerProcess::waitForExit(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (running()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (pid_ <= 0) {
        return -1;
    }
    pid_ = -1; // the exit was expected: the destructor has nothing to check
    return earlyStatus_;
}

int EchoServerProcess::stop(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) {
        return -1;
    }
    if (exitedEarly_ || !running()) {
        pid_ = -1;
        return earlyStatus_;
    }
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    for (;;) {
        const pid_t r = waitpid(pid_, &status, WNOHANG);
        if (r == pid_) {
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            FAIL_CHECK("echo-server did not stop within ", timeout.count(),
                       " ms of SIGTERM; killing it");
            ::kill(pid_, SIGKILL);
            waitpid(pid_, &status, 0);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
    return status;
}

} // namespace wsgate::test
