// AVX2 kernels of the sparse L2 search (compiled with AVX2 flags only, POPCNT
// included; picked at run time through the dispatch table).
#include <immintrin.h>

#include "sparse_l2_kernels.hpp"

namespace semcbir::detail {

int64_t row_distances_avx2(const double* qn, double dj, double* a, const double* worst,
                           double slack, double* d2s, int32_t* enter, int64_t n) noexcept {
    const __m256d djv = _mm256_set1_pd(dj);
    const __m256d slackv = _mm256_set1_pd(slack);
    const __m256d zero = _mm256_setzero_pd();
    int64_t m = 0, t = 0;
    for (; t + 8 <= n; t += 8) {
        const __m256d a0 = _mm256_loadu_pd(a + t), a1 = _mm256_loadu_pd(a + t + 4);
        const __m256d s0 = _mm256_add_pd(_mm256_loadu_pd(qn + t), djv);
        const __m256d s1 = _mm256_add_pd(_mm256_loadu_pd(qn + t + 4), djv);
        const __m256d d0 = _mm256_max_pd(_mm256_sub_pd(s0, _mm256_add_pd(a0, a0)), zero);
        const __m256d d1 = _mm256_max_pd(_mm256_sub_pd(s1, _mm256_add_pd(a1, a1)), zero);
        const __m256d l0 = _mm256_sub_pd(d0, _mm256_mul_pd(slackv, s0));
        const __m256d l1 = _mm256_sub_pd(d1, _mm256_mul_pd(slackv, s1));
        _mm256_storeu_pd(a + t, zero);
        _mm256_storeu_pd(a + t + 4, zero);
        unsigned mask = static_cast<unsigned>(
            _mm256_movemask_pd(_mm256_cmp_pd(l0, _mm256_loadu_pd(worst + t), _CMP_LT_OQ)) |
            (_mm256_movemask_pd(_mm256_cmp_pd(l1, _mm256_loadu_pd(worst + t + 4), _CMP_LT_OQ))
             << 4));
        if (mask) {
            _mm256_storeu_pd(d2s + t, d0);
            _mm256_storeu_pd(d2s + t + 4, d1);
            for (; mask; mask &= mask - 1)
                enter[m++] = static_cast<int32_t>(t + __builtin_ctz(mask));
        }
    }
    return row_distances_tail(qn, dj, a, worst, slack, d2s, enter, t, n, m);
}

int64_t collect_direct_avx2(const int64_t* indices, const float* data, int64_t rb, int64_t re,
                            const uint64_t* bits, const uint32_t* rank, const int64_t* start,
                            int64_t* cand, double& dj) noexcept {
    return collect_direct_body(indices, data, rb, re, bits, rank, start, cand, dj);
}

}  // namespace semcbir::detail
