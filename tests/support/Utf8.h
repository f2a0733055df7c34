// UTF-8 helpers for the tests, written from RFC 3629 independently of the
// library's validator, so that the two check each other.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace wsgate::test {

/// The UTF-8 encoding of `codePoint`, which must be a scalar value.
std::string encodeUtf8(std::uint32_t codePoint);

/// True when `bytes` is well-formed UTF-8 (RFC 3629 §4): no overlongs, no
/// surrogates, nothing past U+10FFFF, no truncated sequence at the end.
bool isValidUtf8(std::string_view bytes) noexcept;

/// Builds a byte string from a list of byte values, e.g. bytes({0xED, 0xA0, 0x80}).
std::string bytes(std::initializer_list<int> values);

} // namespace wsgate::test
