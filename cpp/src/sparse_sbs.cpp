// Exact sparse SBS search (docs/sparse_search.md): dense <-> sparse conversion, checks of
// sparse codes, the inverted lists and the two ways of computing |q AND d| (inverted-list
// counters per block of rows, or a forward scan of the rows' entry lists for a group of up to
// 64 queries), chosen per query by estimated cost. Results equal hamming_topk's, bit for bit.
#include "semcbir/sparse_sbs.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dispatch.hpp"
#include "popcount.hpp"
#include "semcbir/isa.hpp"
#include "semcbir/parallel.hpp"
#include "semcbir/topk.hpp"
#include "sparse_sbs_kernels.hpp"

namespace semcbir {

namespace {

constexpr int32_t kMissingDistance = std::numeric_limits<int32_t>::max();
constexpr int64_t kScanRows = 256;                 // rows per forward-scan kernel call
constexpr int kMaxLanes = 64;                      // most queries per forward-scan group
constexpr int64_t kMaxTableBytes = int64_t{64} << 20;  // weight table of one group
constexpr int64_t kMergeHeapEntries = int64_t{1} << 24;  // heaps of all workers, one chunk
constexpr int64_t kRowsPerWorker = 4 * kSparseBlockRows;  // below this a thread does not pay

// Estimated nanoseconds, measured on the 2-core workplace machine (AMD EPYC) with the forced
// methods on Corel-1K-distributed 64-block codes (bench/bench_sparse_sbs.py's synthesis,
// N = 100k, 200k and 1M, one thread): one posting of the inverted path (0.7-1.3 ns with uint16
// counters), one row of it (clear, distance, select); one row and lane of the forward scan.
// Per ISA level (IsaCost): one row of one hot column of the inverted path (AVX-512 about
// 0.045 ns, AVX2 0.05-0.1, scalar 0.24-0.31: bench/bench_sparse_sbs.py --hot-cost), and one
// entry of the forward scan, ns[lanes 16 / 32 / 64]; a group takes at most max_lanes queries,
// the cheapest per lane (AVX-512: 1.0 / 1.5 / 5.2 ns, 32 lanes of uint16 fill one register;
// AVX2: 1.3 / 9.0 / 10.8; scalar 3.2 / 3.5 / 4.9; bench/bench_sparse_sbs.py --lanes).
constexpr double kInvPosting = 1.0;
constexpr double kInvRow = 0.05;
constexpr double kScanRowLane = 0.1;

struct IsaCost {
    double ns[3];  // forward scan, per entry: 16, 32, 64 lanes
    int max_lanes;
    double hot_row;  // inverted path: one hot column, per row
    double at(int lanes) const noexcept { return ns[lanes <= 16 ? 0 : lanes <= 32 ? 1 : 2]; }
};
constexpr IsaCost kCostAvx512{{1.0, 1.5, 5.2}, 32, 0.045};
constexpr IsaCost kCostAvx2{{1.3, 9.0, 10.8}, 16, 0.07};
constexpr IsaCost kCostScalar{{3.2, 3.5, 4.9}, 64, 0.28};

// Level of a present cell from its 4 proportion bits read first-bit-first (bit t = 0 is the
// nibble's most significant bit): 1000 -> 1, 1100 -> 2, 1110 -> 3, 1111 -> 4, else 0 (not a
// thermometer code).
constexpr int8_t kLevelOfNibble[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 3, 4};
constexpr uint8_t kThermometer[4] = {0x8, 0xC, 0xE, 0xF};

inline int bit_at(const uint8_t* row, int64_t pos) noexcept {
    return (row[pos >> 3] >> (7 - (pos & 7))) & 1;
}

// The 4 bits at [pos, pos + 4), first bit most significant; pos + 3 < 8 * stride.
inline unsigned nibble_at(const uint8_t* row, int64_t pos) noexcept {
    const int64_t b = pos >> 3;
    const int sh = static_cast<int>(pos & 7);
    unsigned v = static_cast<unsigned>(row[b]) << 8;
    if (sh > 4) v |= row[b + 1];
    return (v >> (12 - sh)) & 0xFu;
}

inline void set_bit(uint8_t* row, int64_t pos) noexcept {
    row[pos >> 3] = static_cast<uint8_t>(row[pos >> 3] | (0x80u >> (pos & 7)));
}

int64_t row_popcount(const uint8_t* row, int64_t width) noexcept {
    int64_t s = 0, w = 0;
    for (; w + 8 <= width; w += 8) s += detail::popcount64(detail::load_u64(row + w));
    for (; w < width; ++w) s += detail::popcount64(row[w]);
    return s;
}

// Calls fn(local_bit) for every set bit of row in [p0, p0 + count), ascending.
template <class Fn>
inline void for_set_bits(const uint8_t* row, int64_t p0, int64_t count, Fn&& fn) {
    if (count <= 0) return;
    const int64_t p1 = p0 + count;  // exclusive
    for (int64_t b = p0 >> 3; b <= (p1 - 1) >> 3; ++b) {
        unsigned v = row[b];
        if (!v) continue;
        for (int i = 0; i < 8 && v; ++i) {
            const unsigned m = 0x80u >> i;
            if (!(v & m)) continue;
            v &= ~m;
            const int64_t pos = b * 8 + i;
            if (pos >= p0 && pos < p1) fn(pos - p0);
        }
    }
}

// Walks the present cells of one dense code: fn(cell, level) in ascending cell order.
// Returns false (stopping early) when a present cell has no thermometer code, or when the row
// has bits that no present cell explains (the popcount check).
template <class Fn>
bool walk_row(const uint8_t* row, const SparseSbsShape& s, int64_t width, Fn&& fn) {
    bool ok = true;
    int64_t bits = 0;
    for (size_t j = 0; j < s.part_cells.size() && ok; ++j) {
        const int64_t p0 = s.part_bit_offset[j], cells = s.part_cells[j];
        const int64_t prop = p0 + cells, first = s.part_first_cell[j];
        for_set_bits(row, p0, cells, [&](int64_t e) {
            if (!ok) return;
            const int level = kLevelOfNibble[nibble_at(row, prop + 4 * e)];
            if (level == 0) {
                ok = false;
                return;
            }
            bits += 1 + level;
            fn(first + e, level);
        });
    }
    return ok && bits == row_popcount(row, width);
}

template <class E>
inline uint32_t entry_at(const SparseSbsView& v, int64_t p) noexcept {
    return static_cast<const E*>(v.entries)[p];
}

inline uint32_t entry(const SparseSbsView& v, int64_t p) noexcept {
    return v.wide ? entry_at<uint32_t>(v, p) : entry_at<uint16_t>(v, p);
}

void check_width(const CodeMatrix& codes, const SparseSbsShape& shape, const char* name) {
    if (codes.width != shape.stride)
        throw std::invalid_argument(std::string(name) + " must have " +
                                    std::to_string(shape.stride) +
                                    " bytes per code (the layout's stride), got " +
                                    std::to_string(codes.width));
}

int workers_for_rows(int threads, int64_t rows, int64_t parts) {
    int64_t w = resolve_threads(threads);
    w = std::min<int64_t>(w, std::max<int64_t>(1, rows / kRowsPerWorker));
    w = std::min<int64_t>(w, std::max<int64_t>(parts, 1));
    return static_cast<int>(std::max<int64_t>(w, 1));
}

}  // namespace

SparseSbsShape make_sparse_sbs_shape(const SbsLayout& layout) {
    SparseSbsShape s;
    const int64_t m = layout.num_classes;
    int64_t bit = 0, cell = 0;
    for (int l = layout.pyramid ? 0 : layout.levels; l <= layout.levels; ++l) {
        const int64_t cells = m * (int64_t{1} << (2 * l));
        s.part_bit_offset.push_back(bit);
        s.part_cells.push_back(cells);
        s.part_first_cell.push_back(cell);
        bit += 5 * cells;
        cell += cells;
    }
    s.cells = cell;
    s.nbits = layout.nbits;
    s.stride = layout.stride;
    s.wide = s.cells > kMaxNarrowCells;
    if (bit != layout.nbits) throw std::invalid_argument("sparse SBS: inconsistent layout");
    return s;
}

int64_t sparse_sbs_count(const CodeMatrix& codes, const SparseSbsShape& shape, int64_t* counts,
                         int threads) {
    check_width(codes, shape, "codes");
    const int64_t n = codes.n;
    if (n == 0) return -1;
    const double work = static_cast<double>(n) * static_cast<double>(shape.stride);
    const int workers = static_cast<int>(std::clamp<double>(work / (4 << 20), 1.0,
                                                            resolve_threads(threads)));
    std::vector<int64_t> bad(static_cast<size_t>(std::max(workers, 1)), -1);
    parallel_chunks(n, workers, [&](int w, int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            int64_t c = 0;
            if (!walk_row(codes.data + r * codes.stride, shape, codes.width,
                          [&](int64_t, int) { ++c; })) {
                bad[static_cast<size_t>(w)] = r;
                return;
            }
            counts[r] = c;
        }
    });
    for (int64_t b : bad)
        if (b >= 0) return b;
    return -1;
}

