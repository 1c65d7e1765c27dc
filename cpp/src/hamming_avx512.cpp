// AVX-512 kernel (compiled with -mavx512f -mavx512bw -mavx512vpopcntdq): VPOPCNTQ on 64-byte
// chunks, masked loads for the tail, four queries share each database load.
#include <immintrin.h>

#include "semcbir/hamming.hpp"

namespace semcbir {
namespace {

inline __m512i load(const uint8_t* p) noexcept { return _mm512_loadu_si512(p); }
inline __m512i load_masked(const uint8_t* p, __mmask64 m) noexcept {
    return _mm512_maskz_loadu_epi8(m, p);
}
inline __m512i pc(__m512i a, __m512i b) noexcept {
    return _mm512_popcnt_epi64(_mm512_xor_si512(a, b));
}

}  // namespace

void hamming_tile_avx512(const uint8_t* q, int64_t nq, int64_t q_stride, const uint8_t* db,
                         int64_t n, int64_t db_stride, int64_t width, int32_t* out,
                         int64_t out_stride) noexcept {
    const int64_t vec_end = width / 64 * 64;
    const int64_t rem = width - vec_end;
    const __mmask64 tail_mask = rem ? (~0ULL >> (64 - rem)) : 0;
    int64_t i = 0;
    for (; i + 4 <= nq; i += 4) {
        const uint8_t* q0 = q + i * q_stride;
        const uint8_t* q1 = q0 + q_stride;
        const uint8_t* q2 = q1 + q_stride;
        const uint8_t* q3 = q2 + q_stride;
        for (int64_t j = 0; j < n; ++j) {
            const uint8_t* d = db + j * db_stride;
            __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t w = 0; w < vec_end; w += 64) {
                const __m512i dv = load(d + w);
                a0 = _mm512_add_epi64(a0, pc(dv, load(q0 + w)));
                a1 = _mm512_add_epi64(a1, pc(dv, load(q1 + w)));
                a2 = _mm512_add_epi64(a2, pc(dv, load(q2 + w)));
                a3 = _mm512_add_epi64(a3, pc(dv, load(q3 + w)));
            }
            if (rem) {
                const __m512i dv = load_masked(d + vec_end, tail_mask);
                a0 = _mm512_add_epi64(a0, pc(dv, load_masked(q0 + vec_end, tail_mask)));
                a1 = _mm512_add_epi64(a1, pc(dv, load_masked(q1 + vec_end, tail_mask)));
                a2 = _mm512_add_epi64(a2, pc(dv, load_masked(q2 + vec_end, tail_mask)));
                a3 = _mm512_add_epi64(a3, pc(dv, load_masked(q3 + vec_end, tail_mask)));
            }
            out[(i + 0) * out_stride + j] = static_cast<int32_t>(_mm512_reduce_add_epi64(a0));
            out[(i + 1) * out_stride + j] = static_cast<int32_t>(_mm512_reduce_add_epi64(a1));
            out[(i + 2) * out_stride + j] = static_cast<int32_t>(_mm512_reduce_add_epi64(a2));
            out[(i + 3) * out_stride + j] = static_cast<int32_t>(_mm512_reduce_add_epi64(a3));
        }
    }
    for (; i < nq; ++i) {
        const uint8_t* qi = q + i * q_stride;
        int32_t* oi = out + i * out_stride;
        if (width <= 64) {  // one masked load per row
            const __m512i qv = load_masked(qi, width == 64 ? ~0ULL : tail_mask);
            const __mmask64 m = width == 64 ? ~0ULL : tail_mask;
            int64_t j = 0;
            for (; j < n; ++j)
                oi[j] = static_cast<int32_t>(
                    _mm512_reduce_add_epi64(pc(qv, load_masked(db + j * db_stride, m))));
            continue;
        }
        for (int64_t j = 0; j < n; ++j) {
            const uint8_t* d = db + j * db_stride;
            __m512i a = _mm512_setzero_si512(), b = a;
            int64_t w = 0;
            for (; w + 128 <= vec_end; w += 128) {  // two accumulators hide the add latency
                a = _mm512_add_epi64(a, pc(load(d + w), load(qi + w)));
                b = _mm512_add_epi64(b, pc(load(d + w + 64), load(qi + w + 64)));
            }
            for (; w < vec_end; w += 64) a = _mm512_add_epi64(a, pc(load(d + w), load(qi + w)));
            if (rem) a = _mm512_add_epi64(a, pc(load_masked(d + vec_end, tail_mask), load_masked(qi + vec_end, tail_mask)));
            oi[j] = static_cast<int32_t>(_mm512_reduce_add_epi64(_mm512_add_epi64(a, b)));
        }
    }
}

}  // namespace semcbir
