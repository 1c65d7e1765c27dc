// SBoVP phrase building (exact k-NN inside semantic regions, pair accumulation) and exact
// sparse L2 top-k through an inverted index over the database.
#include "semcbir/phrase.hpp"
#include "semcbir/topk.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>

#include "semcbir/isa.hpp"
#include "semcbir/parallel.hpp"

#include "phrase_kernels.hpp"

#if defined(__GNUC__) || defined(__clang__)
#define SEMCBIR_PREFETCH(p) __builtin_prefetch(p)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#define SEMCBIR_PREFETCH(p) _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0)
#else
#define SEMCBIR_PREFETCH(p) ((void)0)
#endif
#if defined(__GNUC__) || defined(__clang__)
#define SEMCBIR_PREFETCH_L2(p) __builtin_prefetch(p, 0, 2)
#else
#define SEMCBIR_PREFETCH_L2(p) SEMCBIR_PREFETCH(p)
#endif

namespace semcbir {

namespace {

// ---------------------------------------------------------------------------------------------
// CSR validation (validate_csr, or row by row while the one-shot search streams the database)
// ---------------------------------------------------------------------------------------------

// Shape, indptr (all of it: it bounds every read of the rows) and the array pointers.
void check_csr_shape(const CsrView& m, const std::string& who) {
    if (m.rows < 0 || m.cols < 0) throw std::invalid_argument(who + ": negative shape");
    if (!m.indptr) throw std::invalid_argument(who + ": missing indptr");
    if (m.indptr[0] != 0)
        throw std::invalid_argument(who + ": indptr[0] must be 0, got " + std::to_string(m.indptr[0]));
    for (int64_t r = 0; r < m.rows; ++r)
        if (m.indptr[r + 1] < m.indptr[r])
            throw std::invalid_argument(who + ": indptr must be non-decreasing (row " +
                                        std::to_string(r) + ")");
    if (m.indptr[m.rows] > 0 && (!m.indices || !m.data))
        throw std::invalid_argument(who + ": missing indices or data");
}

// Fast branch-free check of row r (after check_csr_shape) with 64- and 32-bit adds, shifts and
// ors only, a loop the compiler vectorises. Sign bit of `bad`: a column outside [0, cols)
// (c < 0, or c - cols does not wrap) or not above its predecessor (the difference is exact
// when both are in range; otherwise the range test already failed); bit 31 of `bad_exp`: an
// all-ones float exponent (inf or NaN).
inline bool csr_row_ok(const CsrView& m, int64_t r) noexcept {
    const int64_t b = m.indptr[r], e = m.indptr[r + 1];
    if (b == e) return true;
    const uint64_t cols = static_cast<uint64_t>(m.cols);
    const int64_t* idx = m.indices;
    const float* data = m.data;
    const uint64_t c0 = static_cast<uint64_t>(idx[b]);
    uint64_t bad = c0 | ~(c0 - cols);
    uint32_t bad_exp = 0;
    for (int64_t t = b + 1; t < e; ++t) {
        const uint64_t c = static_cast<uint64_t>(idx[t]);
        bad |= c | ~(c - cols) | (c - static_cast<uint64_t>(idx[t - 1]) - 1u);
    }
    for (int64_t t = b; t < e; ++t) {
        uint32_t bits;
        std::memcpy(&bits, data + t, sizeof bits);
        bad_exp |= (bits & 0x7F800000u) + 0x00800000u;
    }
    return !(bad >> 63) && !(bad_exp >> 31);
}

// The first error of a row that failed csr_row_ok.
[[noreturn]] void throw_row_error(const CsrView& m, int64_t r, const std::string& who) {
    const int64_t b = m.indptr[r], e = m.indptr[r + 1];
    for (int64_t t = b; t < e; ++t) {
        const int64_t c = m.indices[t];
        if (c < 0 || c >= m.cols)
            throw std::invalid_argument(who + ": column index " + std::to_string(c) + " in row " +
                                        std::to_string(r) + " is outside [0, " +
                                        std::to_string(m.cols) + ")");
        if (t > b && c <= m.indices[t - 1])
            throw std::invalid_argument(
                who + ": column indices must be strictly increasing within each row (row " +
                std::to_string(r) + "); sort them and sum duplicates first");
        if (!std::isfinite(m.data[t]))
            throw std::invalid_argument(who + ": non-finite value in row " + std::to_string(r));
    }
    throw std::logic_error(who + ": row " + std::to_string(r) + " failed the fast check only");
}

// ---------------------------------------------------------------------------------------------
// Phrase building
// ---------------------------------------------------------------------------------------------

struct Neighbour {
    double d2;
    int64_t idx;  // keypoint index in the image
};

inline bool closer(double da, int64_t ia, double db, int64_t ib) noexcept {
    return da < db || (da == db && ia < ib);
}

// Reused per worker: region members sorted by x, and the pairs of the current image.
struct PhraseWorkspace {
    std::vector<int64_t> order;     // keypoints of the image with class >= 0, by (class, index)
    std::vector<int64_t> by_x;      // one region's keypoints sorted by (x, index)
    std::vector<double> xs, ys;     // coordinates in by_x order
    std::vector<int64_t> pairs;     // linear indices i * L + j of every pair of every phrase
};

// The kk nearest members of a region to member `pos` (positions in by_x order), by
// (squared distance, keypoint index). Sweeps outwards in x and stops when dx^2 alone exceeds
// the current k-th distance. `best` gets kk entries, closest first.
void region_knn(const PhraseWorkspace& ws, int64_t m, int64_t pos, int kk,
                Neighbour* best) noexcept {
    const double x0 = ws.xs[static_cast<size_t>(pos)];
    const double y0 = ws.ys[static_cast<size_t>(pos)];
    int have = 0;
    auto offer = [&](int64_t q) noexcept {
        const double dx = ws.xs[static_cast<size_t>(q)] - x0;
        const double dy = ws.ys[static_cast<size_t>(q)] - y0;
        const double d2 = dx * dx + dy * dy;
        const int64_t idx = ws.by_x[static_cast<size_t>(q)];
        if (have == kk && !closer(d2, idx, best[kk - 1].d2, best[kk - 1].idx)) return;
        int i = have < kk ? have++ : kk - 1;
        while (i > 0 && closer(d2, idx, best[i - 1].d2, best[i - 1].idx)) {
            best[i] = best[i - 1];
            --i;
        }
        best[i] = Neighbour{d2, idx};
    };
    int64_t lo = pos - 1, hi = pos + 1;
    bool lo_open = lo >= 0, hi_open = hi < m;
    while (lo_open || hi_open) {
        if (lo_open) {
            const double dx = x0 - ws.xs[static_cast<size_t>(lo)];
            if (have == kk && dx * dx > best[kk - 1].d2) {
                lo_open = false;
            } else {
                offer(lo);
                lo_open = --lo >= 0;
            }
        }
        if (hi_open) {
            const double dx = ws.xs[static_cast<size_t>(hi)] - x0;
            if (have == kk && dx * dx > best[kk - 1].d2) {
                hi_open = false;
            } else {
                offer(hi);
                hi_open = ++hi < m;
            }
        }
    }
}

// Pairs of all phrases of one image into ws.pairs (unsorted).
void image_pairs(const KeypointSet& img, int64_t vocab, int phrase_len, PhraseWorkspace& ws) {
    ws.pairs.clear();
    ws.order.clear();
    for (int64_t p = 0; p < img.n; ++p)
        if (img.classes[p] >= 0) ws.order.push_back(p);
    std::stable_sort(ws.order.begin(), ws.order.end(), [&](int64_t a, int64_t b) {
        return img.classes[a] < img.classes[b];
    });
    Neighbour best[kMaxPhraseLength];
    int32_t words[kMaxPhraseLength];
    const int64_t total = static_cast<int64_t>(ws.order.size());
    for (int64_t start = 0; start < total;) {
        const int32_t cls = img.classes[ws.order[static_cast<size_t>(start)]];
        int64_t end = start + 1;
        while (end < total && img.classes[ws.order[static_cast<size_t>(end)]] == cls) ++end;
        const int64_t m = end - start;
        if (m >= 2) {
            ws.by_x.assign(ws.order.begin() + start, ws.order.begin() + end);
            std::sort(ws.by_x.begin(), ws.by_x.end(), [&](int64_t a, int64_t b) {
                const float xa = img.xy[2 * a], xb = img.xy[2 * b];
                return xa < xb || (xa == xb && a < b);
            });
            ws.xs.resize(static_cast<size_t>(m));
            ws.ys.resize(static_cast<size_t>(m));
            for (int64_t q = 0; q < m; ++q) {
                const int64_t p = ws.by_x[static_cast<size_t>(q)];
                ws.xs[static_cast<size_t>(q)] = static_cast<double>(img.xy[2 * p]);
                ws.ys[static_cast<size_t>(q)] = static_cast<double>(img.xy[2 * p + 1]);
            }
            const int kk = static_cast<int>(std::min<int64_t>(phrase_len - 1, m - 1));
            for (int64_t q = 0; q < m; ++q) {
                region_knn(ws, m, q, kk, best);
                words[0] = img.words[ws.by_x[static_cast<size_t>(q)]];
                for (int t = 0; t < kk; ++t) words[t + 1] = img.words[best[t].idx];
                for (int a = 0; a <= kk; ++a)
                    for (int b = a + 1; b <= kk; ++b) {
                        const int64_t i = std::min(words[a], words[b]);
                        const int64_t j = std::max(words[a], words[b]);
                        ws.pairs.push_back(i * vocab + j);
                    }
            }
        }
        start = end;
    }
    std::sort(ws.pairs.begin(), ws.pairs.end());
}

// Run-length encode the sorted pairs into (indices, counts).
void run_lengths(const std::vector<int64_t>& pairs, std::vector<int64_t>& idx,
                 std::vector<float>& cnt) {
    idx.clear();
    cnt.clear();
    for (size_t s = 0; s < pairs.size();) {
        size_t e = s + 1;
        while (e < pairs.size() && pairs[e] == pairs[s]) ++e;
        idx.push_back(pairs[s]);
        cnt.push_back(static_cast<float>(e - s));
        s = e;
    }
}

// ---------------------------------------------------------------------------------------------
// Sparse L2 search
// ---------------------------------------------------------------------------------------------

constexpr float kMissing = std::numeric_limits<float>::infinity();

// One entry of a posting list: a database row and its value in that column (float32 input,
// widened to double when used, so no precision is lost).
struct Posting {
    int32_t row;
    float value;
};

// Open-addressing hash map column -> slot (slots numbered in insertion order), used when the
// column space is too large for a direct table (e.g. semantic words: (M L)^2 columns).
class ColumnMap {
public:
    void reserve(int64_t n) {
        uint64_t cap = 16;
        while (cap < static_cast<uint64_t>(2 * n)) cap <<= 1;
        rehash(cap);
    }

