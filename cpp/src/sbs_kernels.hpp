// Internal to the SBS encoder: the pieces shared by its scalar and per-ISA row counters.
// Everything here has internal linkage (static / anonymous namespace), so that a copy
// compiled with AVX-512 flags can never be picked by the linker for the portable code.
#pragma once

#include <cstdint>

namespace semcbir::detail {

/// Plain view of one level's counters (no std:: containers cross ISA boundaries).
struct CellCounter {
    int64_t* counts;   // blocks x M (64-bit: a block may hold more than 2^31 pixels)
    int64_t* totals;   // blocks
    int64_t* touched;  // cells that became non-zero
    int64_t ntouched;
    int64_t m;
};

/// Inputs of a uint8 row counter: `lut[v]` is the class of label v or -1 (void), block
/// column bx spans the columns [col_bounds[bx], col_bounds[bx + 1]), `col_block[x]` is the
/// block column of x (only for maps up to kColumnTableMax columns, else null: a (1, 2^31)
/// map would need 8 GB of table), `col_starts` has bit x set where a block column starts.
struct U8Rows {
    const uint8_t* data;
    int64_t height, width;
    int g;
    const int16_t* lut;
    const int64_t* col_bounds;   // g + 1 entries, col_bounds[g] == width
    const int32_t* col_block;    // width entries, or null
    const uint64_t* col_starts;  // (width >> 6) + 2 words, zero padded
};

/// Widest map that gets a column -> block column table (256 KiB).
constexpr int64_t kColumnTableMax = int64_t{1} << 16;

/// The block column of a row's runs, advanced as they move right (runs never cross a block
/// column start: those are run starts too).
struct ColumnCursor {
    int64_t bx;
    int64_t next;  // col_bounds[bx + 1]
};

inline ColumnCursor first_column(const U8Rows& in) noexcept { return {0, in.col_bounds[1]}; }

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
    cc.counts[idx] += len;
    cc.totals[b] += len;
}

// A run of equal labels [start, end) of one row, inside one block column; runs come left to
// right. Table: the block column from col_block (moderate widths); else `col` follows the runs.
template <bool Table>
inline void add_run(const U8Rows& in, CellCounter& cc, const uint8_t* row, int64_t block_row,
                    ColumnCursor& col, int64_t start, int64_t end) noexcept {
    int64_t bx;
    if constexpr (Table) {
        bx = in.col_block[start];
    } else {
        while (start >= col.next) col.next = in.col_bounds[++col.bx + 1];  // empty ones too
        bx = col.bx;
    }
    const int16_t c = in.lut[row[start]];
    if (c >= 0) add_cell(cc, block_row + bx, c, end - start);
}

// 64 bits of `bits` starting at bit x.
inline uint64_t bits_at(const uint64_t* bits, int64_t x) noexcept {
    const int64_t word = x >> 6, shift = x & 63;
    const uint64_t lo = bits[word] >> shift;
    return shift ? lo | (bits[word + 1] << (64 - shift)) : lo;
}

inline int64_t bound(int64_t k, int64_t size, int64_t g) noexcept { return k * size / g; }

// The loop every uint8 row counter shares: rows in order, block row by block row.
// `scan(row, run_starts_at)` calls run_starts_at(x) for each x in 1..width-1, left to right,
// where a new run starts (the label changes, or a block column starts); the runs are counted.
template <bool Table, class RowScan>
inline void count_rows_as(const U8Rows& in, CellCounter& cc, RowScan& scan) noexcept {
    for (int by = 0; by < in.g; ++by) {
        const int64_t block_row = int64_t{by} * in.g;
        for (int64_t y = bound(by, in.height, in.g); y < bound(by + 1, in.height, in.g); ++y) {
            const uint8_t* row = in.data + y * in.width;
            int64_t start = 0;
            ColumnCursor col = first_column(in);
            auto run_starts_at = [&](int64_t x) noexcept {
                add_run<Table>(in, cc, row, block_row, col, start, x);
                start = x;
            };
            scan(row, run_starts_at);
            add_run<Table>(in, cc, row, block_row, col, start, in.width);
        }
    }
}

// count_rows_as with the block column of a run from the column table when there is one.
template <class RowScan>
inline void count_rows_with(const U8Rows& in, CellCounter& cc, RowScan scan) noexcept {
    if (in.col_block != nullptr)
        count_rows_as<true>(in, cc, scan);
    else
        count_rows_as<false>(in, cc, scan);
}

}  // namespace
}  // namespace semcbir::detail
