#include "wsgate/EventLoop.h"

#include "net/Connection.h"
#include "net/LoopData.h"

#include <sys/epoll.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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

/// Socket events taken from the epoll set per wakeup of the loop; more wait
/// for the next iteration.
constexpr int eventsPerWakeup = 256;
/// The outbox is sent when it would grow past this,
constexpr std::size_t outboxLimit = 256 * 1024;
/// and once its oldest bytes have waited this long for the wakeup's other
/// events (about 60 small echoes).
constexpr std::uint64_t maxOutboxHoldNs = 200 * 1000;

} // namespace

LoopData::LoopData(uv_loop_t* existing)
    : loop(existing != nullptr ? existing : makeLoop(ownedLoop)),
      readBuffer(new std::uint8_t[readBufferSize]),
      closeQueue(
          loop, [](net::DeadlineEntry& entry, void*) { Connection::onCloseDeadline(entry); },
          nullptr),
      messageQueue(
          loop, [](net::DeadlineEntry& entry, void*) { Connection::onMessageDeadline(entry); },
          nullptr),
      tlsIdleQueue(
          loop, [](net::DeadlineEntry& entry, void*) { Connection::onTlsIdleDeadline(entry); },
          nullptr) {
    uv_idle_init(loop, &deferIdle);
    deferIdle.data = this;
    socketsFd = ::epoll_create1(EPOLL_CLOEXEC);
    if (socketsFd < 0 || uv_poll_init(loop, &socketsPoll, socketsFd) < 0) {
        std::fprintf(stderr, "wsgate: epoll_create1: %s\n", std::strerror(errno));
        std::abort();
    }
    socketsPoll.data = this;
    // Always polled; referenced only while it has sockets, so that a loop
    // with nothing else to do still runs dry.
    uv_poll_start(&socketsPoll, UV_READABLE, onSocketsReady);
    uv_unref(reinterpret_cast<uv_handle_t*>(&socketsPoll));
}

LoopData::~LoopData() {
    // Connections closed in the last iteration finish closing first.
    while (!deferred.empty()) {
        runDeferredBatch();
    }
    closeQueue.close(nullptr);
    messageQueue.close(nullptr);
    tlsIdleQueue.close(nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&deferIdle), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&socketsPoll), nullptr);
    // Let the close callbacks run, and anything else still closing.
    uv_run(loop, UV_RUN_NOWAIT);
    ::close(socketsFd);
    if (reserveFd >= 0) {
        ::close(reserveFd);
    }
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

namespace {

epoll_event eventFor(Connection* connection) {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLOUT | EPOLLET;
    event.data.ptr = connection;
    return event;
}

} // namespace

int LoopData::watch(int fd, Connection* connection) {
    epoll_event event = eventFor(connection);
    if (::epoll_ctl(socketsFd, EPOLL_CTL_ADD, fd, &event) < 0) {
        return -errno;
    }
    if (socketCount++ == 0) {
        uv_ref(reinterpret_cast<uv_handle_t*>(&socketsPoll));
    }
    return 0;
}

void LoopData::watchAll(const int* fds, Connection* const* connections, int* results,
                        unsigned count) {
    unsigned done = 0;
    if (ringWatchesAndCloses()) {
        epoll_event events[net::IoRing::capacity];
        for (; done < count; done += net::IoRing::capacity) {
            unsigned round = std::min(count - done, net::IoRing::capacity);
            for (unsigned i = 0; i < round; ++i) {
                events[i] = eventFor(connections[done + i]);
                ring.prepareEpollCtl(socketsFd, EPOLL_CTL_ADD, fds[done + i], &events[i], i);
            }
            ring.runByTag(results + done, round);
            for (unsigned i = done; i < done + round; ++i) {
                // Inside the ring, epoll_ctl does not wait for the set's lock
                // (held a moment by the kernel elsewhere, such as a socket's
                // final release): it says EAGAIN, which a plain call never
                // does. Not made means the ring was given up.
                if (results[i] == -EAGAIN || results[i] == net::IoRing::notMade) {
                    results[i] = watch(fds[i], connections[i]);
                } else if (results[i] == 0 && socketCount++ == 0) {
                    uv_ref(reinterpret_cast<uv_handle_t*>(&socketsPoll));
                }
            }
        }
        return;
    }
    for (unsigned i = 0; i < count; ++i) {
        results[i] = watch(fds[i], connections[i]);
    }
}