    int64_t find(int64_t key) const noexcept {
        for (uint64_t h = hash(key);; h = (h + 1) & mask_) {
            const int64_t k = keys_[h];
            if (k == key) return vals_[h];
            if (k < 0) return -1;
        }
    }

    // Slot of key, inserting it with the next slot number when new.
    int64_t insert(int64_t key) {
        if (2 * (size_ + 1) > static_cast<int64_t>(keys_.size())) rehash(2 * keys_.size());
        uint64_t h = hash(key);
        for (;; h = (h + 1) & mask_) {
            if (keys_[h] == key) return vals_[h];
            if (keys_[h] < 0) break;
        }
        keys_[h] = key;
        vals_[h] = size_;
        return size_++;
    }

    int64_t size() const noexcept { return size_; }

private:
    uint64_t hash(int64_t key) const noexcept {
        return (static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull) >> shift_;
    }

    void rehash(uint64_t cap) {
        std::vector<int64_t> old_keys(cap, -1);
        std::vector<int64_t> old_vals(cap, 0);
        old_keys.swap(keys_);
        old_vals.swap(vals_);
        mask_ = cap - 1;
        shift_ = 64;
        for (uint64_t c = cap; c > 1; c >>= 1) --shift_;
        for (size_t t = 0; t < old_keys.size(); ++t) {
            if (old_keys[t] < 0) continue;
            uint64_t h = hash(old_keys[t]);
            while (keys_[h] >= 0) h = (h + 1) & mask_;
            keys_[h] = old_keys[t];
            vals_[h] = old_vals[t];
        }
    }

