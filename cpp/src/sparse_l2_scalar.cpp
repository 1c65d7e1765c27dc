// Portable kernels of the sparse L2 search (this file is built without extra ISA flags: the
// popcount is SWAR).
#include <algorithm>

#include "sparse_l2_kernels.hpp"

namespace semcbir::detail {

int64_t row_distances_scalar(const double* qn, double dj, double* a, const double* worst,
                             double slack, double* d2s, int32_t* enter, int64_t n) noexcept {
    int64_t m = 0;
    for (int64_t t0 = 0; t0 < n; t0 += 16) {
        const int64_t t1 = std::min(n, t0 + 16);
        bool any = false;
        for (int64_t t = t0; t < t1; ++t) {
            const double s = qn[t] + dj;
            const double d2 = std::max(0.0, s - 2.0 * a[t]);
            d2s[t] = d2;
            a[t] = 0.0;
            any |= d2 - slack * s < worst[t];
        }
        if (!any) continue;
        for (int64_t t = t0; t < t1; ++t)
            if (d2s[t] - slack * (qn[t] + dj) < worst[t]) enter[m++] = static_cast<int32_t>(t);
    }
    return m;
}

int64_t collect_direct_scalar(const int64_t* indices, const float* data, int64_t rb, int64_t re,
                              const uint64_t* bits, const uint32_t* rank, const int64_t* start,
                              int64_t* cand, double& dj) noexcept {
    return collect_direct_body(indices, data, rb, re, bits, rank, start, cand, dj);
}

}  // namespace semcbir::detail
