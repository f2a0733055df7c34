#include "proto/Handshake.h"

#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <charconv>

namespace wsgate::proto {
namespace {

/// RFC 6455 §1.3: the GUID appended to the client's key before hashing.
constexpr std::string_view websocketGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// base64 of a 20-byte SHA-1 digest.
constexpr std::size_t acceptKeyLength = 28;
/// RFC 6455 §4.1: the key is a random 16-byte nonce, which base64 encodes in
/// 24 characters, the last two being padding.
constexpr std::size_t keyTextLength = 24;
constexpr std::size_t keyNonceLength = 16;

constexpr char asciiLower(char c) noexcept {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

/// ASCII case-insensitive comparison; `lower` must already be lowercase.
bool equalsLower(std::string_view text, std::string_view lower) noexcept {
    if (text.size() != lower.size()) {
        return false;
    }
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (asciiLower(text[i]) != lower[i]) {
            return false;
        }
    }
    return true;
}

constexpr bool isOws(char c) noexcept {
    return c == ' ' || c == '\t';
}

/// Strips optional whitespace (RFC 7230 §3.2.3) from both ends.
std::string_view trimOws(std::string_view text) noexcept {
    while (!text.empty() && isOws(text.front())) {
        text.remove_prefix(1);
    }
    while (!text.empty() && isOws(text.back())) {
        text.remove_suffix(1);
    }
    return text;
}

/// Calls `visit` with each element of a comma-separated list (RFC 7230 §7),
/// trimmed, skipping the empty elements the list syntax allows.
template <typename Visit>
void forEachListElement(std::string_view list, Visit&& visit) {
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        const std::string_view element = trimOws(list.substr(0, comma));
        if (!element.empty()) {
            visit(element);
        }
        if (comma == std::string_view::npos) {
            break;
        }
        list.remove_prefix(comma + 1);
    }
}

/// Whether the list holds `lower` as an element, ASCII case-insensitively.
bool listContains(std::string_view list, std::string_view lower) noexcept {
    bool found = false;
    forEachListElement(list, [&](std::string_view element) noexcept {
        found = found || equalsLower(element, lower);
    });
    return found;
}

/// RFC 7230 §3.2.6 tchar.
constexpr bool isTokenChar(char c) noexcept {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool isToken(std::string_view text) noexcept {
    return !text.empty() && std::all_of(text.begin(), text.end(), isTokenChar);
}

constexpr bool isBase64Char(char c) noexcept {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/// RFC 6455 §4.2.1 item 5: the key must decode to exactly 16 bytes. The
/// shape is checked first because mbedTLS's decoder tolerates line breaks
/// and spaces that a header value must not carry.
bool isValidKey(std::string_view key) noexcept {
    if (key.size() != keyTextLength || key.substr(keyTextLength - 2) != "==" ||
        !std::all_of(key.begin(), key.end() - 2, isBase64Char)) {
        return false;
    }
    std::array<unsigned char, keyNonceLength + 2> nonce{};
    std::size_t length = 0;
    const int rc =
        mbedtls_base64_decode(nonce.data(), nonce.size(), &length,
                              reinterpret_cast<const unsigned char*>(key.data()), key.size());
    return rc == 0 && length == keyNonceLength;
}

/// Writes the Sec-WebSocket-Accept value for `key` to `out` (RFC 6455 §4.2.2
/// item 5.4), without allocating, so that the 101 response costs one string.
void writeAcceptKey(std::string_view key, char* out) noexcept {
    std::array<unsigned char, 20> digest{};
    mbedtls_sha1_context sha1;
    mbedtls_sha1_init(&sha1);
    // mbedTLS's software SHA-1 and base64 cannot fail with these arguments;
    // the results are still checked so that a broken build shows up in tests.
    int rc = mbedtls_sha1_starts_ret(&sha1);
    rc |= mbedtls_sha1_update_ret(&sha1, reinterpret_cast<const unsigned char*>(key.data()),
                                  key.size());
    rc |= mbedtls_sha1_update_ret(
        &sha1, reinterpret_cast<const unsigned char*>(websocketGuid.data()), websocketGuid.size());
    rc |= mbedtls_sha1_finish_ret(&sha1, digest.data());
    mbedtls_sha1_free(&sha1);
    // base64 output plus the terminating NUL that mbedTLS writes.
    std::array<unsigned char, acceptKeyLength + 1> text{};
    std::size_t length = 0;
    rc |= mbedtls_base64_encode(text.data(), text.size(), &length, digest.data(), digest.size());
    assert(rc == 0 && length == acceptKeyLength);
    static_cast<void>(rc);
    std::copy_n(text.begin(), acceptKeyLength, out);
}

/// What one pass over the headers found, for validate() to judge.
struct UpgradeHeaders {
    std::size_t hostCount = 0;
    std::size_t keyCount = 0;
    std::size_t versionCount = 0;
    bool upgradeWebsocket = false;
    bool connectionUpgrade = false;
    bool versionIs13 = false;
    const std::string* host = nullptr;
    const std::string* key = nullptr;
    const std::string* origin = nullptr;       ///< The first Origin.
    const std::string* legacyOrigin = nullptr; ///< The first Sec-WebSocket-Origin.
};

/// Reads the headers of §4.2.1 in one pass, names compared
/// case-insensitively (RFC 7230 §3.2), and gathers the subprotocols and
/// extension offers of every header that carries them, in order.
UpgradeHeaders scanHeaders(HandshakeRequest& request) {
    UpgradeHeaders found;
    for (const HttpHeader& field : request.headers) {
        const std::string_view name = field.name;
        const std::string_view value = field.value;
        if (equalsLower(name, "host")) {
            found.host = &field.value;
            ++found.hostCount;
        } else if (equalsLower(name, "upgrade")) {
            found.upgradeWebsocket = found.upgradeWebsocket || listContains(value, "websocket");
        } else if (equalsLower(name, "connection")) {
            found.connectionUpgrade = found.connectionUpgrade || listContains(value, "upgrade");
        } else if (equalsLower(name, "sec-websocket-key")) {
            found.key = &field.value;
            ++found.keyCount;
        } else if (equalsLower(name, "sec-websocket-version")) {
            found.versionIs13 = value == "13";
            ++found.versionCount;
        } else if (equalsLower(name, "sec-websocket-protocol")) {
            forEachListElement(value, [&request](std::string_view token) {
                request.protocols.emplace_back(token);
            });
        } else if (equalsLower(name, "sec-websocket-extensions")) {
            forEachListElement(value, [&request](std::string_view offer) {
                request.extensions.emplace_back(offer);
            });
        } else if (equalsLower(name, "origin") && found.origin == nullptr) {
            found.origin = &field.value;
        } else if (equalsLower(name, "sec-websocket-origin") && found.legacyOrigin == nullptr) {
            found.legacyOrigin = &field.value;
        }
    }
    return found;
}

std::string_view reasonPhrase(int status) noexcept {
    switch (status) {
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

constexpr std::string_view crlf = "\r\n";

void appendHeader(std::string& out, std::string_view nameColonSpace, std::string_view value) {
    out.append(nameColonSpace);
    out.append(value);
    out.append(crlf);
}

} // namespace

std::string_view HandshakeRequest::header(std::string_view name) const noexcept {
    for (const HttpHeader& field : headers) {
        if (equalsIgnoreCase(field.name, name)) {
            return field.value;
        }
    }
    return {};
}

HandshakeParser::HandshakeParser(std::size_t maxHeaderBytes) : maxHeaderBytes_(maxHeaderBytes) {
    // One settings table for every parser; llhttp keeps a pointer to it.
    static const llhttp_settings_t settings = [] {
        llhttp_settings_t s;
        llhttp_settings_init(&s);
        s.on_url = &HandshakeParser::onUrl;
        s.on_header_field = &HandshakeParser::onHeaderField;
        s.on_header_field_complete = &HandshakeParser::onHeaderFieldComplete;
        s.on_header_value = &HandshakeParser::onHeaderValue;
        s.on_header_value_complete = &HandshakeParser::onHeaderValueComplete;
        s.on_headers_complete = &HandshakeParser::onHeadersComplete;
        return s;
    }();
    llhttp_init(&parser_, HTTP_REQUEST, &settings);
    parser_.data = this;
}

HandshakeParser::Status HandshakeParser::receive(const char* data, std::size_t size,
                                                 std::size_t& consumed) {
    if (status_ == Status::Complete) {
        consumed = 0;
        return status_;
    }
    if (status_ == Status::Failed) {
        consumed = size;
        return status_;
    }
    // Never give llhttp more than the header budget left: the outcome then
    // depends only on the first maxHeaderBytes_ bytes, however they are split.
    const std::size_t length = std::min(size, maxHeaderBytes_ - headerBytes_);
    // An empty read is no input; llhttp would compute nullptr + 0 from it.
    const llhttp_errno_t rc = length == 0 ? HPE_OK : llhttp_execute(&parser_, data, length);
    if (rc == HPE_PAUSED_UPGRADE) {
        // onHeadersComplete() stopped llhttp right after the empty line; what
        // follows is the client's first frames, not ours to consume.
        consumed = static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - data);
        if (const std::optional<Error> error = validate()) {
            return fail(*error, size, consumed);
        }
        status_ = Status::Complete;
        return status_;
    }
    if (rc != HPE_OK) {
        // llhttp's own errors are all 400; ours were recorded by the callback.
        return fail(callbackError_.value_or(Error::MalformedRequest), size, consumed);
    }
    headerBytes_ += length;
    if (headerBytes_ >= maxHeaderBytes_) {
        // The budget is spent and the empty line has not come: 431.
        return fail(Error::HeadersTooLarge, size, consumed);
    }
    consumed = size;
    return status_;
}

HandshakeParser::Status HandshakeParser::fail(Error error, std::size_t size,
                                              std::size_t& consumed) noexcept {
    error_ = error;
    status_ = Status::Failed;
    consumed = size;
    return status_;
}

int HandshakeParser::onUrl(llhttp_t* parser, const char* at, std::size_t length) noexcept {
    auto* self = static_cast<HandshakeParser*>(parser->data);
    self->request_.target.append(at, length);
    return 0;
}

int HandshakeParser::onHeaderField(llhttp_t* parser, const char* at, std::size_t length) noexcept {
    auto* self = static_cast<HandshakeParser*>(parser->data);
    if (!self->inField_) {
        self->request_.headers.emplace_back();
        self->inField_ = true;
    }
    self->request_.headers.back().name.append(at, length);
    return 0;
}

int HandshakeParser::onHeaderFieldComplete(llhttp_t* parser) noexcept {
    auto* self = static_cast<HandshakeParser*>(parser->data);
    // RFC 7230 §3.2.4: a name is a non-empty token, and whitespace before
    // the colon MUST be answered with 400. llhttp 8.1 lets both through.
    if (!self->inField_ || !isToken(self->request_.headers.back().name)) {
        self->callbackError_ = Error::MalformedRequest;
        return -1;
    }
    self->inField_ = false;
    // Counted where the name ends, a point llhttp reaches the same way for
    // every split of the input, so the 431 does not depend on chunking.
    if (++self->headerCount_ > maxHeaderCount) {
        self->callbackError_ = Error::HeadersTooLarge;
        return -1;
    }
    return 0;
}

int HandshakeParser::onHeaderValue(llhttp_t* parser, const char* at, std::size_t length) noexcept {
    auto* self = static_cast<HandshakeParser*>(parser->data);
    assert(!self->request_.headers.empty());
    self->request_.headers.back().value.append(at, length);
    return 0;
}

int HandshakeParser::onHeaderValueComplete(llhttp_t* parser) noexcept {
    auto* self = static_cast<HandshakeParser*>(parser->data);
    assert(!self->request_.headers.empty());
    // llhttp drops leading whitespace but keeps trailing whitespace and the
    // space of an obsolete line fold.
    std::string& value = self->request_.headers.back().value;
    const std::string_view trimmed = trimOws(value);
    if (trimmed.size() != value.size()) {
        const auto offset = static_cast<std::size_t>(trimmed.data() - value.data());
        value.resize(offset + trimmed.size());
        value.erase(0, offset);
    }
    return 0;
}

int HandshakeParser::onHeadersComplete(llhttp_t* /*parser*/) noexcept {
    // 2: no body, and stop with HPE_PAUSED_UPGRADE so that llhttp consumes
    // nothing past the empty line.
    return 2;
}

namespace {

bool startsWithNoCase(std::string_view text, std::string_view prefix) noexcept {
    if (text.size() < prefix.size()) {
        return false;
    }
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) {
            return false;
        }
    }
    return true;
}

// RFC 6455 §3 and §4.2.1 item 1: the target is a resource name, a path with
// an optional query. RFC 7230 §5.3.2 lets a client send the absolute form;
// then the URI's authority is the host (RFC 7230 §5.4) and its path the
// resource name. Any other form (authority, asterisk) is refused.
bool normalizeTarget(HandshakeRequest& request) {
    std::string& target = request.target;
    if (!target.empty() && target.front() == '/') {
        return true;
    }
    std::size_t schemeEnd = 0;
    for (std::string_view scheme : {"http://", "https://", "ws://", "wss://"}) {
        if (startsWithNoCase(target, scheme)) {
            schemeEnd = scheme.size();
            break;
        }
    }
    if (schemeEnd == 0) {
        return false;
    }
    std::size_t pathStart = target.find_first_of("/?", schemeEnd);
    std::string authority = target.substr(
        schemeEnd, pathStart == std::string::npos ? std::string::npos : pathStart - schemeEnd);
    if (authority.empty()) {
        return false;
    }
    std::string path = pathStart == std::string::npos ? std::string("/") : target.substr(pathStart);
    if (path.front() == '?') {
        path.insert(path.begin(), '/');
    }
    request.host = std::move(authority);
    target = std::move(path);
    return true;
}

} // namespace

std::optional<Error> HandshakeParser::validate() {
    // RFC 6455 §4.2.1 item 1: an HTTP/1.1 or higher GET request.
    if (parser_.method != HTTP_GET) {
        return Error::MethodNotGet;
    }
    if (parser_.http_major < 1 || (parser_.http_major == 1 && parser_.http_minor < 1)) {
        return Error::BadHttpVersion;
    }
    // A body would be taken for frames once llhttp is stopped; refuse it.
    if ((parser_.flags & F_TRANSFER_ENCODING) != 0 ||
        ((parser_.flags & F_CONTENT_LENGTH) != 0 && parser_.content_length > 0)) {
        return Error::RequestHasBody;
    }

    const UpgradeHeaders found = scanHeaders(request_);

    // RFC 6455 §4.2.1 item 2 and RFC 7230 §5.4: exactly one Host.
    if (found.hostCount > 1) {
        return Error::MalformedRequest;
    }
    if (found.host == nullptr || found.host->empty()) {
        return Error::MissingHost;
    }
    // RFC 6455 §4.2.1 item 3: Upgrade holds "websocket", case-insensitively.
    if (!found.upgradeWebsocket) {
        return Error::MissingUpgrade;
    }
    // RFC 6455 §4.2.1 item 4: Connection holds the "Upgrade" token.
    if (!found.connectionUpgrade) {
        return Error::MissingConnectionUpgrade;
    }
    // RFC 6455 §4.2.1 item 6 and §4.2.2: version 13 only, checked before the
    // key so that a client of another version learns which one to retry with.
    if (found.versionCount != 1 || !found.versionIs13) {
        return Error::UnsupportedVersion;
    }
    // RFC 6455 §4.2.1 item 5: one key, base64 of 16 bytes.
    if (found.keyCount != 1 || !isValidKey(*found.key)) {
        return Error::BadKey;
    }

    request_.host = *found.host;
    request_.key = *found.key;
    if (!normalizeTarget(request_)) {
        return Error::MalformedRequest;
    }
    // RFC 6455 §4.2.1 item 7; Sec-WebSocket-Origin is what clients of drafts
    // 8 to 10 sent instead.
    if (found.origin != nullptr) {
        request_.origin = *found.origin;
    } else if (found.legacyOrigin != nullptr) {
        request_.origin = *found.legacyOrigin;
    }
    return std::nullopt;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (asciiLower(a[i]) != asciiLower(b[i])) {
            return false;
        }
    }
    return true;
}

