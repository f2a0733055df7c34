#include "wsgate/EventLoop.h"

#include "net/Connection.h"
#include "net/LoopData.h"

#include <signal.h>
#include <uv.h>

#include <algorithm>
#include <cassert>
#include <csignal>
#include <cstdio>
#include <cstdlib>

namespace wsgate {
namespace detail {
namespace {

uv_loop_t* makeLoop(std::unique_ptr<uv_loop_t>& owned) {
    owned = std::make_unique<uv_loop_t>();
    int rc = uv_loop_init(owned.get());
    if (rc < 0) {
        std::fprintf(stderr, "wsgate: uv_loop_init: %s\n", uv_err_name(rc));
        std::abort();
    }
    return owned.get();
}

} // namespace

namespace {

// libuv writes with write(2), and Linux has no per-socket way to turn off
// SIGPIPE: a peer that resets while we write would kill the process. Ignore
// it unless the application has a handler of its own.
void ignoreSigpipe() {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
        std::signal(SIGPIPE, SIG_IGN);
    }
}

} // namespace

LoopData::LoopData(uv_loop_t* existing)
    : loop(existing != nullptr ? existing : makeLoop(ownedLoop)),
      readBuffer(new std::uint8_t[readBufferSize]),
      closeQueue(
          loop, [](net::DeadlineEntry& entry, void*) { Connection::onCloseDeadline(entry); },
          nullptr),
      messageQueue(
          loop, [](net::DeadlineEntry& entry, void*) { Connection::onMessageDeadline(entry); },
          nullptr) {
    uv_idle_init(loop, &deferIdle);
    deferIdle.data = this;
    ignoreSigpipe();
}

LoopData::~LoopData() {
    closeQueue.close(nullptr);
    messageQueue.close(nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&deferIdle), nullptr);
    // Let the two close callbacks run, and anything else still closing.
    uv_run(loop, UV_RUN_NOWAIT);
    if (ownedLoop) {
        // Handles the application leaked keep the loop open; run them dry.
        while (uv_loop_close(loop) == UV_EBUSY) {
            uv_walk(
                loop,
                [](uv_handle_t* handle, void*) {
                    if (uv_is_closing(handle) == 0) {
                        uv_close(handle, nullptr);
                    }
                },
                nullptr);
            uv_run(loop, UV_RUN_NOWAIT);
        }
    }
}

void LoopData::defer(Connection* connection) {
    deferred.push_back(connection);
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&deferIdle)) == 0) {
        uv_idle_start(&deferIdle, onDeferIdle);
    }
}

void LoopData::cancelDeferred(Connection* connection) noexcept {
    std::replace(deferred.begin(), deferred.end(), connection, static_cast<Connection*>(nullptr));
    if (deferredRunning != nullptr) {
        std::replace(deferredRunning->begin(), deferredRunning->end(), connection,
                     static_cast<Connection*>(nullptr));
    }
}

void LoopData::onDeferIdle(uv_idle_t* idle) {
    auto* self = static_cast<LoopData*>(idle->data);
    std::vector<Connection*> batch;
    batch.swap(self->deferred);
    uv_idle_stop(idle);
    // A connection freed by an earlier one of the batch is nulled in it.
    self->deferredRunning = &batch;
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (batch[i] != nullptr) {
            batch[i]->runDeferred();
        }
    }
    self->deferredRunning = nullptr;
}

} // namespace detail

namespace {

struct SingleShot {
    uv_timer_t timer;
    std::function<void()> callback;
};

} // namespace

EventLoop::EventLoop() : data_(std::make_unique<detail::LoopData>(nullptr)) {
}

EventLoop::EventLoop(void* uvLoop)
    : data_(std::make_unique<detail::LoopData>(static_cast<uv_loop_t*>(uvLoop))) {
}

EventLoop::~EventLoop() = default;

int EventLoop::run() {
    data_->stopped = false;
    int rc = uv_run(data_->loop, UV_RUN_DEFAULT);
    return rc < 0 ? rc : 0;
}

bool EventLoop::runOnce(bool wait) {
    return uv_run(data_->loop, wait ? UV_RUN_ONCE : UV_RUN_NOWAIT) != 0;
}

void EventLoop::stop() {
    data_->stopped = true;
    uv_stop(data_->loop);
}

void EventLoop::singleShot(std::chrono::milliseconds delay, std::function<void()> callback) {
    auto* shot = new SingleShot{{}, std::move(callback)};
    uv_timer_init(data_->loop, &shot->timer);
    shot->timer.data = shot;
    auto ms = delay.count() < 0 ? 0 : static_cast<std::uint64_t>(delay.count());
    uv_timer_start(
        &shot->timer,
        [](uv_timer_t* timer) {
            auto* fired = static_cast<SingleShot*>(timer->data);
            auto callback = std::move(fired->callback);
            uv_close(reinterpret_cast<uv_handle_t*>(timer),
                     [](uv_handle_t* handle) { delete static_cast<SingleShot*>(handle->data); });
            if (callback) {
                callback();
            }
        },
        ms, 0);
}

void* EventLoop::nativeHandle() const noexcept {
    return data_->loop;
}

} // namespace wsgate
