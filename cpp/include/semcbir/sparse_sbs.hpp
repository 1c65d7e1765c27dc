// Exact sparse search of SBS codes (docs/sparse_search.md): the same (distances, ids) as
// hamming_topk on the dense codes, ties included, from the present (block, class) cells only.
//
// Representation of one code (SPEC.md section 1): the sorted list of its present cells with
// their proportion level, and its popcount. Entry = (cell << 2) | (level - 1), cell = the
// global (block, class) index over every encoded level (b * M + c, levels of a pyramid one
// after the other). Entries are uint16 when the layout has at most 16384 cells (every
// single-level layout of 151 classes up to 64 blocks), else uint32. For two codes,
//   d(a, b) = |a| + |b| - 2 |a AND b|,  |a AND b| = sum over shared cells of 1 + min(la, lb).
// A query is not converted: its raw bits give, per cell, the four weights
// w[l] = presence(q) + popcount(nibble(q) & thermometer(l)), so any query bit pattern is
// searched exactly (padding and stray bits included, through |q|).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "semcbir/hamming.hpp"
#include "semcbir/sbs.hpp"

namespace semcbir {

/// Cells of a layout, and where their bits lie: one part per encoded level.
struct SparseSbsShape {
    std::vector<int64_t> part_bit_offset;  ///< first bit of each level's string
    std::vector<int64_t> part_cells;       ///< M * 4^l cells of each level
    std::vector<int64_t> part_first_cell;  ///< global index of each level's first cell
    int64_t cells = 0;                     ///< total cells
    int64_t nbits = 0;
    int64_t stride = 0;
    bool wide = false;  ///< entries are uint32 (cells > kMaxNarrowCells), else uint16
};

/// Most cells whose entries fit in 16 bits (14-bit cell, 2-bit level).
constexpr int64_t kMaxNarrowCells = int64_t{1} << 14;
/// Rows per block of the inverted lists (13-bit local row + 2-bit level in a uint16 posting;
/// the 32-bit counters of one block take 32 KiB, an L1 cache).
constexpr int64_t kSparseBlockRows = int64_t{1} << 13;

SparseSbsShape make_sparse_sbs_shape(const SbsLayout& layout);

/// Sparse codes, CSR: row i holds entries[offsets[i], offsets[i + 1]) (uint16 or uint32 as
/// shape.wide says), popcounts[i] = sum of (1 + level) over them. Not owned.
struct SparseSbsView {
    const int64_t* offsets = nullptr;
    const void* entries = nullptr;
    const int32_t* popcounts = nullptr;
    int64_t n = 0;
    bool wide = false;
};

/// Pass 1 of dense -> sparse: counts[i] = present cells of row i. Returns the first row that
/// is not a canonical SBS code (a presence bit without a thermometer code of level 1..4, or any
/// other bit set), or -1. `codes.width` must equal shape.stride.
int64_t sparse_sbs_count(const CodeMatrix& codes, const SparseSbsShape& shape, int64_t* counts,
                         int threads);

/// Pass 2: fills `out` (offsets from pass 1, entries and popcounts allocated by the caller).
void sparse_sbs_fill(const CodeMatrix& codes, const SparseSbsShape& shape, const SparseSbsView& out,
                     int threads);

/// Sparse -> dense: rows of shape.stride bytes, out_stride apart (fully overwritten).
void sparse_sbs_decode(const SparseSbsView& codes, const SparseSbsShape& shape, uint8_t* out,
                       int64_t out_stride, int threads);

/// Throws std::invalid_argument, naming the row, unless `codes` is well formed: offsets start
/// at 0 and never decrease, cells strictly increase in each row and lie below shape.cells,
/// popcounts match.
void check_sparse_sbs(const SparseSbsView& codes, const SparseSbsShape& shape, int64_t nnz);

/// How a search computes |q AND d|: per query by cost (automatic), or forced (tests).
enum class SparseSbsMethod : int { automatic = 0, inverted = 1, scan = 2 };

/// A cell is hot (a 2-bit code per row instead of postings) when the rows holding it, less
/// those at its least frequent level (which keep postings), exceed this fraction of the rows:
/// by default exactly where the column (0.25 B per row) takes less memory than 2-byte postings.
constexpr double kDefaultHotFraction = 0.125;

/// Immutable search structure over sparse codes (which it does not own and which must
/// outlive it): the codes' forward lists plus, in blocks of kSparseBlockRows rows, inverted
/// lists and 2-bit code columns of the hot cells (see kDefaultHotFraction). Concurrent
/// searches are safe.
class SparseSbsIndex {
public:
    /// Checks the codes (check_sparse_sbs) and builds the inverted lists on up to `threads`.
    /// hot_fraction in [0, 1] (std::invalid_argument otherwise).
    SparseSbsIndex(const SparseSbsView& codes, const SparseSbsShape& shape, int64_t nnz,
                   int threads, double hot_fraction = kDefaultHotFraction);
    ~SparseSbsIndex();
    SparseSbsIndex(const SparseSbsIndex&) = delete;
    SparseSbsIndex& operator=(const SparseSbsIndex&) = delete;

    int64_t rows() const noexcept;
    int64_t nnz() const noexcept;
    /// Bytes of the inverted lists, hot columns and their tables (the forward lists are the
    /// caller's).
    int64_t inverted_bytes() const noexcept;
    /// Cells stored as 2-bit code columns.
    int64_t hot_cells() const noexcept;
    const SparseSbsShape& shape() const noexcept;

    /// Exactly hamming_topk(queries, dense(codes), k): ascending, ties by smaller row, k > n
    /// padded with (INT32_MAX, -1). queries.width must equal shape.stride.
    void search(const CodeMatrix& queries, int64_t k, int32_t* distances, int64_t* ids,
                int threads, SparseSbsMethod method = SparseSbsMethod::automatic) const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace semcbir