std::string acceptKey(std::string_view key) {
    std::string out(acceptKeyLength, '\0');
    writeAcceptKey(key, out.data());
    return out;
}

std::string_view chooseSubprotocol(const std::vector<std::string>& offered,
                                   const std::vector<std::string>& supported) noexcept {
    // RFC 6455 §4.2.2 item 5.4: the reply must be one of the client's
    // offers; tokens compare case-sensitively.
    for (const std::string& offer : offered) {
        if (std::find(supported.begin(), supported.end(), offer) != supported.end()) {
            return offer;
        }
    }
    return {};
}

std::string buildAcceptResponse(std::string_view key, std::string_view subprotocol,
                                std::string_view serverName, std::string_view extensions) {
    // RFC 6455 §4.2.2 item 5.
    constexpr std::string_view head = "HTTP/1.1 101 Switching Protocols\r\n"
                                      "Upgrade: websocket\r\n"
                                      "Connection: Upgrade\r\n";
    constexpr std::string_view acceptName = "Sec-WebSocket-Accept: ";
    constexpr std::string_view protocolName = "Sec-WebSocket-Protocol: ";
    constexpr std::string_view extensionsName = "Sec-WebSocket-Extensions: ";
    constexpr std::string_view serverHeaderName = "Server: ";

    std::size_t size = head.size() + acceptName.size() + acceptKeyLength + 2 * crlf.size();
    if (!subprotocol.empty()) {
        size += protocolName.size() + subprotocol.size() + crlf.size();
    }
    if (!extensions.empty()) {
        size += extensionsName.size() + extensions.size() + crlf.size();
    }
    if (!serverName.empty()) {
        size += serverHeaderName.size() + serverName.size() + crlf.size();
    }

    std::array<char, acceptKeyLength> accept{};
    writeAcceptKey(key, accept.data());

    std::string out;
    out.reserve(size);
    out.append(head);
    appendHeader(out, acceptName, std::string_view(accept.data(), accept.size()));
    if (!subprotocol.empty()) {
        appendHeader(out, protocolName, subprotocol);
    }
    if (!extensions.empty()) {
        appendHeader(out, extensionsName, extensions);
    }
    if (!serverName.empty()) {
        appendHeader(out, serverHeaderName, serverName);
    }
    out.append(crlf);
    assert(out.size() == size);
    return out;
}

