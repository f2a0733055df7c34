// Fuzzes the opening-handshake parser (RFC 6455 §4.2.1). The first input
// byte picks the header limit and how the rest is chunked:
//   bits 0-3  chunk size minus one (1..16 bytes),
//   bit 4     feed the input whole instead,
//   bit 5     vary the chunk size, cycling from 1 to the chosen size,
//   bits 6-7  header limit: the default, 256, 1024 or 64 bytes.
// Only documented outcomes are allowed, the chunked parse must agree with a
// whole one, and a complete request must come back unchanged out of the
// compact form a connection keeps (RequestInfo); anything else aborts.
#include "net/RequestInfo.h"
#include "proto/Handshake.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

using wsgate::proto::HandshakeParser;
using wsgate::proto::HandshakeRequest;
using Status = HandshakeParser::Status;

struct Outcome {
    Status status = Status::NeedMore;
    wsgate::Error error = wsgate::Error::MalformedRequest;
    std::size_t consumed = 0;
    HandshakeRequest request;
};

[[noreturn]] void violation(const char* what) {
    std::fprintf(stderr, "handshake_fuzz: %s\n", what);
    std::abort();
}

void require(bool condition, const char* what) {
    if (!condition) {
        violation(what);
    }
}

Outcome parse(std::string_view input, std::size_t maxHeaderBytes, std::size_t chunk,
              bool varyChunk) {
    HandshakeParser parser(maxHeaderBytes);
    Outcome outcome;
    std::size_t offset = 0;
    std::size_t step = varyChunk ? 1 : chunk;
    do {
        const std::size_t length = std::min(step, input.size() - offset);
        // Each chunk gets its own allocation so that ASan catches a read past it.
        const std::vector<char> piece(input.begin() + static_cast<std::ptrdiff_t>(offset),
                                      input.begin() + static_cast<std::ptrdiff_t>(offset + length));
        std::size_t consumed = 0;
        outcome.status = parser.receive(piece.data(), piece.size(), consumed);
        offset += length;
        switch (outcome.status) {
        case Status::NeedMore:
            require(consumed == length, "NeedMore did not consume its chunk");
            outcome.consumed += consumed;
            break;
        case Status::Complete:
            require(consumed <= length, "Complete consumed more than its chunk");
            outcome.consumed += consumed;
            outcome.request = std::move(parser.request());
            return outcome;
        case Status::Failed:
            require(consumed == length, "Failed did not discard its chunk");
            outcome.error = parser.error();
            return outcome;
        }
        step = varyChunk ? step % chunk + 1 : chunk;
    } while (offset < input.size());
    return outcome;
}

bool sameRequest(const HandshakeRequest& a, const HandshakeRequest& b) {
    if (a.target != b.target || a.host != b.host || a.origin != b.origin || a.key != b.key ||
        a.protocols != b.protocols || a.extensions != b.extensions ||
        a.headers.size() != b.headers.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.headers.size(); ++i) {
        if (a.headers[i].name != b.headers[i].name || a.headers[i].value != b.headers[i].value) {
            return false;
        }
    }
    return true;
}

/// What RequestInfo keeps of `request` gives back every part of it.
void checkStored(const HandshakeRequest& request, std::string_view subprotocol, bool secure) {
    wsgate::detail::RequestInfo info;
    info.assign(request, subprotocol, secure);
    require(info.target() == request.target && info.host() == request.host &&
                info.origin() == request.origin && info.subprotocol() == subprotocol &&
                info.secure() == secure,
            "RequestInfo changed a field");
    const auto list = info.headerList();
    require(list.size() == request.headers.size(), "RequestInfo changed the header count");
    for (std::size_t i = 0; i < list.size(); ++i) {
        const auto& header = request.headers[i];
        require(list[i].first == header.name && list[i].second == header.value,
                "RequestInfo changed a header");
        // header() answers with the first value of that name, in any case.
        const std::string_view found = info.header(header.name);
        bool earlier = false;
        for (std::size_t j = 0; j < i && !earlier; ++j) {
            earlier = wsgate::proto::equalsIgnoreCase(request.headers[j].name, header.name);
        }
        require(earlier || found == header.value, "RequestInfo::header found another value");
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    const unsigned mode = data[0];
    const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
    constexpr std::size_t limits[] = {wsgate::proto::defaultMaxHeaderBytes, 256, 1024, 64};
    const std::size_t limit = limits[(mode >> 6) & 3];
    const bool whole = (mode & 0x10) != 0;
    const std::size_t chunk = whole ? input.size() + 1 : (mode & 0x0f) + 1;

    const Outcome outcome = parse(input, limit, chunk, !whole && (mode & 0x20) != 0);
    switch (outcome.status) {
    case Status::NeedMore:
        // Everything was consumed, and it fits the limit, or it would be 431.
        require(outcome.consumed == input.size(), "NeedMore left bytes");
        require(input.size() < limit, "NeedMore past the header limit");
        break;
    case Status::Complete: {
        require(outcome.consumed <= input.size() && outcome.consumed <= limit,
                "Complete consumed too much");
        const HandshakeRequest& request = outcome.request;
        require(request.key.size() == 24 && !request.host.empty(), "Complete without key or host");
        const std::vector<std::string> supported{"chat", "superchat"};
        const std::string_view protocol =
            wsgate::proto::chooseSubprotocol(request.protocols, supported);
        const std::string response = wsgate::proto::buildAcceptResponse(
            request.key, protocol, "wsgate",
            request.extensions.empty() ? std::string_view() : request.extensions.front());
        require(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n") &&
                    response.ends_with("\r\n\r\n"),
                "bad 101 response");
        checkStored(request, protocol, (mode & 1) != 0);
        break;
    }
    case Status::Failed: {
        require(wsgate::httpStatusFor(outcome.error) != 0, "Failed with a non-handshake error");
        require(make_error_code(outcome.error) == wsgate::ErrorCondition::HandshakeFailed,
                "Failed outside the HandshakeFailed condition");
        const std::string response = wsgate::proto::buildErrorResponse(outcome.error, "wsgate");
        require(response.starts_with("HTTP/1.1 4") || response.starts_with("HTTP/1.1 5"),
                "bad error response");
        break;
    }
    }

    // However the input was split, the outcome is that of parsing it whole.
    if (!whole) {
        const Outcome reference = parse(input, limit, input.size() + 1, false);
        require(reference.status == outcome.status, "split changed the status");
        if (outcome.status == Status::Failed) {
            require(reference.error == outcome.error, "split changed the error");
        } else {
            require(reference.consumed == outcome.consumed, "split changed the bytes consumed");
            require(sameRequest(reference.request, outcome.request), "split changed the request");
        }
    }
    return 0;
}
