// AVX-512 kernels of the sparse L2 search (compiled with AVX-512 flags only, POPCNT
// included; picked at run time through the dispatch table).
#include <immintrin.h>

#include "sparse_l2_kernels.hpp"

namespace semcbir::detail {

// max(x, +0) is std::max(0.0, x): x > 0 ? x : +0, also for x = -0 (maskz_max: the plain
// AVX-512 intrinsic trips a GCC 12 header warning).
int64_t row_distances_avx512(const double* qn, double dj, double* a, const double* worst,
                             double slack, double* d2s, int32_t* enter, int64_t n) noexcept {
    const __m512d djv = _mm512_set1_pd(dj);
    const __m512d slackv = _mm512_set1_pd(slack);
    const __m512d zero = _mm512_setzero_pd();
    int64_t m = 0, t = 0;
    for (; t + 16 <= n; t += 16) {
        const __m512d a0 = _mm512_loadu_pd(a + t), a1 = _mm512_loadu_pd(a + t + 8);
        const __m512d s0 = _mm512_add_pd(_mm512_loadu_pd(qn + t), djv);
        const __m512d s1 = _mm512_add_pd(_mm512_loadu_pd(qn + t + 8), djv);
        const __m512d d0 =
            _mm512_maskz_max_pd(0xFF, _mm512_sub_pd(s0, _mm512_add_pd(a0, a0)), zero);
        const __m512d d1 =
            _mm512_maskz_max_pd(0xFF, _mm512_sub_pd(s1, _mm512_add_pd(a1, a1)), zero);
        const __m512d l0 = _mm512_sub_pd(d0, _mm512_mul_pd(slackv, s0));
        const __m512d l1 = _mm512_sub_pd(d1, _mm512_mul_pd(slackv, s1));
        _mm512_storeu_pd(a + t, zero);
        _mm512_storeu_pd(a + t + 8, zero);
        unsigned mask =
            static_cast<unsigned>(_mm512_cmp_pd_mask(l0, _mm512_loadu_pd(worst + t), _CMP_LT_OQ)) |
            (static_cast<unsigned>(_mm512_cmp_pd_mask(l1, _mm512_loadu_pd(worst + t + 8),
                                                      _CMP_LT_OQ))
             << 8);
        if (mask) {
            _mm512_storeu_pd(d2s + t, d0);
            _mm512_storeu_pd(d2s + t + 8, d1);
            for (; mask; mask &= mask - 1)
                enter[m++] = static_cast<int32_t>(t + __builtin_ctz(mask));
        }
    }
    return row_distances_tail(qn, dj, a, worst, slack, d2s, enter, t, n, m);
}

int64_t collect_direct_avx512(const int64_t* indices, const float* data, int64_t rb, int64_t re,
                              const uint64_t* bits, const uint32_t* rank, const int64_t* start,
                              int64_t* cand, double& dj) noexcept {
    return collect_direct_body(indices, data, rb, re, bits, rank, start, cand, dj);
}

}  // namespace semcbir::detail