    std::vector<int64_t> keys_;  // -1 = empty (columns are >= 0)
    std::vector<int64_t> vals_;
    uint64_t mask_ = 0;
    int shift_ = 64;
    int64_t size_ = 0;
};

}  // namespace

// Database transposed: posting list of every (compressed) column, rows ascending.
struct PhraseIndex::Impl {
    int64_t rows = 0;
    int64_t cols = 0;
    bool direct = true;                 // column c -> slot c; else slot = columns.find(c)
    ColumnMap columns;                  // compressed mode only
    std::vector<int64_t> start;         // slots + 1
    std::vector<Posting> postings;      // nnz
    std::vector<double> sq_norms;       // database rows

    // Slot of column c (in [0, cols)), or -1 when no database row has it.
    int64_t slot(int64_t c) const noexcept { return direct ? c : columns.find(c); }
};

namespace {

void build_inverted(const CsrView& db, int threads, PhraseIndex::Impl& inv) {
    const int64_t nnz = db.indptr[db.rows];
    inv.rows = db.rows;
    inv.cols = db.cols;
    // A direct column table costs 8 bytes per column: use it unless the columns far
    // outnumber the non-zeros, then map the columns that occur to dense slots.
    inv.direct = db.cols <= 2 * nnz + (int64_t{1} << 20);
    int64_t slots = db.cols;
    std::vector<uint32_t> slot_of;  // compressed mode: slot of every non-zero
    if (!inv.direct) {
        if (nnz > std::numeric_limits<uint32_t>::max())
            throw std::invalid_argument("database: too many non-zeros for a sparse column space");
        inv.columns.reserve(std::min<int64_t>(nnz, int64_t{1} << 20));
        slot_of.resize(static_cast<size_t>(nnz));
        for (int64_t e = 0; e < nnz; ++e)
            slot_of[static_cast<size_t>(e)] = static_cast<uint32_t>(inv.columns.insert(db.indices[e]));
        slots = inv.columns.size();
    }
    const int workers = static_cast<int>(
        std::min<int64_t>(resolve_threads(threads), 1 + nnz / (int64_t{1} << 19)));
    // Squared norms, in parallel over rows.
    inv.sq_norms.assign(static_cast<size_t>(db.rows), 0.0);
    parallel_chunks(db.rows, workers, [&](int, int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
            double norm = 0.0;
            for (int64_t e = db.indptr[r]; e < db.indptr[r + 1]; ++e) {
                const double v = static_cast<double>(db.data[e]);
                norm += v * v;
            }
            inv.sq_norms[static_cast<size_t>(r)] = norm;
        }
    });
    // Counting sort by slot (a CSR -> CSC transpose). (A two-pass bucketed radix transpose
    // was measured slower here: its temporary array costs more in page faults and memory
    // traffic than it saves in cache misses.)
    inv.start.assign(static_cast<size_t>(slots + 1), 0);
    int64_t* start = inv.start.data();
    auto slot_at = [&](int64_t e) noexcept -> int64_t {
        return inv.direct ? db.indices[e] : static_cast<int64_t>(slot_of[static_cast<size_t>(e)]);
    };
    for (int64_t e = 0; e < nnz; ++e) ++start[slot_at(e) + 1];
    for (int64_t s = 0; s < slots; ++s) start[s + 1] += start[s];
    inv.postings.resize(static_cast<size_t>(nnz));
    Posting* post = inv.postings.data();
    // Fill: worker w owns the slots [w * slots / W, (w + 1) * slots / W) and scans every row in
    // order, so each posting list comes out sorted by row and no two workers write one cell.
    parallel_chunks(workers, workers, [&](int, int64_t wb, int64_t we) {
        for (int64_t w = wb; w < we; ++w) {
            const int64_t lo = slots * w / workers, hi = slots * (w + 1) / workers;
            std::vector<int64_t> cursor(start + lo, start + hi);
            for (int64_t r = 0; r < db.rows; ++r)
                for (int64_t e = db.indptr[r]; e < db.indptr[r + 1]; ++e) {
                    const int64_t sl = slot_at(e);
                    if (sl < lo || sl >= hi) continue;
                    post[cursor[static_cast<size_t>(sl - lo)]++] =
                        Posting{static_cast<int32_t>(r), db.data[e]};
                }
        }
    });
}

using Heap = TopK<double>;

// Sorted top-k rows of a heap into the output row (missing slots: id -1, distance +inf).
void write_row(const double* hd, const int64_t* hi, int64_t size, int64_t k,
               std::vector<std::pair<double, int64_t>>& sorted, float* drow, int64_t* irow) {
    sorted.clear();
    for (int64_t t = 0; t < size; ++t) sorted.emplace_back(hd[t], hi[t]);
    std::sort(sorted.begin(), sorted.end());
    for (int64_t t = 0; t < k; ++t) {
        if (t < static_cast<int64_t>(sorted.size())) {
            drow[t] = static_cast<float>(std::sqrt(sorted[static_cast<size_t>(t)].first));
            irow[t] = sorted[static_cast<size_t>(t)].second;
        } else {
            drow[t] = kMissing;
            irow[t] = -1;
        }
    }
}

// Top-k of queries [begin, end) against the inverted database.
void search_range(const CsrView& q, const PhraseIndex::Impl& inv, int64_t n_db, int64_t k,
                  int64_t begin, int64_t end, float* out_d, int64_t* out_i) {
    std::vector<double> acc(static_cast<size_t>(n_db), 0.0);
    std::vector<double> heap_d(static_cast<size_t>(std::min(k, std::max<int64_t>(n_db, 1))));
    std::vector<int64_t> heap_i(heap_d.size());
    std::vector<std::pair<double, int64_t>> sorted;
    struct Span {
        const Posting* begin;
        const Posting* end;
        double value;
    };
    std::vector<Span> spans;
    double* a = acc.data();
    const double* dn = inv.sq_norms.data();
    const Posting* postings = inv.postings.data();
    const int64_t* start = inv.start.data();
    for (int64_t r = begin; r < end; ++r) {
        // Look up every posting list first (independent loads the CPU overlaps), then
        // accumulate, prefetching the list two ahead: the lists are scattered in memory.
        double qn = 0.0;
        spans.clear();
        for (int64_t e = q.indptr[r]; e < q.indptr[r + 1]; ++e) {
            const double v = static_cast<double>(q.data[e]);
            qn += v * v;
            const int64_t s = inv.slot(q.indices[e]);
            if (s < 0 || v == 0.0) continue;
            spans.push_back(Span{postings + start[s], postings + start[s + 1], v});
        }
        const size_t n_spans = spans.size();
        for (size_t t = 0; t < n_spans; ++t) {
            if (t + 2 < n_spans) {
                SEMCBIR_PREFETCH(spans[t + 2].begin);
                SEMCBIR_PREFETCH(reinterpret_cast<const char*>(spans[t + 2].begin) + 64);
            }
            const double v = spans[t].value;
            for (const Posting* p = spans[t].begin; p != spans[t].end; ++p)
                a[p->row] += v * static_cast<double>(p->value);
        }
        // Every row is scanned (and its accumulator reset): rows sharing no column with the
        // query still have distance^2 = |q|^2 + |d|^2 and may belong to the top k.
        Heap top(heap_d.data(), heap_i.data(), static_cast<int64_t>(heap_d.size()));
        for (int64_t j = 0; j < n_db; ++j) {
            const double d2 = std::max(0.0, qn + dn[j] - 2.0 * a[j]);
            a[j] = 0.0;
            top.push(d2, j);
        }
        write_row(heap_d.data(), heap_i.data(), top.size(), k, sorted, out_d + r * k,
                  out_i + r * k);
    }
}


// One-shot search with the *queries* transposed (phrase_l2_topk without a PhraseIndex).
//
// A worker takes a block of queries, sorts their non-zeros by column (counting sort into
// posting lists of query-local rows) and streams the database rows in order: for database
// row j, each of its non-zeros adds q.d to the accumulators of the queries that have the
// column (an array of block-size doubles, cache resident), then every query of the block
// offers (|q|^2 + |d_j|^2 - 2 q.d_j, j) to its own top-k heap. For every (query, row) pair the
// products are added in ascending column order starting from 0, exactly as search_range
// does, and heaps receive ids in ascending order: results are bit-identical to
// PhraseIndex::search. Building costs O(query non-zeros) instead of O(database non-zeros)
// with random writes, which dominates a one-shot call when the database is the larger side.
inline int64_t popcount_swar(uint64_t x) noexcept {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return static_cast<int64_t>((x * 0x0101010101010101ull) >> 56);
}

// Pass 1 of a database row in direct mode (branch-free): for every non-zero whose column the
// query block uses, (position, slot) into cand; the slot is the column's rank among the used
// columns (rank of its bitmap word + set bits below it). Also |d_j|^2 in column order, and a
// prefetch of each hit's list bounds. Returns 2 x hits.
template <bool kHwPopcount>
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))
#endif
inline int64_t collect_direct_impl(const int64_t* indices, const float* data, int64_t rb,
                                   int64_t re, const uint64_t* bits, const uint32_t* rank,
                                   const int64_t* start, int64_t* cand, double& dj) noexcept {
    int64_t nc = 0;
    double norm = 0.0;
    for (int64_t e = rb; e < re; ++e) {
        const double v = static_cast<double>(data[e]);
        norm += v * v;
        const uint64_t f = static_cast<uint64_t>(indices[e]);
        const uint64_t word = bits[f >> 6];
        const int64_t hit = static_cast<int64_t>((word >> (f & 63)) & 1u);
        const uint64_t below = word & ((uint64_t{1} << (f & 63)) - 1);
        int64_t pc;
#if defined(__GNUC__) || defined(__clang__)
        if constexpr (kHwPopcount)
            pc = __builtin_popcountll(below);
        else
            pc = popcount_swar(below);
#else
        pc = popcount_swar(below);
#endif
        const int64_t sl = static_cast<int64_t>(rank[f >> 6]) + pc;
        SEMCBIR_PREFETCH(start + sl * hit);  // misses all touch start[0]
        cand[nc] = e;  // kept only when hit (nc <= 2 (e - rb): in bounds)
        cand[nc + 1] = sl;
        nc += 2 * hit;
    }
    dj = norm;
    return nc;
}

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(__POPCNT__)
// The portable build has no POPCNT (x86-64 baseline): a copy compiled for it, taken when the
// CPU has it (every x86-64 CPU since 2008).
__attribute__((target("popcnt"))) int64_t collect_direct_hw(
    const int64_t* indices, const float* data, int64_t rb, int64_t re, const uint64_t* bits,
    const uint32_t* rank, const int64_t* start, int64_t* cand, double& dj) noexcept {
    return collect_direct_impl<true>(indices, data, rb, re, bits, rank, start, cand, dj);
}