void LoopData::closeSocket(int fd) noexcept {
    if (--socketCount == 0) {
        uv_unref(reinterpret_cast<uv_handle_t*>(&socketsPoll));
    }
    if (closesGathered && ringWatchesAndCloses()) {
        closingFds.push_back(fd);
        // Two calls each, and room for them in one run.
        if (closingFds.size() * 2 == net::IoRing::capacity) {
            submitCloses();
        }
        return;
    }
    unwatchAndClose(fd);
}

void LoopData::unwatchAndClose(int fd) noexcept {
    // Out of the set first: a copy of the descriptor elsewhere (a fork, an
    // adopted socket) would keep it there.
    ::epoll_ctl(socketsFd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
}

void LoopData::submitCloses() noexcept {
    auto count = static_cast<unsigned>(closingFds.size());
    if (count == 0) {
        return;
    }
    if (ringWatchesAndCloses()) {
        for (unsigned i = 0; i < count; ++i) {
            ring.prepareEpollCtl(socketsFd, EPOLL_CTL_DEL, closingFds[i], nullptr, 2 * i);
            ring.linkToNext();
            ring.prepareClose(closingFds[i], 2 * i + 1);
        }
    }
    int results[net::IoRing::capacity];
    ring.runByTag(results, 2 * count);
    for (unsigned i = 0; i < count; ++i) {
        // The close follows a DEL that succeeded. If it was not made (the
        // DEL said EAGAIN, see watchAll, or the ring was given up), both
        // are made here.
        int closed = results[2 * i + 1];
        if (closed == net::IoRing::notMade || closed == -EAGAIN) {
            unwatchAndClose(closingFds[i]);
        }
    }
    closingFds.clear();
}

void LoopData::onSocketsReady(uv_poll_t* poll, int status, int) {
    if (status < 0) {
        return;
    }
    auto* self = static_cast<LoopData*>(poll->data);
    epoll_event events[eventsPerWakeup];
    int n = ::epoll_wait(self->socketsFd, events, eventsPerWakeup, 0);
    if (n > 0 && self->ring.usable()) {
        self->processBatched(events, n);
        return;
    }
    // A connection closed by an earlier event of this batch is still
    // allocated: it is freed from the deferred queue, in a later iteration.
    for (int i = 0; i < n; ++i) {
        static_cast<Connection*>(events[i].data.ptr)->onSocketEvents(events[i].events);
    }
}

void LoopData::processBatched(const epoll_event* events, int count) {
    if (!recvBuffer) {
        // Not zeroed: only the pages that reads reach become resident.
        recvBuffer.reset(new std::uint8_t[recvSlots * recvSliceSize]);
    }
    outboxOpen = true;
    closesGathered = true;
    std::uint64_t gatherStart = uv_hrtime();
    int results[recvSlots];
    for (int base = 0; base < count; base += static_cast<int>(recvSlots)) {
        int end = std::min(count, base + static_cast<int>(recvSlots));
        // Every read of the round in one system call, then the events in
        // their order, each with its read.
        bool batchReads = ring.usable();
        for (int i = base; i < end; ++i) {
            auto slot = static_cast<unsigned>(i - base);
            auto* c = static_cast<Connection*>(events[i].data.ptr);
            if (batchReads && c->wantsBatchedRead(events[i].events)) {
                ring.prepareRecv(c->socketFd(), recvBuffer.get() + slot * recvSliceSize,
                                 recvSliceSize, slot);
            }
        }
        ring.runByTag(results, static_cast<unsigned>(end - base));
        for (int i = base; i < end; ++i) {
            auto slot = static_cast<unsigned>(i - base);
            static_cast<Connection*>(events[i].data.ptr)
                ->onSocketEvents(events[i].events, recvBuffer.get() + slot * recvSliceSize,
                                 results[slot]);
            if (!outboxEntries.empty()) {
                // Heavy events (a TLS handshake's key exchange takes
                // milliseconds) must not hold the replies of the ones before.
                std::uint64_t now = uv_hrtime();
                if (now - gatherStart > maxOutboxHoldNs) {
                    submitOutbox();
                    gatherStart = now;
                }
            }
        }
    }
    submitOutbox();
    outboxOpen = false;
    // Now that nothing is gathered any more, what the sends have to say.
    for (std::size_t i = 0; i < sendReports.size(); ++i) {
        sendReports[i].connection->afterBatchedSend(sendReports[i].result);
    }
    sendReports.clear();
    // The sends' reports close sockets too (the server closes first once
    // its close frame is out).
    closesGathered = false;
    submitCloses();
}

bool LoopData::outboxTakes(const Connection* connection, bool queued,
                           std::size_t size) const noexcept {
    bool last = !outboxEntries.empty() && outboxEntries.back().connection == connection;
    if (queued && !last) {
        return false; // a second entry could overtake the first
    }
    return (last || outboxEntries.size() < net::IoRing::capacity) &&
           outbox.size() + size <= outboxLimit;
}

void LoopData::queueWrite(Connection* connection, const iovec* bufs, unsigned count) {
    if (outboxEntries.empty() || outboxEntries.back().connection != connection) {
        outboxEntries.push_back({connection, static_cast<std::uint32_t>(outbox.size()), 0});
    }
    std::size_t total = 0;
    for (unsigned i = 0; i < count; ++i) {
        outbox.append(static_cast<const char*>(bufs[i].iov_base), bufs[i].iov_len);
        total += bufs[i].iov_len;
    }
    outboxEntries.back().size += static_cast<std::uint32_t>(total);
}

void LoopData::submitOutbox() {
    std::size_t count = outboxEntries.size();
    if (count == 0) {
        return;
    }
    // The outbox does not grow from here until it is cleared, so the calls
    // may point into it.
    if (ring.usable()) {
        for (std::size_t i = 0; i < count; ++i) {
            const OutboxEntry& entry = outboxEntries[i];
            ring.prepareSend(entry.connection->socketFd(), outbox.data() + entry.offset, entry.size,
                             static_cast<std::uint32_t>(i));
        }
    }
    int results[net::IoRing::capacity];
    ring.runByTag(results, static_cast<unsigned>(count));
    for (std::size_t i = 0; i < count; ++i) {
        const OutboxEntry& entry = outboxEntries[i];
        entry.connection->onBatchedSend(outbox.data() + entry.offset, entry.size, results[i]);
    }
    outbox.clear();
    outboxEntries.clear();
}

std::size_t LoopData::queuedBytes(const Connection* connection) const noexcept {
    for (const OutboxEntry& entry : outboxEntries) {
        if (entry.connection == connection) {
            return entry.size;
        }
    }
    return 0;
}

void LoopData::defer(Connection* connection) {
    deferred.push_back(connection);
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&deferIdle)) == 0) {
        uv_idle_start(&deferIdle, onDeferIdle);
    }
}

void LoopData::cancelDeferred(Connection* connection) noexcept {
    std::replace(deferred.begin(), deferred.end(), connection, static_cast<Connection*>(nullptr));
    std::replace(deferredRunning.begin(), deferredRunning.end(), connection,
                 static_cast<Connection*>(nullptr));
}

void LoopData::onDeferIdle(uv_idle_t* idle) {
    static_cast<LoopData*>(idle->data)->runDeferredBatch();
}

void LoopData::runDeferredBatch() {
    // Two vectors swapped, so that neither is allocated again per batch.
    deferredRunning.swap(deferred);
    uv_idle_stop(&deferIdle);
    // A connection freed by an earlier one of the batch is nulled in it.
    for (std::size_t i = 0; i < deferredRunning.size(); ++i) {
        if (Connection* c = deferredRunning[i]) {
            c->runDeferred();
        }
    }
    deferredRunning.clear();
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
