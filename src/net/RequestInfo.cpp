#include "net/RequestInfo.h"

#include <array>
#include <cassert>
#include <cstdint>
#include <cstring>

namespace wsgate::detail {
namespace {

/// In place of a header's index: "this value is no header's; it follows the
/// headers".
constexpr std::uint8_t notAHeader = 0xFF;
/// In place of a header's index: "this value is empty and stored nowhere".
/// Most clients other than browsers send no Origin.
constexpr std::uint8_t emptyValue = 0xFE;
static_assert(proto::maxHeaderCount < emptyValue, "a header's index fits in a byte");

struct KnownHeader {
    std::string_view name;
    std::string_view value;
};

/// Headers stored whole as one code byte, firstPairCode + index. Their
/// spelling is the one RFC 6455 §4.1 gives, which clients copy.
constexpr std::array<KnownHeader, 3> knownPairs{{
    {"Upgrade", "websocket"},
    {"Connection", "Upgrade"},
    {"Sec-WebSocket-Version", "13"},
}};

/// Names stored as one code byte, firstNameCode + index: what browsers,
/// WebSocket clients and reverse proxies put in an upgrade request, spelled
/// as they send it. The order is part of the stored form but nothing outside
/// this process reads it, so it may change freely between builds.
constexpr std::array<std::string_view, 28> knownNames{
    "Host",
    "Upgrade",
    "Connection",
    "Origin",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Origin",
    "User-Agent",
    "Cache-Control",
    "Pragma",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Cookie",
    "Authorization",
    "Sec-Fetch-Dest",
    "Sec-Fetch-Mode",
    "Sec-Fetch-Site",
    "Sec-GPC",
    "DNT",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Real-IP",
    "Forwarded",
    "Via",
};

/// "Stored as text", while assign() sorts the headers. No code is 0: that is
/// the NUL an empty name starts with.
constexpr std::uint8_t literal = 0;
constexpr std::uint8_t firstPairCode = 0x01;
constexpr auto firstNameCode = static_cast<std::uint8_t>(firstPairCode + knownPairs.size());
constexpr auto endOfCodes = static_cast<std::uint8_t>(firstNameCode + knownNames.size());
// Tokens start at '!' (0x21); control bytes below the space are never one.
static_assert(endOfCodes <= 0x20, "every code is a control byte");

/// The code `header` is stored under, or `literal`.
std::uint8_t codeOf(const proto::HttpHeader& header) noexcept {
    for (std::size_t i = 0; i < knownPairs.size(); ++i) {
        if (header.name == knownPairs[i].name && header.value == knownPairs[i].value) {
            return static_cast<std::uint8_t>(firstPairCode + i);
        }
    }
    for (std::size_t i = 0; i < knownNames.size(); ++i) {
        if (header.name == knownNames[i]) {
            return static_cast<std::uint8_t>(firstNameCode + i);
        }
    }
    return literal;
}

/// One stored header, decoded, and where the next one starts.
struct StoredHeader {
    std::string_view name;
    std::string_view value;
    const char* next;
};

StoredHeader readHeader(const char* p) noexcept {
    const auto code = static_cast<std::uint8_t>(*p);
    if (code >= firstPairCode && code < firstNameCode) {
        const KnownHeader& pair = knownPairs[code - firstPairCode];
        return {pair.name, pair.value, p + 1};
    }
    std::string_view name;
    if (code >= firstNameCode && code < endOfCodes) {
        name = knownNames[code - firstNameCode];
        ++p;
    } else {
        name = p;
        p += name.size() + 1;
    }
    const std::string_view value(p);
    return {name, value, p + value.size() + 1};
}

/// Past the NUL-terminated string at `p`.
const char* skipString(const char* p) noexcept {
    return p + std::strlen(p) + 1;
}

} // namespace

void RequestInfo::assign(const proto::HandshakeRequest& request, std::string_view subprotocol,
                         bool secure) {
    const auto& headers = request.headers;
    assert(headers.size() <= proto::maxHeaderCount);
    auto indexOf = [&headers](std::string_view value) {
        if (value.empty()) {
            return emptyValue;
        }
        for (std::size_t i = 0; i < headers.size(); ++i) {
            if (headers[i].value == value) {
                return static_cast<std::uint8_t>(i);
            }
        }
        return notAHeader;
    };
    const std::uint8_t host = indexOf(request.host);
    const std::uint8_t origin = indexOf(request.origin);

    std::array<std::uint8_t, proto::maxHeaderCount> codes{};
    std::size_t size = fieldsAt + request.target.size() + subprotocol.size() + 2;
    for (std::size_t i = 0; i < headers.size(); ++i) {
        const proto::HttpHeader& header = headers[i];
        // The parser admits only token names, which never start with a code.
        assert(header.name.empty() || static_cast<std::uint8_t>(header.name[0]) >= endOfCodes);
        codes[i] = codeOf(header);
        if (codes[i] == literal) {
            size += header.name.size() + header.value.size() + 2;
        } else if (codes[i] >= firstNameCode) {
            size += 1 + header.value.size() + 1;
        } else {
            size += 1;
        }
    }
    size += host == notAHeader ? request.host.size() + 1 : 0;
    size += origin == notAHeader ? request.origin.size() + 1 : 0;
    data_ = std::make_unique_for_overwrite<char[]>(size);
    char* out = data_.get();
    out[countAt] = static_cast<char>(headers.size());
    out[hostAt] = static_cast<char>(host);
    out[originAt] = static_cast<char>(origin);
    out[secureAt] = secure ? 1 : 0;
    out += fieldsAt;
    auto put = [&out](std::string_view part) {
        // An empty view may have no data pointer, which memcpy must not get.
        if (!part.empty()) {
            std::memcpy(out, part.data(), part.size());
            out += part.size();
        }
        *out++ = '\0';
    };
    put(request.target);
    put(subprotocol);
    for (std::size_t i = 0; i < headers.size(); ++i) {
        if (codes[i] == literal) {
            put(headers[i].name);
            put(headers[i].value);
            continue;
        }
        *out++ = static_cast<char>(codes[i]);
        if (codes[i] >= firstNameCode) {
            put(headers[i].value);
        }
    }
    if (host == notAHeader) {
        put(request.host);
    }
    if (origin == notAHeader) {
        put(request.origin);
    }
    assert(out == data_.get() + size);
}

std::string_view RequestInfo::target() const noexcept {
    return data_ ? std::string_view(data_.get() + fieldsAt) : std::string_view();
}

std::string_view RequestInfo::subprotocol() const noexcept {
    return data_ ? std::string_view(skipString(data_.get() + fieldsAt)) : std::string_view();
}

const char* RequestInfo::firstHeader() const noexcept {
    return skipString(skipString(data_.get() + fieldsAt));
}

const char* RequestInfo::extras() const noexcept {
    const char* p = firstHeader();
    for (std::size_t i = headerCount(); i > 0; --i) {
        p = readHeader(p).next;
    }
    return p;
}

std::string_view RequestInfo::headerOrExtra(std::size_t at, std::size_t extra) const noexcept {
    if (!data_) {
        return {};
    }
    const auto index = static_cast<std::uint8_t>(data_[at]);
    if (index == emptyValue) {
        return {};
    }
    if (index == notAHeader) {
        const char* p = extras();
        for (; extra > 0; --extra) {
            p = skipString(p);
        }
        return p;
    }
    const char* p = firstHeader();
    for (std::size_t i = index; i > 0; --i) {
        p = readHeader(p).next;
    }
    return readHeader(p).value;
}

std::string_view RequestInfo::host() const noexcept {
    return headerOrExtra(hostAt, 0);
}

std::string_view RequestInfo::origin() const noexcept {
    // The host, when it is not a header's value, is the first extra.
    const bool hostIsExtra = data_ && static_cast<std::uint8_t>(data_[hostAt]) == notAHeader;
    return headerOrExtra(originAt, hostIsExtra ? 1 : 0);
}

template <class Visit>
void RequestInfo::forEachHeader(Visit visit) const {
    if (!data_) {
        return;
    }
    const char* p = firstHeader();
    for (std::size_t i = headerCount(); i > 0; --i) {
        const StoredHeader header = readHeader(p);
        if (!visit(header.name, header.value)) {
            return;
        }
        p = header.next;
    }
}

std::string_view RequestInfo::header(std::string_view name) const noexcept {
    std::string_view found;
    forEachHeader([&](std::string_view key, std::string_view value) {
        if (!proto::equalsIgnoreCase(key, name)) {
            return true;
        }
        found = value;
        return false;
    });
    return found;
}

WebSocket::HeaderList RequestInfo::headerList() const {
    WebSocket::HeaderList list;
    forEachHeader([&list](std::string_view name, std::string_view value) {
        list.emplace_back(name, value);
        return true;
    });
    return list;
}

std::size_t RequestInfo::storedBytes() const noexcept {
    if (!data_) {
        return 0;
    }
    const char* p = extras();
    if (static_cast<std::uint8_t>(data_[hostAt]) == notAHeader) {
        p = skipString(p);
    }
    if (static_cast<std::uint8_t>(data_[originAt]) == notAHeader) {
        p = skipString(p);
    }
    return static_cast<std::size_t>(p - data_.get());
}

} // namespace wsgate::detail