inline int64_t collect_direct(const int64_t* indices, const float* data, int64_t rb, int64_t re,
                              const uint64_t* bits, const uint32_t* rank, const int64_t* start,
                              int64_t* cand, double& dj) noexcept {
    static const bool hw = __builtin_cpu_supports("popcnt");
    return hw ? collect_direct_hw(indices, data, rb, re, bits, rank, start, cand, dj)
              : collect_direct_impl<false>(indices, data, rb, re, bits, rank, start, cand, dj);
}
#else
inline int64_t collect_direct(const int64_t* indices, const float* data, int64_t rb, int64_t re,
                              const uint64_t* bits, const uint32_t* rank, const int64_t* start,
                              int64_t* cand, double& dj) noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__POPCNT__)
    return collect_direct_impl<true>(indices, data, rb, re, bits, rank, start, cand, dj);
#else
    return collect_direct_impl<false>(indices, data, rb, re, bits, rank, start, cand, dj);
#endif
}
#endif

using detail::RowDistancesFn;

int64_t row_distances_scalar(const double* qn, double dj, double* a, const double* worst,
                             double* d2s, int32_t* enter, int64_t n) {
    int64_t m = 0;
    for (int64_t t0 = 0; t0 < n; t0 += 16) {
        const int64_t t1 = std::min(n, t0 + 16);
        bool any = false;
        for (int64_t t = t0; t < t1; ++t) {
            const double d2 = std::max(0.0, qn[t] + dj - 2.0 * a[t]);
            d2s[t] = d2;
            a[t] = 0.0;
            any |= d2 < worst[t];
        }
        if (!any) continue;
        for (int64_t t = t0; t < t1; ++t)
            if (d2s[t] < worst[t]) enter[m++] = static_cast<int32_t>(t);
    }
    return m;
}

