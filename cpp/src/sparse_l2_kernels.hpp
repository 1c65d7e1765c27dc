// Internal to the sparse L2 search (sparse_l2.cpp): the per-ISA kernels of its one-shot path,
// one file per instruction set (sparse_l2_scalar.cpp, sparse_l2_avx2.cpp, sparse_l2_avx512.cpp),
// picked through the dispatch table (dispatch.hpp). Everything shared is inline with internal
// linkage, so that a copy compiled with AVX-512 flags can never be picked by the linker for the
// portable code.
#pragma once

#include <algorithm>
#include <cstdint>

#include "popcount.hpp"
#include "prefetch.hpp"

namespace semcbir::detail {

/// Distances of one database row to the n queries of a block, and the queries whose heap
/// may take the row: e[t] = max(0, (qn[t] + dj) - 2 a[t]) (the double operations of the
/// scalar search, so the same value), a[t] reset to 0, and every t with
/// e[t] - slack (qn[t] + dj) < worst[t] appended to `enter` in ascending order (d2s[t] = e[t]
/// is only written for those; the caller then computes the pair's exact d2). Returns how many.
using RowDistancesFn = int64_t (*)(const double* qn, double dj, double* a, const double* worst,
                                   double slack, double* d2s, int32_t* enter,
                                   int64_t n) noexcept;

/// Pass 1 of a database row [rb, re) against a query block in direct column mode: for every
/// non-zero whose column the block uses, the pair (position, slot) goes into cand, the slot
/// being the column's rank among the used columns (rank[word] + set bits of bits[word] below
/// it); also dj = |d_j|^2 summed in column order, and a prefetch of each hit's list bounds.
/// Returns 2 x hits. Branch-free.
using CollectDirectFn = int64_t (*)(const int64_t* indices, const float* data, int64_t rb,
                                    int64_t re, const uint64_t* bits, const uint32_t* rank,
                                    const int64_t* start, int64_t* cand, double& dj) noexcept;

int64_t row_distances_scalar(const double*, double, double*, const double*, double, double*,
                             int32_t*, int64_t) noexcept;
int64_t collect_direct_scalar(const int64_t*, const float*, int64_t, int64_t, const uint64_t*,
                              const uint32_t*, const int64_t*, int64_t*, double&) noexcept;
#if defined(SEMCBIR_HAVE_AVX2)
int64_t row_distances_avx2(const double*, double, double*, const double*, double, double*,
                           int32_t*, int64_t) noexcept;
int64_t collect_direct_avx2(const int64_t*, const float*, int64_t, int64_t, const uint64_t*,
                            const uint32_t*, const int64_t*, int64_t*, double&) noexcept;
#endif
#if defined(SEMCBIR_HAVE_AVX512)
int64_t row_distances_avx512(const double*, double, double*, const double*, double, double*,
                             int32_t*, int64_t) noexcept;
int64_t collect_direct_avx512(const int64_t*, const float*, int64_t, int64_t, const uint64_t*,
                              const uint32_t*, const int64_t*, int64_t*, double&) noexcept;
#endif

namespace {

// The tail (n % width queries) of the SIMD row-distance kernels, from query t on, m entered
// so far.
[[maybe_unused]] inline int64_t row_distances_tail(const double* qn, double dj, double* a,
                                                   const double* worst, double slack,
                                                   double* d2s, int32_t* enter, int64_t t,
                                                   int64_t n, int64_t m) noexcept {
    for (; t < n; ++t) {
        const double s = qn[t] + dj;
        const double d2 = std::max(0.0, s - 2.0 * a[t]);
        a[t] = 0.0;
        if (d2 - slack * s < worst[t]) {
            d2s[t] = d2;
            enter[m++] = static_cast<int32_t>(t);
        }
    }
    return m;
}

// The body of every collect_direct_<isa> (see CollectDirectFn); popcount64 is the POPCNT
// instruction in the AVX2 / AVX-512 files and SWAR in the scalar one.
[[maybe_unused]] inline int64_t collect_direct_body(const int64_t* indices, const float* data,
                                                    int64_t rb, int64_t re,
                                                    const uint64_t* bits, const uint32_t* rank,
                                                    const int64_t* start, int64_t* cand,
                                                    double& dj) noexcept {
    int64_t nc = 0;
    double norm = 0.0;
    for (int64_t e = rb; e < re; ++e) {
        const double v = static_cast<double>(data[e]);
        norm += v * v;
        const uint64_t f = static_cast<uint64_t>(indices[e]);
        const uint64_t word = bits[f >> 6];
        const int64_t hit = static_cast<int64_t>((word >> (f & 63)) & 1u);
        const uint64_t below = word & ((uint64_t{1} << (f & 63)) - 1);
        const int64_t sl = static_cast<int64_t>(rank[f >> 6]) + popcount64(below);
        SEMCBIR_PREFETCH(start + sl * hit);  // misses all touch start[0]
        cand[nc] = e;  // kept only when hit (nc <= 2 (e - rb): in bounds)
        cand[nc + 1] = sl;
        nc += 2 * hit;
    }
    dj = norm;
    return nc;
}

}  // namespace
}  // namespace semcbir::detail
