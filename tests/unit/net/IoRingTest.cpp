// IoRing makes many non-blocking socket calls in one system call and has
// every result in hand when run() returns: bytes read or sent, -EAGAIN for
// a socket with nothing to give or no room, an error for a bad descriptor.
// WSGATE_IO_URING=0 turns it off, which is how the suite runs the plain
// system calls too; a seccomp filter that refuses io_uring does the same,
// and a child of fork() opens a ring of its own. Accepts come back with a
// socket or -EAGAIN at once too, and epoll_ctl and close run in the ring
// where the kernel has them.
#include "net/IoRing.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <string>
#include <vector>

namespace {

using wsgate::net::IoRing;

struct SocketPair {
    SocketPair() {
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fd) == 0);
    }
    ~SocketPair() {
        ::close(fd[0]);
        ::close(fd[1]);
    }
    int fd[2] = {-1, -1};
};

/// The results of one run, by tag; notMade where none came back.
std::vector<int> runAll(IoRing& ring, unsigned calls) {
    std::vector<int> byTag(calls, IoRing::notMade);
    IoRing::Completion done[IoRing::capacity];
    unsigned count = ring.run(done);
    CHECK(count == calls);
    CHECK(ring.prepared() == 0);
    for (unsigned i = 0; i < count; ++i) {
        REQUIRE(done[i].tag < calls);
        CHECK(byTag[done[i].tag] == IoRing::notMade); // one result per call
        byTag[done[i].tag] = done[i].result;
    }
    return byTag;
}

bool ringExpected() {
    // The machines this runs on have io_uring; a kernel that refuses it
    // (a seccomp filter, the sysctl) makes IoRing fall back, not fail.
    int fd = ::open("/proc/sys/kernel/io_uring_disabled", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return true;
    }
    char value = '0';
    bool read = ::read(fd, &value, 1) == 1;
    ::close(fd);
    return !read || value == '0';
}

} // namespace

TEST_CASE("IoRing: WSGATE_IO_URING=0 turns it off") {
    const char* before = std::getenv("WSGATE_IO_URING");
    std::string saved = before != nullptr ? before : "";
    ::setenv("WSGATE_IO_URING", "0", 1);
    {
        IoRing ring;
        CHECK_FALSE(ring.usable());
    }
    if (before != nullptr) {
        ::setenv("WSGATE_IO_URING", saved.c_str(), 1);
    } else {
        ::unsetenv("WSGATE_IO_URING");
    }
}