RowDistancesFn active_row_distances() noexcept {
    switch (active_isa()) {
#if defined(SEMCBIR_HAVE_AVX512)
        case Isa::avx512: return detail::row_distances_avx512;
#endif
#if defined(SEMCBIR_HAVE_AVX2)
        case Isa::avx2: return detail::row_distances_avx2;
#endif
        default: break;
    }
    return row_distances_scalar;
}

// Every cache line of [begin, end) into L2.
inline void prefetch_l2(const void* begin, const void* end) noexcept {
    const uintptr_t b = reinterpret_cast<uintptr_t>(begin) & ~uintptr_t{63};
    for (uintptr_t p = b; p < reinterpret_cast<uintptr_t>(end); p += 64)
        SEMCBIR_PREFETCH_L2(reinterpret_cast<const void*>(p));
}

class TransposedQueries {
public:
    explicit TransposedQueries(int64_t cols)
        : cols_(cols), direct_(cols <= kDirectCols) {}

    // Ranks database rows [jb, je) for queries [qb, qe): fills one top-k heap per query
    // (capacity min(k, N), N = all database rows). write() or heap() read the result.
    // With `check`, each database row is validated (csr_row_ok; check_csr_shape done) just
    // before it is used, while it is in the cache: at the first bad row rank() stops and
    // bad() turns true (validate_csr then names the error).
    void rank(const CsrView& q, int64_t qb, int64_t qe, const CsrView& db, int64_t jb,
              int64_t je, int64_t k, bool check) {
        bad_ = false;
        const int64_t nb = qe - qb;
        const int64_t n_db = db.rows;
        nb_ = nb;
        const int64_t kk = std::min(k, std::max<int64_t>(n_db, 1));
        kk_ = kk;
        // Query norms (every non-zero, in column order, as search_range).
        qn_.assign(static_cast<size_t>(nb), 0.0);
        for (int64_t r = qb; r < qe; ++r) {
            double qn = 0.0;
            for (int64_t e = q.indptr[r]; e < q.indptr[r + 1]; ++e) {
                const double v = static_cast<double>(q.data[e]);
                qn += v * v;
            }
            qn_[static_cast<size_t>(r - qb)] = qn;
        }
        const int64_t e0 = q.indptr[qb], e1 = q.indptr[qe];
        // Columns the block uses (non-zero values only, as search_range skips zeros).
        // Direct mode: a bitmap over the columns plus the number of set bits before each
        // word; the slot of a used column is its rank among the used columns, so slots, and
        // posting lists, follow column order and the whole lookup structure is small
        // (cols / 8 + cols / 16 bytes + 8 bytes per used column: cache resident).
        // Otherwise: a hash map, behind a bitmap filter over the columns modulo 2^23.
        // (Direct mode: the next power of two >= cols, so that c & fmask == c.)
        uint64_t fmask = (uint64_t{1} << 23) - 1;
        if (direct_) {
            fmask = 63;
            while (fmask < static_cast<uint64_t>(cols_ - 1)) fmask = 2 * fmask + 1;
        }
        bits_.assign(static_cast<size_t>(fmask / 64 + 1), 0);
        for (int64_t e = e0; e < e1; ++e) {
            if (q.data[e] == 0.0f) continue;
            const uint64_t c = static_cast<uint64_t>(q.indices[e]) & fmask;
            bits_[c >> 6] |= uint64_t{1} << (c & 63);
        }
        int64_t slots = 0;
        if (direct_) {
            rank_.resize(bits_.size());
            for (size_t w = 0; w < bits_.size(); ++w) {
                rank_[w] = static_cast<uint32_t>(slots);
                slots += popcount_swar(bits_[w]);
            }
        } else {
            map_ = ColumnMap();
            map_.reserve(std::min<int64_t>(e1 - e0 + 1, int64_t{1} << 20));
            for (int64_t e = e0; e < e1; ++e)
                if (q.data[e] != 0.0f) map_.insert(q.indices[e]);
            slots = map_.size();
        }
        // Counting sort of the block's non-zeros by slot: rows ascending in every list.
        start_.assign(static_cast<size_t>(slots + 1), 0);
        for (int64_t e = e0; e < e1; ++e)
            if (q.data[e] != 0.0f) ++start_[static_cast<size_t>(slot(q.indices[e]) + 1)];
        for (int64_t t = 0; t < slots; ++t)
            start_[static_cast<size_t>(t + 1)] += start_[static_cast<size_t>(t)];
        post_.resize(static_cast<size_t>(start_[static_cast<size_t>(slots)]));
        cursor_.assign(start_.begin(), start_.end() - 1);
        for (int64_t r = qb; r < qe; ++r)
            for (int64_t e = q.indptr[r]; e < q.indptr[r + 1]; ++e) {
                if (q.data[e] == 0.0f) continue;
                const int64_t sl = slot(q.indices[e]);
                post_[static_cast<size_t>(cursor_[static_cast<size_t>(sl)]++)] =
                    Posting{static_cast<int32_t>(r - qb), q.data[e]};
            }
        // Stream the database.
        acc_.assign(static_cast<size_t>(nb), 0.0);
        heap_d_.resize(static_cast<size_t>(nb * kk));
        heap_i_.resize(static_cast<size_t>(nb * kk));
        heaps_.clear();
        heaps_.reserve(static_cast<size_t>(nb));
        for (int64_t t = 0; t < nb; ++t)
            heaps_.emplace_back(heap_d_.data() + t * kk, heap_i_.data() + t * kk, kk);
        worst_.assign(static_cast<size_t>(nb), std::numeric_limits<double>::infinity());
        d2_.resize(static_cast<size_t>(nb));
        enter_.resize(static_cast<size_t>(nb));
        double* a = acc_.data();
        const Posting* post = post_.data();
        const int64_t* start = start_.data();
        const uint64_t* bits = bits_.data();
        for (int64_t j = jb; j < je; ++j) {
            // Posting lists of the row's columns first, then the accumulation, prefetching
            // the list two ahead.
            // Pass 1 (branch-free in direct mode): slots of the row's columns that the block
            // uses, with a prefetch of their list bounds. Pass 2: the spans. The loads of
            // pass 2 then hit the cache instead of waiting one by one.
            const int64_t rb = db.indptr[j], re = db.indptr[j + 1];
            if (j + 2 < je) {  // the database stream, two rows ahead, into L2
                const int64_t pb = db.indptr[j + 2], pe = db.indptr[j + 3];
                prefetch_l2(db.indices + pb, db.indices + pe);
                prefetch_l2(db.data + pb, db.data + pe);
            }
            if (check && !csr_row_ok(db, j)) {
                bad_ = true;
                return;
            }
            if (cand_.size() < static_cast<size_t>(2 * (re - rb)))
                cand_.resize(static_cast<size_t>(2 * (re - rb)));
            int64_t* cand = cand_.data();
            int64_t nc = 0;
            double dj = 0.0;  // |d_j|^2, same order as everywhere (overlaps the lookups)
            if (direct_) {
                nc = collect_direct(db.indices, db.data, rb, re, bits, rank_.data(), start,
                                    cand, dj);
            } else {
                for (int64_t e = rb; e < re; ++e) {
                    const double v = static_cast<double>(db.data[e]);
                    dj += v * v;
                    const int64_t c = db.indices[e];
                    const uint64_t f = static_cast<uint64_t>(c) & fmask;
                    if (!((bits[f >> 6] >> (f & 63)) & 1u)) continue;
                    const int64_t sl = map_.find(c);
                    if (sl < 0) continue;
                    cand[nc] = e;
                    cand[nc + 1] = sl;
                    nc += 2;
                }
            }
            // Pass 2: the spans, prefetching the start of every list (the accumulation then
            // finds them in the cache).
            if (spans_.size() < static_cast<size_t>(nc / 2))
                spans_.resize(static_cast<size_t>(nc / 2));
            Span* spans = spans_.data();
            const int64_t n_spans = nc / 2;
            for (int64_t t = 0; t < n_spans; ++t) {
                const int64_t sl = cand[2 * t + 1];
                const Posting* begin = post + start[sl];
                SEMCBIR_PREFETCH(begin);
                spans[t] = Span{begin, post + start[sl + 1],
                                static_cast<double>(db.data[cand[2 * t]])};
            }
            for (int64_t t = 0; t < n_spans; ++t) {
                const double w = spans[t].value;
                for (const Posting* p = spans[t].begin; p != spans[t].end; ++p)
                    a[p->row] += static_cast<double>(p->value) * w;
            }
            // worst[t]: the k-th smallest distance of query t so far (+inf until its heap is
            // full). Ids arrive ascending, so d2 >= worst[t] can never enter: the common
            // rejection is one compare, in a SIMD kernel that also resets the accumulators
            // and lists the few queries whose heap takes the row.
            const int64_t n_in =
                row_distances_(qn_.data(), dj, a, worst_.data(), d2_.data(), enter_.data(), nb);
            for (int64_t i = 0; i < n_in; ++i) {
                const int64_t t = enter_[static_cast<size_t>(i)];
                Heap& h = heaps_[static_cast<size_t>(t)];
                h.push(d2_[static_cast<size_t>(t)], j);
                if (h.size() == kk) worst_[static_cast<size_t>(t)] = heap_d_[static_cast<size_t>(t * kk)];
            }
        }
    }

