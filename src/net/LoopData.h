// What the connections of one loop share: the loop, one read buffer, the
// close-deadline queue and the queue of work deferred to the next iteration.
#pragma once

#include "net/DeadlineQueue.h"
#include "proto/Protocol.h"

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
    uv_idle_t deferIdle;
    std::vector<Connection*> deferred;
    std::vector<Connection*>* deferredRunning = nullptr; // the batch being run
    bool stopped = false;

private:
    static void onDeferIdle(uv_idle_t* idle);
};

} // namespace wsgate::detail
