// The loop's spare assembly buffer: large messages reuse it, small ones and
// idle connections never hold it.
#include "proto/Protocol.h"
#include "unit/proto/ProtoTestSupport.h"

#include <doctest/doctest.h>
#include <string>

namespace wsgate::proto::test {
namespace {

std::string bigPayload(std::size_t size) {
    std::string s(size, '\0');
    for (std::size_t i = 0; i < size; ++i) {
        s[i] = static_cast<char>('a' + i % 26);
    }
    return s;
}

// Feeds `frame` in two reads so that the payload is assembled, not viewed.
void feedSplit(Protocol& protocol, Bytes frame) {
    const std::size_t half = frame.size() / 2;
    protocol.receive(reinterpret_cast<std::uint8_t*>(frame.data()), half);
    protocol.receive(reinterpret_cast<std::uint8_t*>(frame.data()) + half, frame.size() - half);
}

} // namespace

TEST_SUITE("assembly buffers shared per loop") {
    TEST_CASE("a large split message leaves its buffer in the cache, and the next reuses it") {
        BufferCache cache;
        RecordingHandler handler;
        Protocol protocol(handler, {});
        handler.attach(protocol);
        protocol.setBufferCache(&cache);

        const std::string payload = bigPayload(256 * 1024);
        feedSplit(protocol, clientFrame(Opcode::Binary, payload));
        REQUIRE(handler.events.size() == 1);
        CHECK(handler.events[0] == binaryMessage(payload));
        const std::size_t cached = cache.spare.capacity();
        CHECK(cached >= payload.size());
        const char* buffer = cache.spare.data();

        // The next large message is assembled in the same memory.
        bool sameBuffer = false;
        Setup setup;
        RecordingHandler second(setup);
        Protocol other(second, {});
        second.attach(other);
        other.setBufferCache(&cache);
        Bytes frame = clientFrame(Opcode::Binary, payload);
        const std::size_t half = frame.size() / 2;
        other.receive(reinterpret_cast<std::uint8_t*>(frame.data()), half);
        sameBuffer = cache.spare.capacity() < cached;
        other.receive(reinterpret_cast<std::uint8_t*>(frame.data()) + half, frame.size() - half);
        CHECK(sameBuffer);
        CHECK(second.events.size() == 1);
        CHECK(cache.spare.data() == buffer);
    }

    TEST_CASE("a small message never takes the spare buffer") {
        BufferCache cache;
        cache.spare.reserve(1024 * 1024);
        const std::size_t spare = cache.spare.capacity();
        RecordingHandler handler;
        Protocol protocol(handler, {});
        handler.attach(protocol);
        protocol.setBufferCache(&cache);
        // A fragmented small message, left unfinished: the connection holds
        // its fragment, not the loop's large buffer.
        Bytes first = clientFrame(Opcode::Text, "hello ", false);
        protocol.receive(reinterpret_cast<std::uint8_t*>(first.data()), first.size());
        CHECK(cache.spare.capacity() == spare);
        Bytes last = clientFrame(Opcode::Continuation, "world");
        protocol.receive(reinterpret_cast<std::uint8_t*>(last.data()), last.size());
        CHECK(handler.events.back() == textMessage("hello world"));
        CHECK(cache.spare.capacity() == spare);
    }
}

} // namespace wsgate::proto::test
