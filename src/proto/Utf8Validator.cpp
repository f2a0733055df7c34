#include "proto/Utf8Validator.h"

#include <array>
#include <cstring>

namespace wsgate::proto {
namespace {

// A DFA over byte classes (RFC 3629 §4, the UTF8-octets grammar). Each class
// groups the bytes that every state treats alike; the second byte ranges
// that the grammar narrows after E0, ED, F0 and F4 get a class each.
enum ByteClass : std::uint8_t {
    Ascii,  // 00-7F
    Cont80, // 80-8F
    Cont90, // 90-9F
    ContA0, // A0-BF
    Never,  // C0, C1, F5-FF: no valid sequence contains them
    Lead2,  // C2-DF
    LeadE0, // E0: the next byte is A0-BF (no overlongs)
    Lead3,  // E1-EC, EE-EF
    LeadED, // ED: the next byte is 80-9F (no surrogates)
    LeadF0, // F0: the next byte is 90-BF (no overlongs)
    Lead4,  // F1-F3
    LeadF4, // F4: the next byte is 80-8F (nothing past U+10FFFF)
    classCount,
};

// States are premultiplied by classCount, so a transition is one lookup.
enum State : std::uint8_t {
    Accept = 0,
    Need1 = 1 * classCount,
    Need2 = 2 * classCount,
    Need3 = 3 * classCount,
    AfterE0 = 4 * classCount,
    AfterED = 5 * classCount,
    AfterF0 = 6 * classCount,
    AfterF4 = 7 * classCount,
    Reject = 8 * classCount,
    stateEnd = 9 * classCount,
};

constexpr std::array<std::uint8_t, 256> byteClasses = [] {
    std::array<std::uint8_t, 256> classes{};
    for (std::size_t b = 0; b < 256; ++b) {
        std::uint8_t c = Never;
        if (b <= 0x7F) {
            c = Ascii;
        } else if (b <= 0x8F) {
            c = Cont80;
        } else if (b <= 0x9F) {
            c = Cont90;
        } else if (b <= 0xBF) {
            c = ContA0;
        } else if (b >= 0xC2 && b <= 0xDF) {
            c = Lead2;
        } else if (b == 0xE0) {
            c = LeadE0;
        } else if (b == 0xED) {
            c = LeadED;
        } else if (b >= 0xE1 && b <= 0xEF) {
            c = Lead3;
        } else if (b == 0xF0) {
            c = LeadF0;
        } else if (b >= 0xF1 && b <= 0xF3) {
            c = Lead4;
        } else if (b == 0xF4) {
            c = LeadF4;
        }
        classes[b] = c;
    }
    return classes;
}();

constexpr std::array<std::uint8_t, stateEnd> transitions = [] {
    std::array<std::uint8_t, stateEnd> next{};
    for (auto& n : next) {
        n = Reject;
    }
    auto set = [&next](std::size_t from, std::size_t c, std::uint8_t to) { next[from + c] = to; };
    set(Accept, Ascii, Accept);
    set(Accept, Lead2, Need1);
    set(Accept, LeadE0, AfterE0);
    set(Accept, Lead3, Need2);
    set(Accept, LeadED, AfterED);
    set(Accept, LeadF0, AfterF0);
    set(Accept, Lead4, Need3);
    set(Accept, LeadF4, AfterF4);
    for (ByteClass c : {Cont80, Cont90, ContA0}) {
        set(Need1, c, Accept);
        set(Need2, c, Need1);
        set(Need3, c, Need2);
    }
    set(AfterE0, ContA0, Need1);
    set(AfterED, Cont80, Need1);
    set(AfterED, Cont90, Need1);
    set(AfterF0, Cont90, Need2);
    set(AfterF0, ContA0, Need2);
    set(AfterF4, Cont80, Need2);
    return next;
}();

constexpr std::uint64_t highBits = 0x8080808080808080ULL;

constexpr bool isContinuation(std::uint8_t b) noexcept {
    return (b & 0xC0) == 0x80;
}

// Skips whole valid characters from a character boundary, while at least 4
// bytes remain: ASCII a word at a time, other characters with independent
// range checks, which run faster than the DFA's chain of lookups. Stops
// where it is unsure (a sequence that may be invalid, or the last 3 bytes)
// and leaves that to the DFA, which finds the offending byte.
const std::uint8_t* skipValid(const std::uint8_t* p, const std::uint8_t* end) noexcept {
    while (end - p >= 4) {
        const std::uint8_t b0 = p[0];
        if (b0 < 0x80) {
            while (end - p >= 32) {
                std::uint64_t words[4];
                std::memcpy(words, p, sizeof words);
                if (((words[0] | words[1] | words[2] | words[3]) & highBits) != 0) {
                    break;
                }
                p += 32;
            }
            while (end - p >= 8) {
                std::uint64_t word;
                std::memcpy(&word, p, sizeof word);
                if ((word & highBits) != 0) {
                    break;
                }
                p += 8;
            }
            while (p != end && *p < 0x80) {
                ++p;
            }
            continue;
        }
        const std::uint8_t b1 = p[1];
        if (b0 < 0xE0) {
            if (b0 < 0xC2 || !isContinuation(b1)) {
                break;
            }
            p += 2;
            continue;
        }
        const std::uint8_t b2 = p[2];
        if (b0 < 0xF0) {
            // RFC 3629 §4: E0 A0-BF, ED 80-9F, otherwise 80-BF.
            const std::uint8_t low = b0 == 0xE0 ? 0xA0 : 0x80;
            const std::uint8_t high = b0 == 0xED ? 0x9F : 0xBF;
            if (b1 < low || b1 > high || !isContinuation(b2)) {
                break;
            }
            p += 3;
            continue;
        }
        const std::uint8_t b3 = p[3];
        // RFC 3629 §4: F0 90-BF, F4 80-8F, F1-F3 80-BF; nothing past F4.
        const std::uint8_t low = b0 == 0xF0 ? 0x90 : 0x80;
        const std::uint8_t high = b0 == 0xF4 ? 0x8F : 0xBF;
        if (b0 > 0xF4 || b1 < low || b1 > high || !isContinuation(b2) || !isContinuation(b3)) {
            break;
        }
        p += 4;
    }
    return p;
}

} // namespace

bool Utf8Validator::write(const std::uint8_t* data, std::size_t size) noexcept {
    const std::uint8_t* p = data;
    const std::uint8_t* const end = data + size;
    std::uint8_t state = state_;
    if (state == Reject) {
        return false;
    }
    while (p != end) {
        if (state == Accept) {
            p = skipValid(p, end);
            if (p == end) {
                break;
            }
        }
        state = transitions[state + byteClasses[*p]];
        ++p;
        if (state == Reject) {
            // RFC 3629: this byte cannot start or continue a character.
            state_ = state;
            return false;
        }
    }
    state_ = state;
    return true;
}

bool isValidUtf8(const std::uint8_t* data, std::size_t size) noexcept {
    Utf8Validator validator;
    return validator.write(data, size) && validator.finish();
}

} // namespace wsgate::proto