void sparse_sbs_fill(const CodeMatrix& codes, const SparseSbsShape& shape,
                     const SparseSbsView& out, int threads) {
    check_width(codes, shape, "codes");
    const int64_t n = codes.n;
    const double work = static_cast<double>(n) * static_cast<double>(shape.stride);
    const int workers = static_cast<int>(std::clamp<double>(work / (4 << 20), 1.0,
                                                            resolve_threads(threads)));
    auto* e16 = static_cast<uint16_t*>(const_cast<void*>(out.entries));
    auto* e32 = static_cast<uint32_t*>(const_cast<void*>(out.entries));
    auto* pop = const_cast<int32_t*>(out.popcounts);
    parallel_chunks(n, workers, [&](int, int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            int64_t p = out.offsets[r];
            int64_t bits = 0;
            walk_row(codes.data + r * codes.stride, shape, codes.width,
                     [&](int64_t cell, int level) {
                         const uint32_t e = static_cast<uint32_t>(cell << 2 | (level - 1));
                         if (out.wide)
                             e32[p++] = e;
                         else
                             e16[p++] = static_cast<uint16_t>(e);
                         bits += 1 + level;
                     });
            pop[r] = static_cast<int32_t>(bits);
        }
    });
}

void check_sparse_sbs(const SparseSbsView& v, const SparseSbsShape& shape, int64_t nnz) {
    if (v.wide != shape.wide)
        throw std::invalid_argument(std::string("sparse codes: entries must be ") +
                                    (shape.wide ? "uint32" : "uint16") + " for a layout of " +
                                    std::to_string(shape.cells) + " cells");
    if (v.n < 0) throw std::invalid_argument("sparse codes: negative number of rows");
    if (v.offsets[0] != 0)
        throw std::invalid_argument("sparse codes: offsets[0] must be 0, got " +
                                    std::to_string(v.offsets[0]));
    if (v.offsets[v.n] != nnz)
        throw std::invalid_argument("sparse codes: offsets[-1] = " + std::to_string(v.offsets[v.n]) +
                                    " must equal the number of entries " + std::to_string(nnz));
    for (int64_t r = 0; r < v.n; ++r)
        if (v.offsets[r + 1] < v.offsets[r] || v.offsets[r + 1] > nnz)
            throw std::invalid_argument("sparse codes: offsets decrease or overrun at row " +
                                        std::to_string(r));
    for (int64_t r = 0; r < v.n; ++r) {
        const int64_t a = v.offsets[r], b = v.offsets[r + 1];
        int64_t prev = -1, bits = 0;
        for (int64_t p = a; p < b; ++p) {
            const uint32_t e = entry(v, p);
            const int64_t cell = e >> 2;
            if (cell <= prev || cell >= shape.cells)
                throw std::invalid_argument(
                    "sparse codes: row " + std::to_string(r) + " has cell " +
                    std::to_string(cell) + (cell >= shape.cells ? " outside the layout's " +
                                                std::to_string(shape.cells) + " cells"
                                                            : " out of ascending order"));
            prev = cell;
            bits += 2 + (e & 3);
        }
        if (bits != v.popcounts[r])
            throw std::invalid_argument("sparse codes: row " + std::to_string(r) + " popcount " +
                                        std::to_string(v.popcounts[r]) +
                                        " does not match its entries (" + std::to_string(bits) +
                                        ")");
    }
}

