// A loop's io_uring, used only to make many non-blocking socket calls in one
// system call: the reads of every socket epoll reported in one wakeup, the
// writes gathered while they were processed, the accepts of a listener's
// wakeup with their epoll registrations, and the closes of a wakeup. Each
// call is one the kernel completes inside io_uring_enter (a read or send
// with MSG_DONTWAIT gives the bytes or -EAGAIN, an accept with
// IORING_ACCEPT_DONTWAIT a socket or -EAGAIN), so nothing is ever left
// pending: run() returns with every result in hand, and no buffer is
// borrowed past it.
//
// On this VM kind a system call costs about a microsecond before it does
// any work; a loopback echo needs two per message, which batching shares
// among every socket of the wakeup (docs/benchmarks.md).
#pragma once

#include <cstddef>
#include <cstdint>

struct io_uring;
struct io_uring_sqe;
struct epoll_event;

namespace wsgate::net {

class IoRing {
public:
    /// Room for this many calls per run().
    static constexpr unsigned capacity = 64;
    /// A result no call returns: the call was not made.
    static constexpr int notMade = -0x7fffffff - 1;

    /// A ring, or none (usable() false) where the kernel has no io_uring,
    /// refuses it (a seccomp filter, as in Docker's default profile, or the
    /// io_uring_disabled sysctl), lacks IORING_SETUP_SUBMIT_ALL (Linux
    /// 5.18), or would not complete a non-blocking call inline; and none
    /// when the environment has WSGATE_IO_URING=0.
    IoRing();
    ~IoRing();
    IoRing(const IoRing&) = delete;
    IoRing& operator=(const IoRing&) = delete;

    /// In a child of fork() the ring mapped in the parent is the parent's:
    /// both would submit to it. The first call there opens a ring of the
    /// child's own (or none).
    bool usable() noexcept { return forks_ == forkCount() ? ring_ != nullptr : reopen(); }
    /// Whether prepareAccept may be used: the kernel completes a
    /// non-blocking accept inline (IORING_ACCEPT_DONTWAIT, Linux 6.10).
    bool acceptsInline() const noexcept { return acceptsInline_; }
    /// Whether prepareEpollCtl and prepareClose may be used: the kernel has
    /// both operations. They came with Linux 5.6, but io_uring's epoll_ctl
    /// has been proposed for removal, and where it is gone (or built out)
    /// the call would fail with EINVAL or EOPNOTSUPP.
    bool watchesAndCloses() const noexcept { return watchesAndCloses_; }
    /// Calls prepared and not yet run.
    unsigned prepared() const noexcept { return prepared_; }

    /// recv(2) with MSG_DONTWAIT into `buffer`; `tag` comes back with the result.
    void prepareRecv(int fd, void* buffer, std::size_t size, std::uint32_t tag) noexcept;
    /// send(2) with MSG_DONTWAIT and MSG_NOSIGNAL.
    void prepareSend(int fd, const void* data, std::size_t size, std::uint32_t tag) noexcept;

    /// accept4(2) of a non-blocking, close-on-exec socket from listener
    /// `fd`, which must be non-blocking; only if acceptsInline().
    void prepareAccept(int fd, std::uint32_t tag) noexcept;
    /// epoll_ctl(2) on set `epfd`; `event` is read when the call is run.
    /// Only if watchesAndCloses(), as for prepareClose.
    void prepareEpollCtl(int epfd, int op, int fd, epoll_event* event, std::uint32_t tag) noexcept;
    /// close(2).
    void prepareClose(int fd, std::uint32_t tag) noexcept;
    /// The next call prepared starts only once the last one has succeeded;
    /// if that fails, the next is not made (it comes back -EAGAIN).
    void linkToNext() noexcept;

    struct Completion {
        std::uint32_t tag;
        int result; // bytes, or a negative errno
    };

    /// Makes the prepared calls and writes each one's result to `results`
    /// (room for `capacity`), in no particular order; returns how many.
    /// Every call has completed when this returns.
    unsigned run(Completion* results) noexcept;
    /// run(), with each call's result stored at its tag: `resultByTag` has
    /// room for `tags` (at most capacity) and every tag is below it; a tag
    /// whose call was not made (none prepared, or the ring given up) gets
    /// notMade.
    void runByTag(int* resultByTag, unsigned tags) noexcept;

private:
    /// Forks of this process so far, counted in each child (pthread_atfork).
    static unsigned forkCount() noexcept;
    void open() noexcept;
    void close() noexcept;
    bool reopen() noexcept;

    /// Counts a call just prepared, tagged `tag`: the one linkToNext() links.
    void queue(io_uring_sqe* sqe, std::uint32_t tag) noexcept;
    /// Takes the completions that are in; returns how many.
    unsigned reap(Completion* results, unsigned count) noexcept;

    io_uring* ring_ = nullptr;
    unsigned prepared_ = 0;
    io_uring_sqe* last_ = nullptr;
    bool acceptsInline_ = false;
    bool watchesAndCloses_ = false;
    unsigned forks_ = 0; // forkCount() when ring_ was opened
};

} // namespace wsgate::net
