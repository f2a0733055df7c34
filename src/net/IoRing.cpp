#include "net/IoRing.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <liburing.h>
#include <pthread.h>

namespace wsgate::net {
namespace {

constexpr std::uint64_t cancelTag = ~std::uint64_t{0};

// Linux 6.10's uapi; Debian 12's headers predate it.
#ifndef IORING_ACCEPT_DONTWAIT
constexpr std::uint16_t IORING_ACCEPT_DONTWAIT = 1U << 1;
#endif

/// Submits the one call prepared and says whether it completed inside the
/// submit with -EAGAIN. If it is pending instead, it is cancelled and
/// waited for.
bool completesInlineWithEagain(io_uring* ring) {
    bool inlined = false;
    if (io_uring_submit(ring) == 1) {
        io_uring_cqe* cqe = nullptr;
        if (io_uring_peek_cqe(ring, &cqe) == 0 && cqe != nullptr) {
            inlined = cqe->res == -EAGAIN;
            io_uring_cqe_seen(ring, cqe);
        } else {
            io_uring_sqe* sqe = io_uring_get_sqe(ring);
            io_uring_prep_cancel64(sqe, 1, 0);
            sqe->user_data = cancelTag;
            io_uring_submit(ring);
            for (int seen = 0; seen < 2;) {
                if (io_uring_wait_cqe(ring, &cqe) < 0) {
                    break;
                }
                io_uring_cqe_seen(ring, cqe);
                ++seen;
            }
        }
    }
    return inlined;
}

/// The ring is worth using only if a non-blocking call on an empty socket
/// comes back inside the submit, with -EAGAIN: then no call can outlive
/// run(), whatever the kernel version does with MSG_DONTWAIT.
bool completesInline(io_uring* ring) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        return false;
    }
    char byte = 0;
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    io_uring_prep_recv(sqe, pair[0], &byte, 1, MSG_DONTWAIT);
    sqe->user_data = 1;
    bool inlined = completesInlineWithEagain(ring);
    ::close(pair[0]);
    ::close(pair[1]);
    return inlined;
}

io_uring_sqe* prepareAcceptCall(io_uring* ring, int fd) {
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    io_uring_prep_accept(sqe, fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    // Without it the kernel waits for a connection instead of saying EAGAIN,
    // even on a non-blocking listener.
    sqe->ioprio |= IORING_ACCEPT_DONTWAIT;
    return sqe;
}

/// The same for an accept on a listener with nothing waiting: kernels before
/// 6.10 refuse IORING_ACCEPT_DONTWAIT (EINVAL) and would wait without it.
bool acceptCompletesInline(io_uring* ring) {
    int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listener < 0) {
        return false;
    }
    // An address of the kernel's choosing in the abstract namespace.
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    bool inlined = false;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(sa_family_t)) == 0 &&
        ::listen(listener, 1) == 0) {
        prepareAcceptCall(ring, listener)->user_data = 1;
        inlined = completesInlineWithEagain(ring);
    }
    ::close(listener);
    return inlined;
}

/// Whether the kernel knows every operation in `ops`.
bool supportsAll(io_uring* ring, std::initializer_list<int> ops) {
    io_uring_probe* probe = io_uring_get_probe_ring(ring);
    if (probe == nullptr) {
        return false;
    }
    bool all = true;
    for (int op : ops) {
        all = all && io_uring_opcode_supported(probe, op) != 0;
    }
    io_uring_free_probe(probe);
    return all;
}

std::atomic<unsigned> forks{0};

void countFork() noexcept {
    forks.fetch_add(1, std::memory_order_relaxed);
}

} // namespace

unsigned IoRing::forkCount() noexcept {
    static const bool registered = [] {
        ::pthread_atfork(nullptr, nullptr, countFork);
        return true;
    }();
    (void)registered;
    return forks.load(std::memory_order_relaxed);
}

IoRing::IoRing() {
    open();
}

IoRing::~IoRing() {
    close();
}