TEST_CASE("IoRing: reads and sends of many sockets in one run") {
    const char* setting = std::getenv("WSGATE_IO_URING");
    if (setting != nullptr && std::strcmp(setting, "0") == 0) {
        return; // the suite's run with the plain system calls
    }
    IoRing ring;
    if (!ringExpected()) {
        MESSAGE("io_uring is disabled on this machine; IoRing falls back to plain calls");
        return;
    }
    REQUIRE(ring.usable());

    constexpr unsigned pairs = IoRing::capacity / 2;
    std::vector<SocketPair> sockets(pairs);

    SUBCASE("a send per socket, then a read per socket, each with its own bytes") {
        std::vector<std::string> messages;
        messages.reserve(pairs); // the calls point into them
        for (unsigned i = 0; i < pairs; ++i) {
            messages.push_back("message " + std::to_string(i) + std::string(i, 'x'));
            ring.prepareSend(sockets[i].fd[0], messages[i].data(), messages[i].size(), i);
        }
        std::vector<int> sent = runAll(ring, pairs);
        for (unsigned i = 0; i < pairs; ++i) {
            CHECK(sent[i] == static_cast<int>(messages[i].size()));
        }
        std::vector<std::string> buffers(pairs, std::string(256, '\0'));
        for (unsigned i = 0; i < pairs; ++i) {
            ring.prepareRecv(sockets[i].fd[1], buffers[i].data(), buffers[i].size(), i);
        }
        std::vector<int> received = runAll(ring, pairs);
        for (unsigned i = 0; i < pairs; ++i) {
            REQUIRE(received[i] == static_cast<int>(messages[i].size()));
            CHECK(buffers[i].substr(0, messages[i].size()) == messages[i]);
        }
    }

    SUBCASE("a socket with nothing to read answers -EAGAIN at once, the others their bytes") {
        char byte = 'z';
        REQUIRE(::send(sockets[1].fd[0], &byte, 1, 0) == 1);
        char buffers[3] = {};
        ring.prepareRecv(sockets[0].fd[1], &buffers[0], 1, 0);
        ring.prepareRecv(sockets[1].fd[1], &buffers[1], 1, 1);
        ring.prepareRecv(sockets[2].fd[1], &buffers[2], 1, 2);
        std::vector<int> results = runAll(ring, 3);
        CHECK(results[0] == -EAGAIN);
        CHECK(results[1] == 1);
        CHECK(buffers[1] == 'z');
        CHECK(results[2] == -EAGAIN);
    }

    SUBCASE("a bad descriptor fails its call alone") {
        char byte = 'q';
        char got = 0;
        REQUIRE(::send(sockets[0].fd[0], &byte, 1, 0) == 1);
        int closed = ::dup(sockets[0].fd[1]);
        REQUIRE(closed >= 0);
        ::close(closed);
        ring.prepareRecv(closed, &got, 1, 0);
        ring.prepareRecv(sockets[0].fd[1], &got, 1, 1);
        std::vector<int> results = runAll(ring, 2);
        CHECK(results[0] == -EBADF);
        CHECK(results[1] == 1);
        CHECK(got == 'q');
    }

    SUBCASE("a full socket takes part of a send, then -EAGAIN; a closed peer gives EOF") {
        std::string big(1 << 22, 'b');
        ring.prepareSend(sockets[0].fd[0], big.data(), big.size(), 0);
        std::vector<int> first = runAll(ring, 1);
        REQUIRE(first[0] > 0);
        CHECK(first[0] < static_cast<int>(big.size()));
        ring.prepareSend(sockets[0].fd[0], big.data(), big.size(), 0);
        CHECK(runAll(ring, 1)[0] == -EAGAIN);

        ::shutdown(sockets[1].fd[0], SHUT_WR);
        char got = 0;
        ring.prepareRecv(sockets[1].fd[1], &got, 1, 0);
        CHECK(runAll(ring, 1)[0] == 0);
    }

    SUBCASE("a send to a peer that has gone fails with EPIPE, not SIGPIPE") {
        ::close(sockets[0].fd[1]);
        sockets[0].fd[1] = ::dup(sockets[1].fd[1]); // keep the destructor's close valid
        char byte = 'p';
        ring.prepareSend(sockets[0].fd[0], &byte, 1, 0);
        CHECK(runAll(ring, 1)[0] == -EPIPE);
    }
}

namespace {

/// Whether the kernel is at least major.minor.
bool kernelAtLeast(int major, int minor) {
    utsname name{};
    REQUIRE(::uname(&name) == 0);
    int haveMajor = 0;
    int haveMinor = 0;
    REQUIRE(std::sscanf(name.release, "%d.%d", &haveMajor, &haveMinor) == 2);
    return haveMajor > major || (haveMajor == major && haveMinor >= minor);
}

bool ringTestsRun(IoRing& ring) {
    const char* setting = std::getenv("WSGATE_IO_URING");
    if (setting != nullptr && std::strcmp(setting, "0") == 0) {
        return false; // the suite's run with the plain system calls
    }
    if (!ringExpected()) {
        MESSAGE("io_uring is disabled on this machine; IoRing falls back to plain calls");
        return false;
    }
    REQUIRE(ring.usable());
    return true;
}

} // namespace

TEST_CASE("IoRing: accepts in one run take the connections waiting, then -EAGAIN at once") {
    IoRing ring;
    if (!ringTestsRun(ring)) {
        return;
    }
    // IORING_ACCEPT_DONTWAIT came with Linux 6.10; before it IoRing says no.
    REQUIRE(ring.acceptsInline() == kernelAtLeast(6, 10));
    if (!ring.acceptsInline()) {
        return;
    }
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(listener >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&address), length) == 0);
    REQUIRE(::listen(listener, 16) == 0);
    REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);

    constexpr unsigned waiting = 3;
    constexpr unsigned accepts = 8;
    int clients[waiting];
    for (int& client : clients) {
        client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    }
    for (unsigned i = 0; i < accepts; ++i) {
        ring.prepareAccept(listener, i);
    }
    // Every accept has its result when run() returns: none waits for a
    // connection to come.
    std::vector<int> results = runAll(ring, accepts);
    unsigned sockets = 0;
    for (unsigned i = 0; i < accepts; ++i) {
        if (results[i] >= 0) {
            ++sockets;
            int flags = ::fcntl(results[i], F_GETFL);
            CHECK((flags & O_NONBLOCK) != 0);
            CHECK((::fcntl(results[i], F_GETFD) & FD_CLOEXEC) != 0);
            ::close(results[i]);
        } else {
            CHECK(results[i] == -EAGAIN);
        }
    }
    CHECK(sockets == waiting);
    for (int client : clients) {
        ::close(client);
    }
    ::close(listener);
}

