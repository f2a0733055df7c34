// A loop's epoll set through its ring: watchAll adds many sockets in one
// system call and closeSocket gathers closes for one. Inside the ring,
// epoll_ctl does not wait for the set's lock and says EAGAIN when another
// holder has it; the loop then makes the call itself, so no socket is left
// unwatched or open.
#include "net/LoopData.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <doctest/doctest.h>
#include <thread>
#include <vector>

namespace {

using wsgate::detail::Connection;
using wsgate::detail::LoopData;
using wsgate::net::IoRing;

/// Takes the set's lock over and over, as the kernel does when it releases
/// a socket that was in it: a descriptor added and removed in a loop.
class SetLockHolder {
public:
    // The pipe is made before the thread starts: a descriptor number it
    // took later could be one the test has just closed.
    explicit SetLockHolder(int set) : pipe_(makePipe()), thread_([this, set] { run(set); }) {}
    ~SetLockHolder() {
        stop_ = true;
        thread_.join();
        ::close(pipe_[0]);
        ::close(pipe_[1]);
    }
    SetLockHolder(const SetLockHolder&) = delete;
    SetLockHolder& operator=(const SetLockHolder&) = delete;

private:
    static std::array<int, 2> makePipe() {
        std::array<int, 2> fds{-1, -1};
        REQUIRE(::pipe2(fds.data(), O_CLOEXEC) == 0);
        return fds;
    }

    void run(int set) {
        epoll_event event{};
        event.events = EPOLLIN;
        while (!stop_) {
            ::epoll_ctl(set, EPOLL_CTL_ADD, pipe_[0], &event);
            ::epoll_ctl(set, EPOLL_CTL_DEL, pipe_[0], nullptr);
        }
    }

    std::array<int, 2> pipe_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

} // namespace

TEST_CASE("LoopData: every socket is watched and closed while the set's lock is contended") {
    LoopData loop(nullptr);
    SetLockHolder holder(loop.socketsFd);
    constexpr unsigned count = IoRing::capacity;
    // Only the data pointer of each registration: no event is processed.
    std::vector<Connection*> connections(count);
    for (unsigned i = 0; i < count; ++i) {
        connections[i] = reinterpret_cast<Connection*>(static_cast<std::uintptr_t>(i + 1) * 16);
    }
    for (int round = 0; round < 50; ++round) {
        std::vector<int> fds(count);
        std::vector<int> peers(count);
        for (unsigned i = 0; i < count; ++i) {
            int pair[2];
            REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) ==
                    0);
            fds[i] = pair[0];
            peers[i] = pair[1];
        }
        std::vector<int> results(count, 1);
        loop.watchAll(fds.data(), connections.data(), results.data(), count);
        for (unsigned i = 0; i < count; ++i) {
            REQUIRE(results[i] == 0);
        }
        CHECK(loop.socketCount == count);
        // Each watched socket is reported once written to.
        for (int peer : peers) {
            REQUIRE(::write(peer, "x", 1) == 1);
        }
        std::vector<epoll_event> events(count + 1);
        unsigned seen = 0;
        for (int tries = 0; tries < 100 && seen < count; ++tries) {
            int n =
                ::epoll_wait(loop.socketsFd, events.data(), static_cast<int>(events.size()), 100);
            REQUIRE(n >= 0);
            seen += static_cast<unsigned>(n);
        }
        CHECK(seen == count);

        // As at the end of a wakeup: the closes gathered, then made at once.
        loop.closesGathered = true;
        for (int fd : fds) {
            loop.closeSocket(fd);
        }
        loop.closesGathered = false;
        loop.submitCloses();
        CHECK(loop.socketCount == 0);
        for (unsigned i = 0; i < count; ++i) {
            CHECK(::fcntl(fds[i], F_GETFD) == -1); // closed
            ::close(peers[i]);
        }
    }
}