void sparse_sbs_decode(const SparseSbsView& v, const SparseSbsShape& shape, uint8_t* out,
                       int64_t out_stride, int threads) {
    const int64_t n = v.n;
    const double work = static_cast<double>(n) * static_cast<double>(shape.stride);
    const int workers = static_cast<int>(std::clamp<double>(work / (4 << 20), 1.0,
                                                            resolve_threads(threads)));
    parallel_chunks(n, workers, [&](int, int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            uint8_t* row = out + r * out_stride;
            std::memset(row, 0, static_cast<size_t>(shape.stride));
            size_t j = 0;
            for (int64_t p = v.offsets[r]; p < v.offsets[r + 1]; ++p) {
                const uint32_t e = entry(v, p);
                const int64_t cell = e >> 2;
                const int level = static_cast<int>(e & 3) + 1;
                while (j + 1 < shape.part_first_cell.size() && cell >= shape.part_first_cell[j + 1])
                    ++j;
                const int64_t local = cell - shape.part_first_cell[j];
                const int64_t p0 = shape.part_bit_offset[j];
                set_bit(row, p0 + local);
                const int64_t prop = p0 + shape.part_cells[j] + 4 * local;
                for (int t = 0; t < level; ++t) set_bit(row, prop + t);
            }
        }
    });
}

// ------------------------------------------------------------------------------ the index

