// Portable 64-bit population count without the POPCNT instruction (SWAR).
#pragma once

#include <cstdint>
#include <cstring>

namespace semcbir::detail {

inline int popcount64_swar(uint64_t x) noexcept {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return static_cast<int>((x * 0x0101010101010101ULL) >> 56);
}

inline uint64_t load_u64(const uint8_t* p) noexcept {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

// XOR of the last `rem` (< 8) bytes, zero-extended into a word.
inline uint64_t tail_xor(const uint8_t* a, const uint8_t* b, int64_t rem) noexcept {
    uint64_t x = 0, y = 0;
    std::memcpy(&x, a, static_cast<size_t>(rem));
    std::memcpy(&y, b, static_cast<size_t>(rem));
    return x ^ y;
}

}  // namespace semcbir::detail
