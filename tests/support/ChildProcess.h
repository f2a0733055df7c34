// Scenarios run in a forked child, for what would end the test process
// itself: a signal such as SIGPIPE.
#pragma once

#include <chrono>
#include <functional>
#include <string>

namespace wsgate::test {

/// Runs `scenario` in a child process with SIGPIPE at its default action,
/// as in a program that never heard of it, and returns the child's wait
/// status: exit 0 when the scenario returned true. Killed after `timeout`,
/// which fails the current test.
int runInChild(const std::function<bool()>& scenario, std::chrono::milliseconds timeout);

/// "exit code N", "killed by <signal>", for a test's message.
std::string describeStatus(int status);

/// Whether the child of that wait status died of SIGPIPE.
bool killedBySigpipe(int status) noexcept;

/// Whether the child of that wait status exited by itself with code 0
/// (false for -1, "no status").
bool exitedWithZero(int status) noexcept;

} // namespace wsgate::test