TEST_CASE("IoRing: epoll_ctl and close in one run, and a close linked to a DEL that fails") {
    IoRing ring;
    if (!ringTestsRun(ring)) {
        return;
    }
    int set = ::epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(set >= 0);
    SocketPair watched;
    SocketPair other;
    epoll_event event{};
    event.events = EPOLLIN | EPOLLET;
    event.data.u64 = 7;
    ring.prepareEpollCtl(set, EPOLL_CTL_ADD, watched.fd[0], &event, 0);
    event.data.u64 = 42; // read when the call is run, not when it is prepared
    if (!ring.watchesAndCloses()) {
        // The kernel probe said the operation is missing: the call must fail
        // so, and callers make plain calls instead.
        int result = runAll(ring, 1)[0];
        CHECK((result == -EINVAL || result == -EOPNOTSUPP));
        ::close(set);
        return;
    }
    CHECK(runAll(ring, 1)[0] == 0);
    REQUIRE(::write(watched.fd[1], "x", 1) == 1);
    epoll_event ready{};
    REQUIRE(::epoll_wait(set, &ready, 1, 1000) == 1);
    CHECK(static_cast<std::uint64_t>(ready.data.u64) == 42);

    SUBCASE("a DEL and the close linked to it") {
        // A copy is closed, so that the pair's own descriptor stays for its
        // destructor; the DEL takes the socket out of the set all the same.
        int fd = ::dup(watched.fd[0]);
        REQUIRE(fd >= 0);
        ring.prepareEpollCtl(set, EPOLL_CTL_DEL, watched.fd[0], nullptr, 0);
        ring.linkToNext();
        ring.prepareClose(fd, 1);
        std::vector<int> results = runAll(ring, 2);
        CHECK(results[0] == 0);
        CHECK(results[1] == 0);
        CHECK(::fcntl(fd, F_GETFD) == -1); // closed
        REQUIRE(::write(watched.fd[1], "y", 1) == 1);
        CHECK(::epoll_wait(set, &ready, 1, 0) == 0); // out of the set
    }
    SUBCASE("a DEL of a socket not in the set fails, and its linked close is not made") {
        ring.prepareEpollCtl(set, EPOLL_CTL_DEL, other.fd[0], nullptr, 0);
        ring.linkToNext();
        ring.prepareClose(other.fd[0], 1);
        std::vector<int> results = runAll(ring, 2);
        CHECK(results[0] == -ENOENT);
        CHECK(results[1] == -EAGAIN);
        CHECK(::fcntl(other.fd[0], F_GETFD) != -1); // still open
    }
    ::close(set);
}

TEST_CASE("IoRing: a child of fork() gets a ring of its own, and the parent's goes on") {
    const char* setting = std::getenv("WSGATE_IO_URING");
    if ((setting != nullptr && std::strcmp(setting, "0") == 0) || !ringExpected()) {
        return;
    }
    IoRing ring;
    REQUIRE(ring.usable());
    // One round trip through `ring`: true if the bytes came back.
    auto roundTrip = [&ring](const std::string& text) {
        SocketPair pair;
        ring.prepareSend(pair.fd[0], text.data(), text.size(), 0);
        IoRing::Completion done[IoRing::capacity];
        if (ring.run(done) != 1 || done[0].result != static_cast<int>(text.size())) {
            return false;
        }
        std::string got(text.size(), '\0');
        ring.prepareRecv(pair.fd[1], got.data(), got.size(), 1);
        return ring.run(done) == 1 && done[0].tag == 1 &&
               done[0].result == static_cast<int>(text.size()) && got == text;
    };
    REQUIRE(roundTrip("before the fork"));

    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // Several calls, as a forked worker would make; no doctest here.
        bool ok = ring.usable();
        for (int i = 0; ok && i < 8; ++i) {
            ok = roundTrip("in the child " + std::to_string(i));
        }
        ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // Had the child submitted to the parent's ring, the parent's view of its
    // queues would be behind the kernel's now.
    CHECK(ring.usable());
    for (int i = 0; i < 8; ++i) {
        CHECK(roundTrip("in the parent " + std::to_string(i)));
    }
}

TEST_CASE("IoRing: a seccomp filter that refuses io_uring leaves plain calls, not a failure") {
    // As Docker's default profile does: io_uring_setup fails with EPERM.
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        sock_fprog program{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
            ::_exit(2);
        }
        IoRing ring;
        ::_exit(ring.usable() ? 1 : 0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0); // 1: a ring anyway; 2: no filter installed
}