    // The sorted top k of query qb + t of the last rank() into the output rows.
    void write(int64_t qb, int64_t k, float* out_d, int64_t* out_i) {
        for (int64_t t = 0; t < nb_; ++t)
            write_row(heap_d_.data() + t * kk_, heap_i_.data() + t * kk_,
                      heaps_[static_cast<size_t>(t)].size(), k, sorted_,
                      out_d + (qb + t) * k, out_i + (qb + t) * k);
    }

    // True when the last rank() stopped at an invalid database row.
    bool bad() const noexcept { return bad_; }

    // Heap of query t of the last rank(): distances, ids, size (unsorted).
    const double* heap_d(int64_t t) const noexcept { return heap_d_.data() + t * kk_; }
    const int64_t* heap_i(int64_t t) const noexcept { return heap_i_.data() + t * kk_; }
    int64_t heap_size(int64_t t) const noexcept { return heaps_[static_cast<size_t>(t)].size(); }

private:
    static constexpr int64_t kDirectCols = int64_t{1} << 26;

    // Slot of a column the block uses.
    int64_t slot(int64_t c) const noexcept {
        if (!direct_) return map_.find(c);
        const uint64_t f = static_cast<uint64_t>(c);
        return static_cast<int64_t>(rank_[f >> 6]) +
               popcount_swar(bits_[f >> 6] & ((uint64_t{1} << (f & 63)) - 1));
    }

