// The event loop that every wsgate object is bound to: one per thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

namespace wsgate {

namespace detail {
struct LoopData;
}

/// One libuv loop and the state wsgate shares between the connections on it
/// (one read buffer, one timer queue, one epoll set for their sockets, which
/// the loop watches as a single poll handle). Every Server and WebSocket is bound to
/// the loop it was made on and may be used only from that loop's thread, as a
/// QObject is bound to its thread.
///
/// Destroy servers and sockets before their loop.
///
/// The library leaves SIGPIPE alone: it sends with MSG_NOSIGNAL, so a peer
/// that resets a connection we write to gives an error, never the signal.
class EventLoop {
public:
    /// Makes and owns a new loop.
    EventLoop();
    /// Runs on an existing `uv_loop_t*` (passed as void* so that no libuv type
    /// appears here), for programs that already have one. The loop is not owned.
    explicit EventLoop(void* uvLoop);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    /// Runs until stop() is called or nothing is left to do. Returns 0, or a
    /// negative libuv error.
    int run();
    /// Runs one iteration, waiting for events when `wait` is true. Returns
    /// true while there is work left.
    bool runOnce(bool wait = true);
    /// Makes run() return after the current iteration.
    void stop();

    /// Calls `callback` once after `delay` (a convenience like QTimer::singleShot).
    void singleShot(std::chrono::milliseconds delay, std::function<void()> callback);

    /// The `uv_loop_t*` underneath.
    void* nativeHandle() const noexcept;

    detail::LoopData& data() noexcept { return *data_; }

private:
    std::unique_ptr<detail::LoopData> data_;
};

} // namespace wsgate