namespace {

struct QueryCell {
    uint32_t cell;
    uint8_t w[4];  // |q AND d| contributed by this cell when d has it at level 1..4
};

struct Query {
    int32_t pop = 0;
    double postings = 0;  // inverted path: postings it reads (sum of df over its cells)
    std::vector<QueryCell> cells;
    std::vector<uint32_t> hot;     // inverted path: hot columns of its hot cells
    std::vector<uint8_t> tables;   // 16 per hot column: weight by 2-bit code (0 for code 0)
    double inverted_ns(int64_t n, double hot_row) const noexcept {
        return postings * kInvPosting +
               static_cast<double>(n) * (kInvRow + hot_row * static_cast<double>(hot.size()));
    }
};

// |q AND d| of one query for the rows of one block of the inverted lists, into dist:
// hot columns summed kMaxHotPass at a time in uint8, then the postings of its cells.
// C: uint16_t counters (16 KiB for a block: they stay in L1 beside the postings) when every
// sum fits, else uint32_t.
template <class C>
void inverted_block(const Query& q, const uint16_t* post, const uint32_t* off,
                    const uint8_t* col, int64_t rows, const int32_t* pop, C* cnt,
                    uint8_t* hot_acc, const uint8_t** cols, detail::HotSumFn hot_sum,
                    int32_t* dist) {
    const int64_t quarter = (rows + 3) / 4;
    std::memset(cnt, 0, static_cast<size_t>(rows) * sizeof(C));
    for (size_t h0 = 0; h0 < q.hot.size(); h0 += detail::kMaxHotPass) {
        const size_t hn = std::min<size_t>(detail::kMaxHotPass, q.hot.size() - h0);
        for (size_t c = 0; c < hn; ++c)
            cols[c] = col + static_cast<int64_t>(q.hot[h0 + c]) * quarter;
        hot_sum(cols, q.tables.data() + 16 * h0, static_cast<int>(hn), quarter, hot_acc);
        for (int64_t i = 0; i < rows; ++i) cnt[i] = static_cast<C>(cnt[i] + hot_acc[i]);
    }
    for (const QueryCell& qc : q.cells) {  // a hot cell's postings are its exceptions
        const uint16_t* p = post + off[qc.cell];
        const uint16_t* e = post + off[qc.cell + 1];
        // the four weights in one register, picked by shifting (no table load per posting)
        const uint32_t wt = uint32_t{qc.w[0]} | uint32_t{qc.w[1]} << 8 |
                            uint32_t{qc.w[2]} << 16 | uint32_t{qc.w[3]} << 24;
        for (; p < e; ++p) {
            const uint32_t v = *p;
            cnt[v >> 2] = static_cast<C>(cnt[v >> 2] + ((wt >> ((v & 3u) << 3)) & 0xFFu));
        }
    }
    const int32_t pq = q.pop;
    for (int64_t i = 0; i < rows; ++i) dist[i] = pq + pop[i] - 2 * static_cast<int32_t>(cnt[i]);
}

}  // namespace

// Hot cells: cells held by many rows get a 2-bit code per row and block of rows, read with
// byte shuffles, instead of postings (docs/sparse_search.md#search). The code stands for
// three of the cell's four levels (0 = absent or the fourth level); rows holding the cell at
// its least frequent level keep ordinary postings (the cell's exceptions). A cell is hot when
// df - exceptions > hot_fraction * rows: with the default 1/8 exactly where the column
// (0.25 B per row) takes less memory than the postings it replaces (2 B each). In block b of
// rows, hot column h holds quarter(b) = ceil(rows / 4) bytes at col_base[b] + h * quarter(b);
// byte j holds the codes of rows j, quarter + j, 2 quarter + j, 3 quarter + j in its bits
// 0-1, 2-3, 4-5, 6-7.
struct SparseSbsIndex::Impl {
    SparseSbsView codes;
    SparseSbsShape shape;
    int64_t nnz = 0;
    int64_t nblocks = 0;
    std::vector<uint16_t> postings;   // cold cells and exceptions, per block, by cell:
                                      // (local row << 2) | (level - 1)
    std::vector<int64_t> post_base;   // per block: its first posting
    std::vector<uint32_t> block_off;  // per block: cells + 1 offsets relative to the block's base
    std::vector<int64_t> df;          // postings of each cell (rows holding it, less a hot
                                      // cell's coded rows)
    std::vector<int32_t> hot;         // per cell: its hot column, or -1
    std::vector<uint8_t> code_of;     // per cell and level - 1: its 2-bit code (0: a posting)
    int64_t nhot = 0;
    std::vector<uint8_t> columns;     // hot columns of every block
    std::vector<int64_t> col_base;    // per block: the first byte of its hot columns

    int64_t block_rows(int64_t b) const noexcept {
        return std::min(codes.n, (b + 1) * kSparseBlockRows) - b * kSparseBlockRows;
    }
    static int64_t quarter_of(int64_t rows) noexcept { return (rows + 3) / 4; }

    void build(int threads, double hot_fraction);
    void prepare(const CodeMatrix& q, int64_t i, Query& out) const;
    void search(const CodeMatrix& queries, int64_t k, int32_t* distances, int64_t* ids,
                int threads, SparseSbsMethod method) const;
};

