// The seam under RawClient: what carries its bytes once a layer such as TLS
// sits between it and the socket.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace wsgate::test {

/// A byte stream over a connected socket that RawClient sends through and
/// reads from instead of the socket itself. Every wait is bounded.
class ClientTransport {
public:
    using Clock = std::chrono::steady_clock;

    /// What a receive() gave.
    enum class Status {
        Data,    ///< Bytes were appended.
        Eof,     ///< The peer ended the stream (and closed TCP).
        Reset,   ///< The connection was reset or the stream broke.
        Timeout, ///< Nothing arrived before the deadline.
    };

    ClientTransport() = default;
    virtual ~ClientTransport() = default;
    ClientTransport(const ClientTransport&) = delete;
    ClientTransport& operator=(const ClientTransport&) = delete;

    /// Sends all of `bytes`. `stall` bounds every wait without progress, not
    /// the whole send. Bytes that arrive while it waits for room are kept for
    /// the next receive(), so that a peer that echoes while we send can never
    /// deadlock the test.
    virtual bool send(std::string_view bytes, std::chrono::milliseconds stall) = 0;
    /// Appends what has arrived to `out`, waiting until `deadline` for at
    /// least one byte; a deadline in the past only takes what is there.
    virtual Status receive(std::string& out, Clock::time_point deadline) = 0;
    /// Ends our sending side the way the layer does it (TLS: close_notify),
    /// then shuts down TCP's.
    virtual void shutdownWrite() = 0;
};

} // namespace wsgate::test
