// Runs a wsgate::EventLoop on its own thread, so that a test's raw client
// can block on its socket while the library under test runs.
#pragma once

#include "wsgate/EventLoop.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <stdexcept>
#include <type_traits>

namespace wsgate::test {

/// A thread that owns an EventLoop and runs tasks on it. Every wsgate object
/// of a test is made, used and destroyed through call() or post(), since it
/// may be touched only from its loop's thread.
///
/// finish() (also run by the destructor) runs the teardowns, then CHECKs that
/// the loop runs dry, i.e. that EventLoop::run() returns once the test's
/// servers and sockets are gone: a handle or timer left behind is a leak.
/// It also CHECKs that the process has as many descriptors open as before
/// the LoopThread was made, so a test must close the sockets it opened
/// after it (RawClients declared after it are) before finish().
class LoopThread {
public:
    LoopThread();
    ~LoopThread();
    LoopThread(const LoopThread&) = delete;
    LoopThread& operator=(const LoopThread&) = delete;

    /// Runs `f` on the loop thread and waits for its result. An exception
    /// from `f` (a failed REQUIRE included) is rethrown here. Must not be
    /// called on the loop thread.
    template <class F>
    auto call(F&& f) -> std::invoke_result_t<std::decay_t<F>&> {
        using Result = std::invoke_result_t<std::decay_t<F>&>;
        auto task = std::make_shared<std::packaged_task<Result()>>(std::forward<F>(f));
        std::future<Result> result = task->get_future();
        if (!post([task] { (*task)(); })) {
            throw std::logic_error("LoopThread::call after finish()");
        }
        if (result.wait_for(callTimeout) != std::future_status::ready) {
            // The loop thread is stuck; no later check could run either.
            std::fprintf(stderr, "LoopThread: a task did not finish within %lld s\n",
                         static_cast<long long>(callTimeout.count()));
            std::abort();
        }
        return result.get();
    }

    /// Queues `task` to run on the loop thread. False (and a failed CHECK)
    /// once the loop has finished.
    bool post(std::function<void()> task);
    /// Polls `predicate` on the loop thread until it returns true or the
    /// timeout passes. Returns its last result.
    bool waitUntil(const std::function<bool()>& predicate,
                   std::chrono::milliseconds timeout = std::chrono::seconds(5));

    /// The loop; use it only on the loop thread.
    EventLoop& loop() noexcept;
    bool onLoopThread() const noexcept;

    /// Adds a function that finish() runs on the loop thread, last added
    /// first, to destroy the test's wsgate objects.
    void addTeardown(std::function<void()> teardown);

    /// Runs the teardowns and CHECKs that the loop then runs dry within
    /// `timeout`. True when it did. Only the first call does anything.
    bool finish(std::chrono::milliseconds timeout = std::chrono::seconds(15));

private:
    static constexpr std::chrono::seconds callTimeout{60};
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgate::test
