// What the connections of one loop share: the loop, the epoll set their
// sockets are watched in, one read buffer, the close-deadline queue and the
// queue of work deferred to the next iteration.
#pragma once

#include "net/DeadlineQueue.h"
#include "net/IoRing.h"
#include "proto/Protocol.h"

#include <sys/epoll.h>
#include <sys/uio.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace wsgate::detail {

class Connection;

struct LoopData {
    /// Every read on the loop lands here; a connection keeps only the partial
    /// frame it needs (DESIGN.md, the hot path). One per loop, so it can be
    /// large: at 64 KiB a 64 KiB message never fitted one read and was copied
    /// into an assembly buffer; at 512 KiB it usually comes in one read and
    /// is delivered in place (one read per message instead of two).
    static constexpr std::size_t readBufferSize = 512 * 1024;

    explicit LoopData(uv_loop_t* existing);
    ~LoopData();
    LoopData(const LoopData&) = delete;
    LoopData& operator=(const LoopData&) = delete;

    /// Runs Connection::runDeferred on the next loop iteration.
    void defer(Connection* connection);
    /// Forgets a connection that is being freed.
    void cancelDeferred(Connection* connection) noexcept;

    /// Adds a connection's socket to the loop's epoll set, edge-triggered
    /// for reading and writing; 0 or a negative errno.
    int watch(int fd, Connection* connection);
    /// watch() for `count` sockets at once: one system call where the ring
    /// allows. `results` gets each one's 0 or negative errno.
    void watchAll(const int* fds, Connection* const* connections, int* results, unsigned count);
    /// Takes a socket out of the set and closes it. While a wakeup's events
    /// are processed, that waits for the wakeup's end, where every socket
    /// closed in it goes in one system call; the descriptor stays open (and
    /// its number taken) until then.
    void closeSocket(int fd) noexcept;
    /// Closes the sockets gathered by closeSocket.
    void submitCloses() noexcept;

    /// Whether the outbox takes `size` more bytes from `connection`, which
    /// has bytes in it already if `queued`.
    bool outboxTakes(const Connection* connection, bool queued, std::size_t size) const noexcept;
    /// Gathers a write made while the socket set is processed (outboxOpen)
    /// for the one batch of sends at the end of the wakeup. The connection
    /// must have no entry but the last one, and outboxTakes its bytes.
    void queueWrite(Connection* connection, const iovec* bufs, unsigned count);
    /// Makes the queued sends now, in one system call where the ring allows.
    void submitOutbox();
    /// Bytes `connection` has in the outbox.
    std::size_t queuedBytes(const Connection* connection) const noexcept;

    std::unique_ptr<uv_loop_t> ownedLoop; // before `loop`, which may point into it
    uv_loop_t* loop = nullptr;
    std::unique_ptr<std::uint8_t[]> readBuffer;
    /// Frames written while one connection processes a read batch, written
    /// out as one when the batch ends. Only one connection is corked at a
    /// time: reads are not nested.
    std::string corkBuffer;
    Connection* corkOwner = nullptr;
    /// A spare large buffer for message assembly, and one for the unwritten
    /// tail of a large write: reused rather than allocated per message.
    proto::BufferCache messageCache;
    std::string spareWriteBuffer;
    /// Connections waiting for a peer's close frame, FIN or a flush.
    net::DeadlineQueue closeQueue;
    /// Connections with a message begun and not finished (see
    /// Server::setMessageTimeout). A queue of its own, so that its one
    /// timeout keeps inserts at the tail.
    net::DeadlineQueue messageQueue;
    /// wss:// connections quiet since their last read batch: when one has
    /// been quiet this long, its TLS record buffers' pages go back to the
    /// kernel (TlsSession::releaseIdleMemory).
    net::DeadlineQueue tlsIdleQueue;
    std::uint32_t tlsIdleReleaseMs = 5000;
    uv_idle_t deferIdle;
    std::vector<Connection*> deferred;
    std::vector<Connection*> deferredRunning; // the batch being run
    /// Connection sockets are not libuv handles: a uv_tcp_t is 248 bytes and
    /// a uv_poll_t 160 per connection, and libuv keeps a watcher slot per
    /// descriptor besides. They sit in an epoll set of our own, which the
    /// loop watches as one descriptor through `socketsPoll`. Edge-triggered,
    /// each socket is added once and never modified.
    int socketsFd = -1;
    uv_poll_t socketsPoll;
    std::size_t socketCount = 0; // socketsPoll keeps the loop alive while nonzero
    /// One wakeup's socket calls in a few system calls instead of one each
    /// (IoRing.h). Where the kernel offers no ring, the calls are plain.
    net::IoRing ring;
    /// The batched reads of a wakeup land in slices of their own: the read
    /// buffer is for the plain reads that follow one that filled its slice.
    /// A slice is one page, so that small reads touch few.
    static constexpr unsigned recvSlots = 32;
    static constexpr std::size_t recvSliceSize = 4096;
    std::unique_ptr<std::uint8_t[]> recvBuffer;
    /// Writes gathered while the socket set is processed, sent together when
    /// it is done. A connection has at most one entry (Connection::queued_).
    struct OutboxEntry {
        Connection* connection;
        std::uint32_t offset;
        std::uint32_t size;
    };
    std::string outbox;
    std::vector<OutboxEntry> outboxEntries;
    bool outboxOpen = false;
    /// Connections to tell about a batched send once the batch is over (its
    /// callbacks may write): what was written, or the error.
    struct SendReport {
        Connection* connection;
        int result;
    };
    std::vector<SendReport> sendReports;
    /// Sockets closed while the wakeup's events are processed, closed at its end.
    std::vector<int> closingFds;
    bool closesGathered = false;
    /// A descriptor held in reserve by loops that listen: out of descriptors,
    /// a listener closes it to accept and close what waits (ServerState).
    int reserveFd = -1;
    bool stopped = false;

private:
    /// Whether sockets are added to the set and closed through the ring.
    bool ringWatchesAndCloses() noexcept { return ring.usable() && ring.watchesAndCloses(); }
    /// closeSocket's plain system calls.
    void unwatchAndClose(int fd) noexcept;
    static void onDeferIdle(uv_idle_t* idle);
    static void onSocketsReady(uv_poll_t* poll, int status, int events);
    /// One wakeup's events with batched reads, and sends gathered until its end.
    void processBatched(const epoll_event* events, int count);
    void runDeferredBatch();
};

} // namespace wsgate::detail
