// Internal to the sparse phrase-matrix search (phrase.cpp): the per-ISA row-distance
// kernels. Everything shared is inline with internal linkage, so that a copy compiled with
// AVX-512 flags can never be picked by the linker for the portable code.
#pragma once

#include <algorithm>
#include <cstdint>

namespace semcbir::detail {

/// Distances of one database row to the n queries of a block, and the queries whose heap
/// takes the row: d2s[t] = max(0, (qn[t] + dj) - 2 a[t]) (the double operations of the
/// scalar search, so the same value), a[t] reset to 0, and every t with d2s[t] < worst[t]
/// appended to `enter` in ascending order (d2s is only written for those). Returns how many.
using RowDistancesFn = int64_t (*)(const double* qn, double dj, double* a, const double* worst,
                                   double* d2s, int32_t* enter, int64_t n);

#if defined(SEMCBIR_HAVE_AVX2)
int64_t row_distances_avx2(const double* qn, double dj, double* a, const double* worst,
                           double* d2s, int32_t* enter, int64_t n);
#endif
#if defined(SEMCBIR_HAVE_AVX512)
int64_t row_distances_avx512(const double* qn, double dj, double* a, const double* worst,
                             double* d2s, int32_t* enter, int64_t n);
#endif

namespace {

// The tail (n % width queries) of the SIMD kernels, from query t on, m entered so far.
[[maybe_unused]] inline int64_t row_distances_tail(const double* qn, double dj, double* a,
                                                   const double* worst, double* d2s,
                                                   int32_t* enter, int64_t t, int64_t n,
                                                   int64_t m) {
    for (; t < n; ++t) {
        const double d2 = std::max(0.0, qn[t] + dj - 2.0 * a[t]);
        a[t] = 0.0;
        if (d2 < worst[t]) {
            d2s[t] = d2;
            enter[m++] = static_cast<int32_t>(t);
        }
    }
    return m;
}

}  // namespace
}  // namespace semcbir::detail
