// The one 64-bit population count of the core, plus the word loads of the Hamming kernels.
//
// Internal linkage (anonymous namespace): every translation unit gets its own copy, compiled
// with that file's flags, so the copy in an AVX2 or AVX-512 file (built with -mpopcnt) uses
// the POPCNT instruction and the copy in a portable file uses SWAR arithmetic, and the linker
// can never hand a portable caller the POPCNT copy (an inline function with external linkage
// would be one symbol, whichever copy the linker kept).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

namespace semcbir::detail {
namespace {

/// Set bits of x: the POPCNT instruction when this file is compiled for it, SWAR otherwise.
inline int popcount64(uint64_t x) noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__POPCNT__)
    return __builtin_popcountll(x);
#elif defined(_MSC_VER) && !defined(__clang__) && defined(_M_X64) && defined(__AVX2__)
    return static_cast<int>(__popcnt64(x));
#else
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return static_cast<int>((x * 0x0101010101010101ULL) >> 56);
#endif
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

}  // namespace
}  // namespace semcbir::detail