void SparseSbsIndex::Impl::build(int threads, double hot_fraction) {
    const int64_t n = codes.n, cells = shape.cells;
    nblocks = (n + kSparseBlockRows - 1) / kSparseBlockRows;
    const int workers = workers_for_rows(threads, n, nblocks);
    // ---- document frequencies, then the hot cells
    std::vector<std::vector<int64_t>> dfs(static_cast<size_t>(workers));
    parallel_chunks(nblocks, workers, [&](int w, int64_t b0, int64_t b1) {
        auto& my_df = dfs[static_cast<size_t>(w)];  // by (cell << 2) | (level - 1)
        my_df.assign(static_cast<size_t>(4 * cells), 0);
        const int64_t p1 = codes.offsets[std::min(n, b1 * kSparseBlockRows)];
        for (int64_t p = codes.offsets[b0 * kSparseBlockRows]; p < p1; ++p)
            ++my_df[entry(codes, p)];
    });
    std::vector<int64_t> by_level(static_cast<size_t>(4 * cells), 0);
    for (const auto& d : dfs)
        for (size_t c = 0; c < d.size(); ++c) by_level[c] += d[c];
    // ---- the hot cells, their codes, and the level left to postings
    df.assign(static_cast<size_t>(cells), 0);
    hot.assign(static_cast<size_t>(cells), -1);
    code_of.assign(static_cast<size_t>(4 * cells), 0);
    nhot = 0;
    for (int64_t c = 0; c < cells; ++c) {
        const int64_t* lv = by_level.data() + 4 * c;
        df[static_cast<size_t>(c)] = lv[0] + lv[1] + lv[2] + lv[3];
        const int64_t rare = std::min_element(lv, lv + 4) - lv;  // the first least frequent
        if (static_cast<double>(df[static_cast<size_t>(c)] - lv[rare]) <=
            hot_fraction * static_cast<double>(n))
            continue;
        df[static_cast<size_t>(c)] = lv[rare];
        hot[static_cast<size_t>(c)] = static_cast<int32_t>(nhot++);
        uint8_t code = 1;
        for (int64_t l = 0; l < 4; ++l)
            if (l != rare) code_of[static_cast<size_t>(4 * c + l)] = code++;
    }
    auto posted = [&](uint32_t e) { return code_of[e] == 0; };  // e: (cell << 2) | (level - 1)
    // ---- where each block's postings and hot columns start
    post_base.assign(static_cast<size_t>(nblocks + 1), 0);
    col_base.assign(static_cast<size_t>(nblocks + 1), 0);
    parallel_chunks(nblocks, workers, [&](int, int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t r0 = b * kSparseBlockRows, r1 = r0 + block_rows(b);
            int64_t count = 0;
            for (int64_t p = codes.offsets[r0]; p < codes.offsets[r1]; ++p)
                count += posted(entry(codes, p));
            post_base[static_cast<size_t>(b + 1)] = count;
        }
    });
    for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t count = post_base[static_cast<size_t>(b + 1)];
        if (count > int64_t{0xFFFFFFFF})
            throw std::invalid_argument("sparse codes: more than 2^32 - 1 entries in the block "
                                        "of rows starting at " +
                                        std::to_string(b * kSparseBlockRows));
        post_base[static_cast<size_t>(b + 1)] = post_base[static_cast<size_t>(b)] + count;
        col_base[static_cast<size_t>(b + 1)] =
            col_base[static_cast<size_t>(b)] + nhot * quarter_of(block_rows(b));
    }
    postings.assign(static_cast<size_t>(post_base[static_cast<size_t>(nblocks)]), 0);
    columns.assign(static_cast<size_t>(col_base[static_cast<size_t>(nblocks)]), 0);
    block_off.assign(static_cast<size_t>(nblocks * (cells + 1)), 0);
    // ---- fill them
    parallel_chunks(nblocks, workers, [&](int, int64_t b0, int64_t b1) {
        std::vector<uint32_t> cursor(static_cast<size_t>(cells));
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t r0 = b * kSparseBlockRows, r1 = r0 + block_rows(b);
            const int64_t quarter = quarter_of(r1 - r0);
            uint32_t* off = block_off.data() + b * (cells + 1);
            for (int64_t p = codes.offsets[r0]; p < codes.offsets[r1]; ++p) {
                const uint32_t e = entry(codes, p);
                if (posted(e)) ++off[(e >> 2) + 1];
            }
            for (int64_t c = 0; c < cells; ++c) off[c + 1] += off[c];
            std::copy(off, off + cells, cursor.begin());
            uint16_t* post = postings.data() + post_base[static_cast<size_t>(b)];
            uint8_t* col = columns.data() + col_base[static_cast<size_t>(b)];
            for (int64_t r = r0; r < r1; ++r) {
                const auto local = static_cast<uint32_t>(r - r0);
                const int64_t j = local % quarter;
                const int shift = static_cast<int>(2 * (local / quarter));
                for (int64_t p = codes.offsets[r]; p < codes.offsets[r + 1]; ++p) {
                    const uint32_t e = entry(codes, p);
                    if (posted(e))
                        post[cursor[e >> 2]++] = static_cast<uint16_t>(local << 2 | (e & 3));
                    else
                        col[hot[e >> 2] * quarter + j] |=
                            static_cast<uint8_t>(code_of[e] << shift);
                }
            }
        }
    });
}

