// Cache tiling, threading and top-k selection around the per-ISA distance kernels (taken
// from the dispatch table).
#include "semcbir/hamming.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dispatch.hpp"
#include "semcbir/parallel.hpp"
#include "semcbir/topk.hpp"

namespace semcbir {

namespace {

constexpr int64_t kTileBytes = 512 * 1024;    // database rows scanned per tile (L2-resident)
constexpr int64_t kBufferInts = 8 * 1024;      // distances held per tile (queries x rows): L1-sized
constexpr int64_t kMaxTileRows = 256;          // narrow codes: more queries per tile instead
constexpr int64_t kBytesPerWorker = 4 << 20;   // below this a thread costs more than it saves
constexpr int64_t kCachedDatabaseBytes = 8 << 20;  // databases up to this size count as cached
constexpr int64_t kMergeHeapEntries = int64_t{1} << 24;  // split-database heaps, all workers
constexpr int32_t kMissingDistance = std::numeric_limits<int32_t>::max();

struct Tiling {
    int64_t rows;     // database rows per tile
    int64_t qblock;   // queries per kernel call
};

Tiling make_tiling(int64_t width, int64_t nq, int64_t n) {
    Tiling t;
    t.rows = std::clamp<int64_t>(kTileBytes / std::max<int64_t>(width, 1), 16, kMaxTileRows);
    t.rows = std::max<int64_t>(1, std::min(t.rows, n));
    t.qblock = std::clamp<int64_t>(kBufferInts / t.rows, 4, 1024);
    t.qblock = std::max<int64_t>(1, std::min(t.qblock, nq));
    return t;
}

// `bytes`: the work in code bytes compared, as a double (a product of three sizes may not
// fit in 64 bits).
int workers_for(int threads, double bytes, int64_t parts) {
    int64_t w = resolve_threads(threads);
    if (bytes / kBytesPerWorker < static_cast<double>(w))
        w = std::max<int64_t>(1, static_cast<int64_t>(bytes / kBytesPerWorker));
    w = std::min<int64_t>(w, std::max<int64_t>(parts, 1));
    return static_cast<int>(std::max<int64_t>(w, 1));
}

using Heap = TopK<int32_t>;

// A pair with a distance below this may enter the heap (ids arrive ascending).
inline int32_t threshold(const Heap& h) noexcept {
    return h.full() ? h.worst() : kMissingDistance;
}

// Sorts the heap ascending by (distance, id) into out (k_out slots), padding the rest.
void finish(const Heap& h, int32_t* out_d, int64_t* out_id, int64_t k_out,
            std::vector<std::pair<int32_t, int64_t>>& scratch) {
    write_sorted_row(h.distances(), h.ids(), h.size(), k_out, [](int32_t d) { return d; },
                     kMissingDistance, scratch, out_d, out_id);
}

// Scans database rows [begin, end) for queries [q0, q1), feeding heaps[q - q0].
void scan_range(const CodeMatrix& qs, int64_t q0, int64_t q1, const CodeMatrix& db,
                int64_t begin, int64_t end, std::vector<Heap>& heaps) {
    const detail::KernelTable& kt = detail::kernels();
    const detail::HammingTileFn kernel = kt.hamming_tile;
    const detail::FindBelowFn find_below = kt.find_below;
    const int64_t nq = q1 - q0;
    const Tiling t = make_tiling(qs.width, nq, end - begin);
    std::vector<int32_t> buf(static_cast<size_t>(t.rows * t.qblock));
    for (int64_t r0 = begin; r0 < end; r0 += t.rows) {
        const int64_t rows = std::min(t.rows, end - r0);
        const uint8_t* tile = db.data + r0 * db.stride;
        for (int64_t b0 = 0; b0 < nq; b0 += t.qblock) {
            const int64_t nb = std::min(t.qblock, nq - b0);
            kernel(qs.data + (q0 + b0) * qs.stride, nb, qs.stride, tile, rows, db.stride,
                   qs.width, buf.data(), rows);
            for (int64_t i = 0; i < nb; ++i) {
                Heap& h = heaps[static_cast<size_t>(b0 + i)];
                const int32_t* dist = buf.data() + i * rows;
                int32_t thr = threshold(h);
                for (int64_t j = find_below(dist, rows, thr); j < rows;
                     j += 1 + find_below(dist + j + 1, rows - j - 1, thr)) {
                    h.push(dist[j], r0 + j);
                    thr = threshold(h);
                }
            }
        }
    }
}

void check_widths(const CodeMatrix& a, const CodeMatrix& b) {
    if (a.width != b.width)
        throw std::invalid_argument("codes must have the same width: " + std::to_string(a.width) +
                                    " vs " + std::to_string(b.width) + " bytes");
    if (a.width <= 0) throw std::invalid_argument("code width must be >= 1 byte");
}

}  // namespace

void hamming_distances(const CodeMatrix& a, const CodeMatrix& b, int32_t* out, int threads) {
    check_widths(a, b);
    if (a.n == 0 || b.n == 0) return;
    const detail::HammingTileFn kernel = detail::kernels().hamming_tile;
    const double bytes = static_cast<double>(a.n) * static_cast<double>(b.n) * a.width;
    const bool split_rows = a.n >= b.n || a.n >= resolve_threads(threads);
    const int workers = workers_for(threads, bytes, split_rows ? a.n : b.n);
    auto run = [&](int64_t a0, int64_t a1, int64_t b0, int64_t b1) {
        const Tiling t = make_tiling(a.width, a1 - a0, b1 - b0);
        for (int64_t r0 = b0; r0 < b1; r0 += t.rows) {
            const int64_t rows = std::min(t.rows, b1 - r0);
            for (int64_t q = a0; q < a1; q += t.qblock) {
                const int64_t nb = std::min(t.qblock, a1 - q);
                kernel(a.data + q * a.stride, nb, a.stride, b.data + r0 * b.stride, rows, b.stride,
                       a.width, out + q * b.n + r0, b.n);
            }
        }
    };
    if (split_rows)
        parallel_chunks(a.n, workers, [&](int, int64_t s, int64_t e) { run(s, e, 0, b.n); });
    else
        parallel_chunks(b.n, workers, [&](int, int64_t s, int64_t e) { run(0, a.n, s, e); });
}

void hamming_topk(const CodeMatrix& queries, const CodeMatrix& database, int64_t k,
                  int32_t* distances, int64_t* ids, int threads) {
    check_widths(queries, database);
    check_topk_size(queries.n, k);
    const int64_t nq = queries.n, n = database.n;
    if (nq == 0) return;
    const int64_t kk = std::min(k, n);  // heap capacity
    const double bytes = static_cast<double>(nq) * static_cast<double>(n) * queries.width;
    const int max_workers = resolve_threads(threads);
    // A database that stays in cache can be rescanned by every worker for its own queries;
    // a larger one is split so that it streams from memory once.
    // Splitting the database gives every worker heaps for all queries: only while they
    // stay small (nq * k * workers entries).
    const int db_workers = workers_for(threads, bytes, n);
    const bool split_queries =
        n == 0 || (nq >= max_workers && n * database.width <= kCachedDatabaseBytes) ||
        nq * kk > kMergeHeapEntries / db_workers;
    if (split_queries) {
        // Each worker owns a contiguous query range and scans the whole database.
        const int workers = workers_for(threads, bytes, nq);
        parallel_chunks(nq, workers, [&](int, int64_t q0, int64_t q1) {
            std::vector<int32_t> hd(static_cast<size_t>((q1 - q0) * kk));
            std::vector<int64_t> hi(static_cast<size_t>((q1 - q0) * kk));
            std::vector<Heap> heaps;
            heaps.reserve(static_cast<size_t>(q1 - q0));
            for (int64_t q = 0; q < q1 - q0; ++q)
                heaps.emplace_back(hd.data() + q * kk, hi.data() + q * kk, kk);
            if (kk > 0) scan_range(queries, q0, q1, database, 0, n, heaps);
            std::vector<std::pair<int32_t, int64_t>> scratch;
            for (int64_t q = q0; q < q1; ++q)
                finish(heaps[static_cast<size_t>(q - q0)], distances + q * k, ids + q * k, k,
                       scratch);
        });
        return;
    }
    // Few queries: split the database; every worker keeps heaps for all queries, then merge.
    const int workers = db_workers;
    WorkerHeaps<int32_t> worker_heaps(workers, nq, kk);
    parallel_chunks(n, workers, [&](int w, int64_t r0, int64_t r1) {
        std::vector<Heap> heaps = worker_heaps.heaps(w);
        scan_range(queries, 0, nq, database, r0, r1, heaps);
        worker_heaps.keep(w, heaps);
    });
    std::vector<int32_t> md(static_cast<size_t>(kk));
    std::vector<int64_t> mi(static_cast<size_t>(kk));
    std::vector<std::pair<int32_t, int64_t>> scratch;
    for (int64_t q = 0; q < nq; ++q) {
        Heap merged(md.data(), mi.data(), kk);
        worker_heaps.merge_into(q, merged);
        finish(merged, distances + q * k, ids + q * k, k, scratch);
    }
}

}  // namespace semcbir