    struct Span {
        const Posting* begin;
        const Posting* end;
        double value;
    };

    int64_t cols_;
    bool direct_;
    int64_t nb_ = 0, kk_ = 1;
    bool bad_ = false;
    std::vector<uint64_t> bits_;   // used columns (direct) or filter (hash mode)
    std::vector<uint32_t> rank_;   // direct: used columns before each word of bits_
    ColumnMap map_;                // hash mode: column -> slot
    std::vector<int64_t> start_, cursor_;
    std::vector<Posting> post_;
    std::vector<double> qn_, acc_, heap_d_, worst_, d2_;
    std::vector<int64_t> heap_i_;
    std::vector<Heap> heaps_;
    std::vector<std::pair<double, int64_t>> sorted_;
    std::vector<Span> spans_;
    std::vector<int64_t> cand_;  // pass 1: (non-zero position, slot) pairs
    std::vector<int32_t> enter_;  // queries whose heap takes the current row
    RowDistancesFn row_distances_ = active_row_distances();
};

// Queries per block of the transposed search: bounds the heaps (block x k entries).
constexpr int64_t kTransposedHeapEntries = int64_t{1} << 20;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

void validate_keypoints(const KeypointSet* images, int64_t n_images, int64_t vocab_size,
                        int phrase_len) {
    if (vocab_size < 1 || vocab_size > std::numeric_limits<int32_t>::max())
        throw std::invalid_argument("vocab_size must be in [1, 2^31 - 1], got " +
                                    std::to_string(vocab_size));
    if (phrase_len < 2 || phrase_len > kMaxPhraseLength)
        throw std::invalid_argument("n (phrase length) must be in [2, " +
                                    std::to_string(kMaxPhraseLength) + "], got " +
                                    std::to_string(phrase_len));
    if (n_images < 0) throw std::invalid_argument("n_images must be >= 0");
    for (int64_t i = 0; i < n_images; ++i) {
        const KeypointSet& img = images[i];
        const std::string where = "image " + std::to_string(i);
        if (img.n < 0) throw std::invalid_argument(where + ": negative keypoint count");
        if (img.n > 0 && (!img.xy || !img.words || !img.classes))
            throw std::invalid_argument(where + ": missing keypoint arrays");
        for (int64_t p = 0; p < img.n; ++p) {
            if (img.words[p] < 0 || img.words[p] >= vocab_size)
                throw std::invalid_argument(
                    where + ": word " + std::to_string(img.words[p]) + " of keypoint " +
                    std::to_string(p) + " is outside [0, " + std::to_string(vocab_size) +
                    "); words must come from a vocabulary of that size");
            if (!std::isfinite(img.xy[2 * p]) || !std::isfinite(img.xy[2 * p + 1]))
                throw std::invalid_argument(where + ": keypoint " + std::to_string(p) +
                                            " has a non-finite coordinate");
        }
    }
}

SparseRows build_phrase_matrices(const KeypointSet* images, int64_t n_images,
                                 int64_t vocab_size, int phrase_len, int threads) {
    validate_keypoints(images, n_images, vocab_size, phrase_len);
    std::vector<std::vector<int64_t>> idx(static_cast<size_t>(n_images));
    std::vector<std::vector<float>> cnt(static_cast<size_t>(n_images));
    int64_t keypoints = 0;
    for (int64_t i = 0; i < n_images; ++i) keypoints += images[i].n;
    // About 20k keypoints per worker before a thread pays for itself.
    const int64_t by_work = std::max<int64_t>(1, keypoints / 20000 + 1);
    const int workers = static_cast<int>(std::min<int64_t>(resolve_threads(threads), by_work));
    parallel_chunks(n_images, workers, [&](int, int64_t begin, int64_t end) {
        PhraseWorkspace ws;
        for (int64_t i = begin; i < end; ++i) {
            image_pairs(images[i], vocab_size, phrase_len, ws);
            run_lengths(ws.pairs, idx[static_cast<size_t>(i)], cnt[static_cast<size_t>(i)]);
        }
    });
    SparseRows out;
    out.indptr.assign(static_cast<size_t>(n_images + 1), 0);
    for (int64_t i = 0; i < n_images; ++i)
        out.indptr[static_cast<size_t>(i + 1)] =
            out.indptr[static_cast<size_t>(i)] + static_cast<int64_t>(idx[static_cast<size_t>(i)].size());
    out.indices.reserve(static_cast<size_t>(out.indptr.back()));
    out.data.reserve(static_cast<size_t>(out.indptr.back()));
    for (int64_t i = 0; i < n_images; ++i) {
        out.indices.insert(out.indices.end(), idx[static_cast<size_t>(i)].begin(), idx[static_cast<size_t>(i)].end());
        out.data.insert(out.data.end(), cnt[static_cast<size_t>(i)].begin(), cnt[static_cast<size_t>(i)].end());
    }
    return out;
}

void validate_csr(const CsrView& m, const char* name) {
    const std::string who(name);
    check_csr_shape(m, who);
    for (int64_t r = 0; r < m.rows; ++r)
        if (!csr_row_ok(m, r)) throw_row_error(m, r, who);
}

