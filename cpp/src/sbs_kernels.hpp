// Internal to the SBS encoder: the pieces shared by its scalar and per-ISA row counters.
// Everything here has internal linkage (static / anonymous namespace), so that a copy
// compiled with AVX-512 flags can never be picked by the linker for the portable code.
#pragma once

#include <cstdint>

namespace semcbir::detail {

/// Plain view of one level's counters (no std:: containers cross ISA boundaries).
struct CellCounter {
    int32_t* counts;   // blocks x M
    int64_t* totals;   // blocks
    int64_t* touched;  // cells that became non-zero
    int64_t ntouched;
    int64_t m;
};

/// Inputs of a uint8 row counter: `lut[v]` is the class of label v or -1 (void),
/// `col_block[x]` the block column of x, `col_starts` bit x set where a block column starts.
struct U8Rows {
    const uint8_t* data;
    int64_t height, width;
    int g;
    const int16_t* lut;
    const int32_t* col_block;
    const uint64_t* col_starts;  // (width >> 6) + 2 words, zero padded
};

using CountRowsU8Fn = void (*)(const U8Rows& in, CellCounter& cc) noexcept;

#if defined(SEMCBIR_HAVE_AVX2)
void count_rows_u8_avx2(const U8Rows& in, CellCounter& cc) noexcept;
#endif
#if defined(SEMCBIR_HAVE_AVX512)
void count_rows_u8_avx512(const U8Rows& in, CellCounter& cc) noexcept;
#endif

namespace {

inline void add_cell(CellCounter& cc, int64_t b, int64_t c, int64_t len) noexcept {
    const int64_t idx = b * cc.m + c;
    if (cc.counts[idx] == 0) cc.touched[cc.ntouched++] = idx;
    cc.counts[idx] += static_cast<int32_t>(len);
    cc.totals[b] += len;
}

// A run of equal labels [start, end) of one row, inside one block column.
inline void add_run(const U8Rows& in, CellCounter& cc, const uint8_t* row, int64_t block_row,
                    int64_t start, int64_t end) noexcept {
    const int16_t c = in.lut[row[start]];
    if (c >= 0) add_cell(cc, block_row + in.col_block[start], c, end - start);
}

// 64 bits of `bits` starting at bit x.
inline uint64_t bits_at(const uint64_t* bits, int64_t x) noexcept {
    const int64_t word = x >> 6, shift = x & 63;
    const uint64_t lo = bits[word] >> shift;
    return shift ? lo | (bits[word + 1] << (64 - shift)) : lo;
}

inline int64_t bound(int64_t k, int64_t size, int64_t g) noexcept { return k * size / g; }

}  // namespace
}  // namespace semcbir::detail