std::string buildErrorResponse(Error error, std::string_view serverName) {
    // A non-handshake error here is the caller's mistake; 500 says so.
    int status = httpStatusFor(error);
    if (status == 0) {
        status = 500;
    }
    std::string body = errorCategory().message(static_cast<int>(error));
    body += '\n';

    std::array<char, 24> number{};
    const auto format = [&number](auto value) {
        const char* end = std::to_chars(number.data(), number.data() + number.size(), value).ptr;
        return std::string_view(number.data(), static_cast<std::size_t>(end - number.data()));
    };
    std::string out;
    out.reserve(256 + serverName.size());
    out.append("HTTP/1.1 ");
    out.append(format(status));
    out.append(" ");
    out.append(reasonPhrase(status));
    out.append(crlf);
    if (status == 405) {
        // RFC 7231 §6.5.5: a 405 lists the allowed methods.
        out.append("Allow: GET\r\n");
    }
    const bool upgradeRequired = status == 426;
    if (upgradeRequired) {
        // RFC 6455 §4.2.2 item 4: name the version we speak. RFC 7230 §6.7:
        // a 426 carries Upgrade, and Upgrade needs "upgrade" in Connection.
        out.append("Upgrade: websocket\r\n"
                   "Sec-WebSocket-Version: 13\r\n");
    }
    out.append("Content-Type: text/plain\r\n");
    appendHeader(out, "Content-Length: ", format(body.size()));
    out.append(upgradeRequired ? "Connection: Upgrade, close\r\n" : "Connection: close\r\n");
    if (!serverName.empty()) {
        appendHeader(out, "Server: ", serverName);
    }
    out.append(crlf);
    out.append(body);
    return out;
}

} // namespace wsgate::proto