void SparseSbsIndex::Impl::prepare(const CodeMatrix& q, int64_t i, Query& out) const {
    const uint8_t* row = q.data + i * q.stride;
    out.pop = static_cast<int32_t>(row_popcount(row, q.width));
    out.cells.clear();
    out.hot.clear();
    out.tables.clear();
    out.postings = 0;
    std::vector<uint32_t> found;
    for (size_t j = 0; j < shape.part_cells.size(); ++j) {
        const int64_t p0 = shape.part_bit_offset[j], cells = shape.part_cells[j];
        const int64_t first = shape.part_first_cell[j];
        for_set_bits(row, p0, cells, [&](int64_t e) { found.push_back(static_cast<uint32_t>(first + e)); });
        // proportion bits of cells whose presence bit is clear (not a canonical code, but a
        // query may be anything): bit p0 + cells + 4 e + t belongs to cell e
        for_set_bits(row, p0 + cells, 4 * cells,
                     [&](int64_t b) { found.push_back(static_cast<uint32_t>(first + b / 4)); });
    }
    std::sort(found.begin(), found.end());
    found.erase(std::unique(found.begin(), found.end()), found.end());
    size_t j = 0;
    for (uint32_t cell : found) {
        while (j + 1 < shape.part_first_cell.size() &&
               static_cast<int64_t>(cell) >= shape.part_first_cell[j + 1])
            ++j;
        const int64_t local = cell - shape.part_first_cell[j];
        const int64_t p0 = shape.part_bit_offset[j];
        const int pres = bit_at(row, p0 + local);
        const unsigned nib = nibble_at(row, p0 + shape.part_cells[j] + 4 * local);
        QueryCell qc;
        qc.cell = cell;
        for (int l = 0; l < 4; ++l)
            qc.w[l] = static_cast<uint8_t>(pres + detail::popcount64(nib & kThermometer[l]));
        out.cells.push_back(qc);
        const int32_t h = hot[cell];
        out.postings += static_cast<double>(df[cell]);
        if (h < 0) continue;
        out.hot.push_back(static_cast<uint32_t>(h));
        const size_t t = out.tables.size();
        out.tables.resize(t + 16, 0);
        for (int l = 0; l < 4; ++l) {
            const uint8_t code = code_of[4 * cell + static_cast<size_t>(l)];
            if (code) out.tables[t + code] = qc.w[l];
        }
    }
}

namespace {

detail::SparseScanFn scan_kernel() noexcept {
    switch (active_isa()) {
#if defined(SEMCBIR_HAVE_AVX512)
        case Isa::avx512: return detail::sparse_scan_avx512;
#endif
#if defined(SEMCBIR_HAVE_AVX2)
        case Isa::avx2: return detail::sparse_scan_avx2;
#endif
        default: return detail::sparse_scan_scalar;
    }
}

detail::HotSumFn hot_kernel() noexcept {
    switch (active_isa()) {
#if defined(SEMCBIR_HAVE_AVX512)
        case Isa::avx512: return detail::hot_sum_avx512;
#endif
#if defined(SEMCBIR_HAVE_AVX2)
        case Isa::avx2: return detail::hot_sum_avx2;
#endif
        default: return detail::hot_sum_scalar;
    }
}

IsaCost isa_cost() noexcept {
    switch (active_isa()) {
        case Isa::avx512: return kCostAvx512;
        case Isa::avx2: return kCostAvx2;
        default: return kCostScalar;
    }
}

int lanes_for(int64_t m) noexcept { return m <= 16 ? 16 : m <= 32 ? 32 : 64; }

struct Group {
    std::vector<int64_t> queries;  // chunk-local query indices
    int lanes = 16;
    std::vector<uint32_t> slot;    // cell -> table row (0 = no query of the group has it)
    std::vector<uint8_t> table;    // (slot * 4 + level - 1) * lanes + g
    std::vector<int32_t> pq;       // lanes popcounts (0 for unused lanes)
};

using Heap = TopK<int32_t>;

inline void select_rows(const int32_t* d, int64_t rows, int64_t first_row, Heap& h,
                        detail::FindBelowFn find_below) {
    int32_t thr = h.full() ? h.worst() : kMissingDistance;
    for (int64_t j = find_below(d, rows, thr); j < rows;
         j += 1 + find_below(d + j + 1, rows - j - 1, thr)) {
        h.push(d[j], first_row + j);
        thr = h.full() ? h.worst() : kMissingDistance;
    }
}

}  // namespace