void IoRing::open() noexcept {
    forks_ = forkCount();
    const char* setting = std::getenv("WSGATE_IO_URING");
    if (setting != nullptr && std::strcmp(setting, "0") == 0) {
        return;
    }
    auto* ring = new io_uring;
    io_uring_params params{};
    // Without SUBMIT_ALL a call that fails early would stop the ones after it.
    params.flags = IORING_SETUP_SUBMIT_ALL;
    if (io_uring_queue_init_params(capacity * 2, ring, &params) < 0) {
        delete ring;
        return;
    }
    if (!completesInline(ring)) {
        io_uring_queue_exit(ring);
        delete ring;
        return;
    }
    ring_ = ring;
    acceptsInline_ = acceptCompletesInline(ring);
    watchesAndCloses_ = supportsAll(ring, {IORING_OP_EPOLL_CTL, IORING_OP_CLOSE});
}

void IoRing::close() noexcept {
    if (ring_ != nullptr) {
        // In a child of fork() this unmaps and closes the child's copies
        // only; the parent's ring goes on.
        io_uring_queue_exit(ring_);
        delete ring_;
        ring_ = nullptr;
    }
    acceptsInline_ = false;
    watchesAndCloses_ = false;
}

bool IoRing::reopen() noexcept {
    close();
    prepared_ = 0;
    open();
    return ring_ != nullptr;
}

void IoRing::queue(io_uring_sqe* sqe, std::uint32_t tag) noexcept {
    sqe->user_data = tag;
    last_ = sqe;
    ++prepared_;
}

void IoRing::prepareRecv(int fd, void* buffer, std::size_t size, std::uint32_t tag) noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(ring_);
    io_uring_prep_recv(sqe, fd, buffer, size, MSG_DONTWAIT);
    queue(sqe, tag);
}

void IoRing::prepareSend(int fd, const void* data, std::size_t size, std::uint32_t tag) noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(ring_);
    io_uring_prep_send(sqe, fd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
    queue(sqe, tag);
}

void IoRing::prepareAccept(int fd, std::uint32_t tag) noexcept {
    queue(prepareAcceptCall(ring_, fd), tag);
}

void IoRing::prepareEpollCtl(int epfd, int op, int fd, epoll_event* event,
                             std::uint32_t tag) noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(ring_);
    io_uring_prep_epoll_ctl(sqe, epfd, fd, op, event);
    queue(sqe, tag);
}

void IoRing::prepareClose(int fd, std::uint32_t tag) noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(ring_);
    io_uring_prep_close(sqe, fd);
    queue(sqe, tag);
}

void IoRing::linkToNext() noexcept {
    last_->flags |= IOSQE_IO_LINK;
}

unsigned IoRing::reap(Completion* results, unsigned count) noexcept {
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(ring_, head, cqe) {
        ++seen;
        if (cqe->user_data == cancelTag) {
            continue;
        }
        // A cancelled call did nothing, as if the socket had been busy.
        results[count++] = {static_cast<std::uint32_t>(cqe->user_data),
                            cqe->res == -ECANCELED ? -EAGAIN : cqe->res};
    }
    io_uring_cq_advance(ring_, seen);
    return count;
}

unsigned IoRing::run(Completion* results) noexcept {
    unsigned wanted = prepared_;
    prepared_ = 0;
    if (wanted == 0) {
        return 0;
    }
    int submitted = 0;
    do {
        submitted = io_uring_submit(ring_);
    } while (submitted == -EINTR);
    auto expected = static_cast<unsigned>(submitted < 0 ? 0 : submitted);
    unsigned count = reap(results, 0);
    if (count < expected) {
        // Should not happen (see completesInline); never leave a call
        // holding a buffer past this point.
        io_uring_sqe* sqe = io_uring_get_sqe(ring_);
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
        sqe->user_data = cancelTag;
        io_uring_submit(ring_);
        while (count < expected) {
            io_uring_cqe* cqe = nullptr;
            if (io_uring_wait_cqe(ring_, &cqe) < 0) {
                break;
            }
            count = reap(results, count);
        }
    }
    if (expected < wanted) {
        // Not expected with SUBMIT_ALL and a completion queue emptied every
        // time. Give the ring up: the caller makes the calls missing from
        // `results` itself, and the loop goes on with plain system calls.
        close();
    }
    return count;
}

void IoRing::runByTag(int* resultByTag, unsigned tags) noexcept {
    for (unsigned i = 0; i < tags; ++i) {
        resultByTag[i] = notMade;
    }
    Completion done[capacity];
    unsigned count = run(done);
    for (unsigned i = 0; i < count; ++i) {
        resultByTag[done[i].tag] = done[i].result;
    }
}

} // namespace wsgate::net
