// Runs the example echo-server as a child process for a test.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace wsgate::test {

/// Starts `echo-server --port 0 ARGS…` (the binary named by the environment
/// variable WSGATE_ECHO_SERVER), reads the URL it prints first and parses the
/// port from it. Under WSGATE_TEST_TLS=1 it adds --cert/--key with the test
/// certificate unless ARGS have a --cert. The destructor stops it and CHECKs
/// that it did not crash or exit by itself in the meantime.
class EchoServerProcess {
public:
    /// `stderrFd`, when not -1, becomes the process's standard error.
    explicit EchoServerProcess(std::vector<std::string> args = {},
                               std::chrono::milliseconds startTimeout = std::chrono::seconds(20),
                               int stderrFd = -1);
    ~EchoServerProcess();
    EchoServerProcess(const EchoServerProcess&) = delete;
    EchoServerProcess& operator=(const EchoServerProcess&) = delete;

    /// True when it printed a URL with a port.
    bool started() const noexcept { return port_ != 0; }
    /// Why it did not start.
    const std::string& error() const noexcept { return error_; }
    std::uint16_t port() const noexcept { return port_; }
    const std::string& url() const noexcept { return url_; }
    pid_t pid() const noexcept { return pid_; }

    /// True while the process has not exited.
    bool running();
    /// Sends SIGTERM, waits up to `timeout` (then SIGKILL) and returns the
    /// wait status, or -1 if there was no process.
    int stop(std::chrono::milliseconds timeout = std::chrono::seconds(10));
    /// Waits up to `timeout` for the process to exit by itself, as after a
    /// signal the test sent, and returns its wait status; -1 if it is still
    /// running (it is then stopped as usual).
    int waitForExit(std::chrono::milliseconds timeout);

private:
    pid_t pid_ = -1;
    int stdoutFd_ = -1;
    std::uint16_t port_ = 0;
    std::string url_;
    std::string error_;
    /// Set when the process was found to have exited before stop().
    bool exitedEarly_ = false;
    int earlyStatus_ = 0;
    /// Reads the rest of its stdout so that the child never blocks on a full pipe.
    std::thread drain_;
};

} // namespace wsgate::test