void SparseSbsIndex::Impl::search(const CodeMatrix& queries, int64_t k, int32_t* distances,
                                  int64_t* ids, int threads, SparseSbsMethod method) const {
    check_width(queries, shape, "queries");
    check_topk_size(queries.n, k);
    const int64_t nq = queries.n, n = codes.n;
    if (nq == 0) return;
    const int64_t kk = std::min(k, n);
    std::vector<std::pair<int32_t, int64_t>> scratch;
    if (kk == 0) {
        for (int64_t q = 0; q < nq; ++q)
            write_sorted_row<int32_t, int32_t>(nullptr, nullptr, 0, k, [](int32_t d) { return d; },
                                               kMissingDistance, scratch, distances + q * k,
                                               ids + q * k);
        return;
    }
    std::vector<Query> prepared(static_cast<size_t>(nq));
    parallel_chunks(nq, std::min<int>(resolve_threads(threads), static_cast<int>(std::max<int64_t>(1, nq / 64))),
                    [&](int, int64_t a, int64_t b) {
                        for (int64_t i = a; i < b; ++i) prepare(queries, i, prepared[static_cast<size_t>(i)]);
                    });
    const int workers = workers_for_rows(threads, n, nblocks);
    const int64_t chunk = std::max<int64_t>(1, kMergeHeapEntries / (kk * workers));
    const detail::SparseScanFn kernel = scan_kernel();
    const detail::HotSumFn hot_sum = hot_kernel();
    const IsaCost scan_cost = isa_cost();
    const int64_t group_max = scan_cost.max_lanes;  // queries per forward-scan group
    const detail::FindBelowFn find_below = detail::kernels().find_below;
    const bool narrow_acc = shape.nbits <= 65535;
    const int64_t cells = shape.cells;

    for (int64_t c0 = 0; c0 < nq; c0 += chunk) {
        const int64_t cn = std::min(chunk, nq - c0);
        // ---- choose the path of each query: the m costliest (inverted) go to the scan
        std::vector<int64_t> order(static_cast<size_t>(cn));
        std::iota(order.begin(), order.end(), int64_t{0});
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
            return prepared[static_cast<size_t>(c0 + a)].inverted_ns(n, scan_cost.hot_row) >
                   prepared[static_cast<size_t>(c0 + b)].inverted_ns(n, scan_cost.hot_row);
        });
        auto inv_cost = [&](int64_t i) {
            return prepared[static_cast<size_t>(c0 + i)].inverted_ns(n, scan_cost.hot_row);
        };
        auto group_cost = [&](int64_t m) {  // m queries in one group
            const int lanes = lanes_for(m);  // m <= group_max
            return static_cast<double>(nnz) * scan_cost.at(lanes) +
                   static_cast<double>(n) * lanes * kScanRowLane;
        };
        int64_t m_best = 0;
        if (method == SparseSbsMethod::scan) {
            m_best = cn;
        } else if (method == SparseSbsMethod::automatic) {
            double rest = 0;
            for (int64_t i = 0; i < cn; ++i) rest += inv_cost(order[static_cast<size_t>(i)]);
            double best = rest, scan = 0;
            for (int64_t m = 1; m <= cn; ++m) {
                rest -= inv_cost(order[static_cast<size_t>(m - 1)]);
                const int64_t in_group = (m - 1) % group_max + 1;
                if (in_group == 1) scan += group_cost(1);
                else scan += group_cost(in_group) - group_cost(in_group - 1);
                if (scan + rest < best) {
                    best = scan + rest;
                    m_best = m;
                }
            }
        }
        std::vector<int64_t> inverted;
        std::vector<Group> groups;
        for (int64_t s = 0; s < m_best; s += group_max) {
            Group g;
            for (int64_t i = s; i < std::min(m_best, s + group_max); ++i)
                g.queries.push_back(order[static_cast<size_t>(i)]);
            std::sort(g.queries.begin(), g.queries.end());
            g.lanes = lanes_for(static_cast<int64_t>(g.queries.size()));
            g.slot.assign(static_cast<size_t>(cells), 0);
            uint32_t slots = 1;
            for (int64_t qi : g.queries)
                for (const QueryCell& qc : prepared[static_cast<size_t>(c0 + qi)].cells)
                    if (g.slot[qc.cell] == 0) g.slot[qc.cell] = slots++;
            const int64_t bytes = int64_t{slots} * 4 * g.lanes;
            if (bytes > kMaxTableBytes && method != SparseSbsMethod::scan) {
                for (int64_t qi : g.queries) inverted.push_back(qi);  // table too large
                continue;
            }
            g.table.assign(static_cast<size_t>(bytes), 0);
            g.pq.assign(static_cast<size_t>(g.lanes), 0);
            for (size_t lane = 0; lane < g.queries.size(); ++lane) {
                const Query& q = prepared[static_cast<size_t>(c0 + g.queries[lane])];
                g.pq[lane] = q.pop;
                for (const QueryCell& qc : q.cells)
                    for (int l = 0; l < 4; ++l)
                        g.table[(static_cast<size_t>(g.slot[qc.cell]) * 4 + l) * g.lanes + lane] =
                            qc.w[l];
            }
            groups.push_back(std::move(g));
        }
        for (int64_t i = m_best; i < cn; ++i) inverted.push_back(order[static_cast<size_t>(i)]);
        std::sort(inverted.begin(), inverted.end());

        // ---- scan the blocks of rows: workers split them, each with heaps for the chunk
        WorkerHeaps<int32_t> worker_heaps(workers, cn, kk);
        parallel_chunks(nblocks, workers, [&](int w, int64_t b0, int64_t b1) {
            std::vector<Heap> heaps = worker_heaps.heaps(w);
            std::vector<uint32_t> counters(narrow_acc ? 0 : static_cast<size_t>(kSparseBlockRows));
            std::vector<uint16_t> counters16(
                narrow_acc ? static_cast<size_t>(kSparseBlockRows) : 0);
            std::vector<uint8_t> hot_acc(static_cast<size_t>(kSparseBlockRows));  // 4 quarters
            std::vector<const uint8_t*> cols(static_cast<size_t>(detail::kMaxHotPass));
            std::vector<int32_t> dist(static_cast<size_t>(std::max<int64_t>(kSparseBlockRows, kMaxLanes * kScanRows)));
            for (int64_t b = b0; b < b1; ++b) {
                const int64_t r0 = b * kSparseBlockRows;
                const int64_t rows = block_rows(b);
                const uint32_t* off = block_off.data() + b * (cells + 1);
                const uint16_t* post = postings.data() + post_base[static_cast<size_t>(b)];
                const uint8_t* col = columns.data() + col_base[static_cast<size_t>(b)];
                const int32_t* pop = codes.popcounts + r0;
                for (int64_t qi : inverted) {
                    const Query& q = prepared[static_cast<size_t>(c0 + qi)];
                    if (narrow_acc)
                        inverted_block(q, post, off, col, rows, pop, counters16.data(),
                                       hot_acc.data(), cols.data(), hot_sum, dist.data());
                    else
                        inverted_block(q, post, off, col, rows, pop, counters.data(),
                                       hot_acc.data(), cols.data(), hot_sum, dist.data());
                    select_rows(dist.data(), rows, r0, heaps[static_cast<size_t>(qi)], find_below);
                }
                for (const Group& g : groups) {
                    for (int64_t s0 = 0; s0 < rows; s0 += kScanRows) {
                        const int64_t sr = std::min(kScanRows, rows - s0);
                        kernel(codes.entries, codes.wide, codes.offsets + r0 + s0, pop + s0, sr,
                               g.slot.data(), g.table.data(), g.lanes, narrow_acc, g.pq.data(),
                               dist.data(), kScanRows);
                        for (size_t lane = 0; lane < g.queries.size(); ++lane)
                            select_rows(dist.data() + lane * kScanRows, sr, r0 + s0,
                                        heaps[static_cast<size_t>(g.queries[lane])], find_below);
                    }
                }
            }
            worker_heaps.keep(w, heaps);
        });
        std::vector<int32_t> md(static_cast<size_t>(kk));
        std::vector<int64_t> mi(static_cast<size_t>(kk));
        for (int64_t q = 0; q < cn; ++q) {
            Heap merged(md.data(), mi.data(), kk);
            worker_heaps.merge_into(q, merged);
            write_sorted_row(merged.distances(), merged.ids(), merged.size(), k,
                             [](int32_t d) { return d; }, kMissingDistance, scratch,
                             distances + (c0 + q) * k, ids + (c0 + q) * k);
        }
    }
}

