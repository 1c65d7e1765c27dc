// Exact sparse L2 top-k: an inverted index over the database (SparseL2Index), or, for one-shot
// calls, the queries transposed and the database streamed once per block. The per-ISA kernels
// of the streaming path come from the dispatch table.
#include "semcbir/sparse_l2.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "csr_check.hpp"
#include "dispatch.hpp"
#include "popcount.hpp"
#include "prefetch.hpp"
#include "semcbir/parallel.hpp"
#include "semcbir/topk.hpp"

namespace semcbir {

using detail::check_csr_shape;
using detail::csr_row_ok;

namespace {

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
struct SparseL2Index::Impl {
    int64_t rows = 0;
    int64_t cols = 0;
    bool direct = true;                 // column c -> slot c; else slot = columns.find(c)
    ColumnMap columns;                  // compressed mode only
    std::vector<int64_t> start;         // slots + 1
    std::vector<Posting> postings;      // nnz
    std::vector<double> sq_norms;       // database rows
    // The database rows themselves (a CSR copy): the exact distance of a near-tie is
    // recomputed from both rows (pair_d2).
    std::vector<int64_t> row_ptr;       // rows + 1
    std::vector<int64_t> row_cols;      // nnz
    std::vector<float> row_vals;        // nnz
    int64_t max_row_entries = 0;        // most stored entries of one row