PhraseIndex::PhraseIndex(const CsrView& database, int threads) {
    if (database.rows > std::numeric_limits<int32_t>::max())
        throw std::invalid_argument("database must have fewer than 2^31 rows");
    validate_csr(database, "database");
    auto impl = std::make_shared<Impl>();
    build_inverted(database, threads, *impl);
    impl_ = std::move(impl);
}

int64_t PhraseIndex::rows() const noexcept { return impl_->rows; }
int64_t PhraseIndex::cols() const noexcept { return impl_->cols; }
int64_t PhraseIndex::nnz() const noexcept { return static_cast<int64_t>(impl_->postings.size()); }

void PhraseIndex::search(const CsrView& queries, int64_t k, float* distances, int64_t* ids,
                         int threads) const {
    if (k <= 0) throw std::invalid_argument("k must be >= 1, got " + std::to_string(k));
    if (queries.cols != impl_->cols)
        throw std::invalid_argument("queries and database must have the same number of columns: " +
                                    std::to_string(queries.cols) + " vs " +
                                    std::to_string(impl_->cols) +
                                    " (signatures from different vocabularies?)");
    validate_csr(queries, "queries");
    const Impl& inv = *impl_;
    // Each query costs O(N + postings): below ~64k units of work a thread is not worth it.
    const int64_t work = queries.rows * (inv.rows + 64);
    const int64_t by_work = std::max<int64_t>(1, work / 65536);
    const int workers = static_cast<int>(std::min<int64_t>(resolve_threads(threads), by_work));
    parallel_chunks(queries.rows, workers, [&](int, int64_t begin, int64_t end) {
        search_range(queries, inv, inv.rows, k, begin, end, distances, ids);
    });
}

void phrase_l2_topk(const CsrView& queries, const CsrView& database, int64_t k, float* distances,
                    int64_t* ids, int threads) {
    if (k <= 0) throw std::invalid_argument("k must be >= 1, got " + std::to_string(k));
    if (queries.cols != database.cols)
        throw std::invalid_argument("queries and database must have the same number of columns: " +
                                    std::to_string(queries.cols) + " vs " +
                                    std::to_string(database.cols) +
                                    " (signatures from different vocabularies?)");
    validate_csr(queries, "queries");
    // Transposing the queries instead of the database pays when each worker needs at most
    // two blocks of queries (one database scan per block); otherwise build the index.
    const int64_t nq = queries.rows, n_db = database.rows;
    const int64_t kk = std::min(k, std::max<int64_t>(n_db, 1));
    const int64_t block = std::max<int64_t>(1, kTransposedHeapEntries / kk);
    const int64_t work = nq * (n_db + 64);
    const int workers = static_cast<int>(std::min<int64_t>(
        {resolve_threads(threads), std::max<int64_t>(1, work / 65536), std::max<int64_t>(1, nq)}));
    const int64_t per_worker = (nq + workers - 1) / std::max(workers, 1);
    if (nq == 0 || (per_worker + block - 1) / block > 2) {
        const PhraseIndex index(database, threads);
        index.search(queries, k, distances, ids, threads);
        return;
    }
    if (database.rows > std::numeric_limits<int32_t>::max())
        throw std::invalid_argument("database must have fewer than 2^31 rows");
    // The rows are checked as the search streams them (one pass over the database instead of
    // two); at a bad one the workers stop and validate_csr names the first error.
    check_csr_shape(database, "database");
    std::vector<char> bad(static_cast<size_t>(workers), 0);
    auto check_bad = [&] {
        if (std::find(bad.begin(), bad.end(), 1) == bad.end()) return;
        validate_csr(database, "database");
        throw std::logic_error("database: a row failed the streaming check only");
    };
    if (workers > 1 && nq <= block && workers * nq * kk <= kTransposedHeapEntries) {
        // Few queries and small heaps: split the database rows instead of the queries (each
        // worker streams its rows once, not the whole database), then merge the workers'
        // heaps. The k best of the union of per-range top-k lists are the global top k under
        // the total order (distance, id), so the result is the same.
        std::vector<TransposedQueries> parts;
        parts.reserve(static_cast<size_t>(workers));
        for (int w = 0; w < workers; ++w) parts.emplace_back(queries.cols);
        parallel_chunks(workers, workers, [&](int, int64_t wb, int64_t we) {
            for (int64_t w = wb; w < we; ++w) {
                TransposedQueries& part = parts[static_cast<size_t>(w)];
                part.rank(queries, 0, nq, database, n_db * w / workers,
                          n_db * (w + 1) / workers, k, true);
                bad[static_cast<size_t>(w)] = part.bad();
            }
        });
        check_bad();
        parallel_chunks(nq, workers, [&](int, int64_t begin, int64_t end) {
            std::vector<double> md;
            std::vector<int64_t> mi;
            std::vector<std::pair<double, int64_t>> sorted;
            for (int64_t t = begin; t < end; ++t) {
                md.clear();
                mi.clear();
                for (const TransposedQueries& part : parts) {
                    const int64_t sz = part.heap_size(t);
                    md.insert(md.end(), part.heap_d(t), part.heap_d(t) + sz);
                    mi.insert(mi.end(), part.heap_i(t), part.heap_i(t) + sz);
                }
                write_row(md.data(), mi.data(), static_cast<int64_t>(md.size()), k, sorted,
                          distances + t * k, ids + t * k);
            }
        });
        return;
    }
    parallel_chunks(nq, workers, [&](int w, int64_t begin, int64_t end) {
        TransposedQueries tq(queries.cols);
        for (int64_t b = begin; b < end; b += block) {
            const int64_t e = std::min(end, b + block);
            tq.rank(queries, b, e, database, 0, n_db, k, b == begin);
            if (tq.bad()) {
                bad[static_cast<size_t>(w)] = 1;
                return;
            }
            tq.write(b, k, distances, ids);
        }
    });
    check_bad();
}

}  // namespace semcbir