SparseSbsIndex::SparseSbsIndex(const SparseSbsView& codes, const SparseSbsShape& shape,
                               int64_t nnz, int threads, double hot_fraction)
    : impl_(std::make_unique<Impl>()) {
    if (!(hot_fraction >= 0.0 && hot_fraction <= 1.0))
        throw std::invalid_argument("hot_fraction must lie in [0, 1], got " +
                                    std::to_string(hot_fraction));
    check_sparse_sbs(codes, shape, nnz);
    impl_->codes = codes;
    impl_->shape = shape;
    impl_->nnz = nnz;
    impl_->build(threads, hot_fraction);
}

SparseSbsIndex::~SparseSbsIndex() = default;

int64_t SparseSbsIndex::rows() const noexcept { return impl_->codes.n; }
int64_t SparseSbsIndex::nnz() const noexcept { return impl_->nnz; }
const SparseSbsShape& SparseSbsIndex::shape() const noexcept { return impl_->shape; }

int64_t SparseSbsIndex::hot_cells() const noexcept { return impl_->nhot; }

int64_t SparseSbsIndex::inverted_bytes() const noexcept {
    return static_cast<int64_t>(impl_->postings.size() * sizeof(uint16_t) +
                                impl_->block_off.size() * sizeof(uint32_t) +
                                impl_->df.size() * sizeof(int64_t) +
                                impl_->hot.size() * sizeof(int32_t) + impl_->code_of.size() +
                                impl_->columns.size() +
                                (impl_->post_base.size() + impl_->col_base.size()) *
                                    sizeof(int64_t));
}

void SparseSbsIndex::search(const CodeMatrix& queries, int64_t k, int32_t* distances,
                            int64_t* ids, int threads, SparseSbsMethod method) const {
    impl_->search(queries, k, distances, ids, threads, method);
}

}  // namespace semcbir