    // Slot of column c (in [0, cols)), or -1 when no database row has it.
    int64_t slot(int64_t c) const noexcept { return direct ? c : columns.find(c); }
};

namespace {

void build_inverted(const CsrView& db, int threads, SparseL2Index::Impl& inv) {
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
    inv.row_ptr.assign(db.indptr, db.indptr + db.rows + 1);
    inv.row_cols.assign(db.indices, db.indices + nnz);
    inv.row_vals.assign(db.data, db.data + nnz);
    for (int64_t r = 0; r < db.rows; ++r)
        inv.max_row_entries = std::max(inv.max_row_entries, db.indptr[r + 1] - db.indptr[r]);
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

// ---- The squared distance of one (query, database row) pair ----
//
// The fast form e = max(0, (|q|^2 + |d|^2) - 2 q.d) (float64, products exact) loses every
// digit when the distance is tiny next to the norms (near-duplicates, huge values: q = (1e8, 1),
// d = (1e8, 0) gives 0 instead of 1). Its error, and that of the direct sum below, is at most
// bound = (4 (n_q + n_d) + 16) 2^-52 (|q|^2 + |d|^2), n_q and n_d the rows' stored entries
// (a few times the worst case of recursive summation). So:
//   d2 = e                                   when e >= 2^26 bound (then accurate to 2^-26),
//   d2 = sum over the union of the columns, in ascending order, of (q_c - d_c)^2 otherwise.
// A function of the two rows only: every path, every ISA and the numba backend give the
// same bits. The searches prune with e - bound >= worst, which never drops a pair whose d2
// beats the k-th best.
constexpr double kUlpUnit = 0x1p-52;
constexpr double kDirectTrust = 0x1p26;

inline double error_factor(int64_t entries) noexcept {
    return (4.0 * static_cast<double>(entries) + 16.0) * kUlpUnit;
}

// sum over the union of the columns of (q_c - d_c)^2, in ascending column order.
double direct_d2(const int64_t* qc, const float* qv, int64_t nq, const int64_t* dc,
                 const float* dv, int64_t nd) noexcept {
    double sum = 0.0;
    int64_t i = 0, j = 0;
    while (i < nq && j < nd) {
        double x;
        if (qc[i] < dc[j]) {
            x = static_cast<double>(qv[i++]);
        } else if (dc[j] < qc[i]) {
            x = static_cast<double>(dv[j++]);
        } else {
            x = static_cast<double>(qv[i++]) - static_cast<double>(dv[j++]);
        }
        sum += x * x;
    }
    for (; i < nq; ++i) {
        const double x = static_cast<double>(qv[i]);
        sum += x * x;
    }
    for (; j < nd; ++j) {
        const double x = static_cast<double>(dv[j]);
        sum += x * x;
    }
    return sum;
}

// One CSR row: columns ascending, values.
struct RowRef {
    const int64_t* cols;
    const float* vals;
    int64_t n;
};

inline RowRef row_of(const CsrView& m, int64_t r) noexcept {
    const int64_t b = m.indptr[r];
    return {m.indices + b, m.data + b, m.indptr[r + 1] - b};
}

// d2 of the pair from its fast form e and s = |q|^2 + |d|^2 (see above).
inline double pair_d2(double e, double s, const RowRef& q, const RowRef& d) noexcept {
    if (e >= kDirectTrust * (error_factor(q.n + d.n) * s)) return e;
    return direct_d2(q.cols, q.vals, q.n, d.cols, d.vals, d.n);
}

// Sorted top-k of a heap into the output row: distances sqrt(d2) rounded to float32, missing
// slots id -1 and distance +inf.
void write_row(const double* hd, const int64_t* hi, int64_t size, int64_t k,
               std::vector<std::pair<double, int64_t>>& sorted, float* drow, int64_t* irow) {
    write_sorted_row(hd, hi, size, k, [](double d2) { return static_cast<float>(std::sqrt(d2)); },
                     kMissing, sorted, drow, irow);
}

// Top-k of queries [begin, end) against the inverted database.
void search_range(const CsrView& q, const SparseL2Index::Impl& inv, int64_t n_db, int64_t k,
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
        // A row can only enter when e - slack (|q|^2 + |d|^2) < worst (slack: the error
        // factor of the largest pair, see pair_d2); the pair's d2 then decides.
        const RowRef qrow = row_of(q, r);
        const int64_t* rp = inv.row_ptr.data();
        const double slack = error_factor(qrow.n + inv.max_row_entries);
        Heap top(heap_d.data(), heap_i.data(), static_cast<int64_t>(heap_d.size()));
        double worst = std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < n_db; ++j) {
            const double sum = qn + dn[j];
            const double e = std::max(0.0, sum - 2.0 * a[j]);
            a[j] = 0.0;
            if (!(e - slack * sum < worst)) continue;
            const RowRef drow{inv.row_cols.data() + rp[j], inv.row_vals.data() + rp[j],
                              rp[j + 1] - rp[j]};
            top.push(pair_d2(e, sum, qrow, drow), j);
            if (top.full()) worst = top.worst();
        }
        write_row(heap_d.data(), heap_i.data(), top.size(), k, sorted, out_d + r * k,
                  out_i + r * k);
    }
}

// Every cache line of [begin, end) into L2.
inline void prefetch_l2(const void* begin, const void* end) noexcept {
    const uintptr_t b = reinterpret_cast<uintptr_t>(begin) & ~uintptr_t{63};
    for (uintptr_t p = b; p < reinterpret_cast<uintptr_t>(end); p += 64)
        SEMCBIR_PREFETCH_L2(reinterpret_cast<const void*>(p));
}

// One-shot search with the *queries* transposed (sparse_l2_topk without a SparseL2Index).
//
// A worker takes a block of queries, sorts their non-zeros by column (counting sort into
// posting lists of query-local rows) and streams the database rows in order: for database
// row j, each of its non-zeros adds q.d to the accumulators of the queries that have the
// column (an array of block-size doubles, cache resident), then every query of the block
// offers (|q|^2 + |d_j|^2 - 2 q.d_j, j) to its own top-k heap. For every (query, row) pair the
// products are added in ascending column order starting from 0, exactly as search_range
// does, and heaps receive ids in ascending order: results are bit-identical to
// SparseL2Index::search. Building costs O(query non-zeros) instead of O(database non-zeros)
// with random writes, which dominates a one-shot call when the database is the larger side.
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
        int64_t q_entries = 0;  // most stored entries of one query row of the block
        for (int64_t r = qb; r < qe; ++r) {
            q_entries = std::max(q_entries, q.indptr[r + 1] - q.indptr[r]);
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
            fmask = 63;  // cols_ may be 0 (every row empty): one word
            while (cols_ > 0 && fmask < static_cast<uint64_t>(cols_ - 1)) fmask = 2 * fmask + 1;
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
                slots += detail::popcount64(bits_[w]);
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
                nc = collect_direct_(db.indices, db.data, rb, re, bits, rank_.data(), start,
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
            // The kernel keeps the pairs with e - slack (|q|^2 + |d|^2) < worst, slack >= the
            // error factor of every pair of the row (pair_d2), and the exact d2 decides.
            const double slack = error_factor(q_entries + (re - rb));
            const int64_t n_in = row_distances_(qn_.data(), dj, a, worst_.data(), slack,
                                                d2_.data(), enter_.data(), nb);
            const RowRef drow = row_of(db, j);
            for (int64_t i = 0; i < n_in; ++i) {
                const int64_t t = enter_[static_cast<size_t>(i)];
                Heap& h = heaps_[static_cast<size_t>(t)];
                const double sum = qn_[static_cast<size_t>(t)] + dj;
                h.push(pair_d2(d2_[static_cast<size_t>(t)], sum, row_of(q, qb + t), drow), j);
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
               detail::popcount64(bits_[f >> 6] & ((uint64_t{1} << (f & 63)) - 1));
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
    // Kernels of the active ISA level, fixed for the lifetime of the object.
    detail::RowDistancesFn row_distances_ = detail::kernels().row_distances;
    detail::CollectDirectFn collect_direct_ = detail::kernels().collect_direct;
};

// Queries per block of the transposed search: bounds the heaps (block x k entries).
constexpr int64_t kTransposedHeapEntries = int64_t{1} << 20;

}  // namespace

SparseL2Index::SparseL2Index(const CsrView& database, int threads) {
    if (database.rows > std::numeric_limits<int32_t>::max())
        throw std::invalid_argument("database must have fewer than 2^31 rows");
    validate_csr(database, "database");
    auto impl = std::make_shared<Impl>();
    build_inverted(database, threads, *impl);
    impl_ = std::move(impl);
}

int64_t SparseL2Index::rows() const noexcept { return impl_->rows; }
int64_t SparseL2Index::cols() const noexcept { return impl_->cols; }
int64_t SparseL2Index::nnz() const noexcept { return static_cast<int64_t>(impl_->postings.size()); }

void SparseL2Index::search(const CsrView& queries, int64_t k, float* distances, int64_t* ids,
                         int threads) const {
    check_topk_size(queries.rows, k);
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

void sparse_l2_topk(const CsrView& queries, const CsrView& database, int64_t k, float* distances,
                    int64_t* ids, int threads) {
    check_topk_size(queries.rows, k);
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
        const SparseL2Index index(database, threads);
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
