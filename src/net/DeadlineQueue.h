// Many deadlines on one timer: the handshake and close timeouts of every
// connection, instead of a uv_timer_t (152 bytes) each.
#pragma once

#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace wsgate::net {

/// A timeout as the 32-bit milliseconds connections keep: a negative one is
/// 0, and one past about 49 days is capped there.
inline std::uint32_t toTimeoutMs(std::chrono::milliseconds timeout) noexcept {
    return static_cast<std::uint32_t>(
        std::clamp<std::chrono::milliseconds::rep>(timeout.count(), 0, UINT32_MAX));
}

/// A link in a DeadlineQueue, embedded in the object that has the deadline.
/// It unlinks itself when destroyed.
class DeadlineEntry {
public:
    DeadlineEntry() = default;
    DeadlineEntry(const DeadlineEntry&) = delete;
    DeadlineEntry& operator=(const DeadlineEntry&) = delete;
    ~DeadlineEntry() { unlink(); }

    bool linked() const noexcept { return next_ != nullptr; }
    /// Leaves its queue. The queue's timer may then fire early; it re-arms.
    void unlink() noexcept;
    std::uint64_t deadline() const noexcept { return deadline_; }

private:
    friend class DeadlineQueue;
    DeadlineEntry* prev_ = nullptr;
    DeadlineEntry* next_ = nullptr;
    std::uint64_t deadline_ = 0;
};

/// Entries sorted by deadline, with one timer armed for the earliest. Most
/// entries of a queue share one timeout, so an insert walks back from the
/// tail and stops at once.
class DeadlineQueue {
public:
    using ExpireCallback = void (*)(DeadlineEntry& entry, void* context);

    DeadlineQueue(uv_loop_t* loop, ExpireCallback expire, void* context);
    DeadlineQueue(const DeadlineQueue&) = delete;
    DeadlineQueue& operator=(const DeadlineQueue&) = delete;
    /// The queue must be empty and close() called and done before destruction.
    ~DeadlineQueue() = default;

    /// Links `entry` (unlinking it first) to expire `timeoutMs` from now.
    void add(DeadlineEntry& entry, std::uint64_t timeoutMs);
    bool empty() const noexcept { return head_.next_ == &head_; }
    /// The entry with the earliest deadline; the queue must not be empty.
    DeadlineEntry* front() noexcept { return head_.next_; }
    /// Closes the timer; `onClosed` runs from its close callback.
    void close(uv_close_cb onClosed);
    uv_timer_t& timer() noexcept { return timer_; }

private:
    static void onTimer(uv_timer_t* timer);
    void arm();

    uv_timer_t timer_;
    DeadlineEntry head_; // the sentinel of a circular list
    ExpireCallback expire_;
    void* context_;
    std::uint64_t armedFor_ = 0;
};

} // namespace wsgate::net
