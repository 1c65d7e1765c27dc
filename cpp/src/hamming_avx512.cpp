// AVX-512 kernel (compiled with -mavx512f -mavx512bw -mavx512vpopcntdq): VPOPCNTQ on 64-byte
// chunks, masked loads for the tail, four queries share each database load.
#include <immintrin.h>

#include <cstring>

#include "hamming_kernels.hpp"

namespace semcbir::detail {
namespace {

inline __m512i load(const uint8_t* p) noexcept { return _mm512_loadu_si512(p); }
inline __m512i load_masked(const uint8_t* p, __mmask64 m) noexcept {
    return _mm512_maskz_loadu_epi8(m, p);
}
// Word k of a code, broadcast to all eight lanes.
inline __m512i word(const uint8_t* p, int k) noexcept {
    long long v;
    std::memcpy(&v, p + 8 * k, 8);
    return _mm512_set1_epi64(v);
}
inline __m512i pc(__m512i a, __m512i b) noexcept {
    return _mm512_popcnt_epi64(_mm512_xor_si512(a, b));
}

// 32-byte (256-bit) codes. Eight database rows are loaded as four registers and transposed
// once into T_w = word w of the eight rows; then every query costs four XOR + VPOPCNTQ and
// three adds per eight rows, with no horizontal reduction. Rows come out in the order
// 0,2,1,3,4,6,5,7, undone by one permutation before the store.
void tile_width32(const uint8_t* q, int64_t nq, int64_t q_stride, const uint8_t* db, int64_t n,
                  int64_t db_stride, int32_t* out, int64_t out_stride) noexcept {
    const __m256i order = _mm256_setr_epi32(0, 2, 1, 3, 4, 6, 5, 7);
    auto pair = [db_stride](const uint8_t* d) {  // rows d, d + stride -> one register
        if (db_stride == 32) return _mm512_loadu_si512(d);
        return _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d))),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + db_stride)), 1);
    };
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const uint8_t* d = db + j * db_stride;
        const char* ahead = reinterpret_cast<const char*>(d + 64 * db_stride);  // 2 KB ahead
        _mm_prefetch(ahead, _MM_HINT_T0);
        _mm_prefetch(ahead + 64, _MM_HINT_T0);
        _mm_prefetch(ahead + 128, _MM_HINT_T0);
        _mm_prefetch(ahead + 192, _MM_HINT_T0);
        const __m512i l0 = pair(d), l1 = pair(d + 2 * db_stride);
        const __m512i l2 = pair(d + 4 * db_stride), l3 = pair(d + 6 * db_stride);
        const __m512i lo01 = _mm512_unpacklo_epi64(l0, l1), hi01 = _mm512_unpackhi_epi64(l0, l1);
        const __m512i lo23 = _mm512_unpacklo_epi64(l2, l3), hi23 = _mm512_unpackhi_epi64(l2, l3);
        const __m512i t0 = _mm512_shuffle_i64x2(lo01, lo23, _MM_SHUFFLE(2, 0, 2, 0));
        const __m512i t2 = _mm512_shuffle_i64x2(lo01, lo23, _MM_SHUFFLE(3, 1, 3, 1));
        const __m512i t1 = _mm512_shuffle_i64x2(hi01, hi23, _MM_SHUFFLE(2, 0, 2, 0));
        const __m512i t3 = _mm512_shuffle_i64x2(hi01, hi23, _MM_SHUFFLE(3, 1, 3, 1));
        for (int64_t i = 0; i < nq; ++i) {
            const uint8_t* qi = q + i * q_stride;
            __m512i s = _mm512_popcnt_epi64(_mm512_xor_si512(t0, word(qi, 0)));
            s = _mm512_add_epi64(s, _mm512_popcnt_epi64(_mm512_xor_si512(t1, word(qi, 1))));
            s = _mm512_add_epi64(s, _mm512_popcnt_epi64(_mm512_xor_si512(t2, word(qi, 2))));
            s = _mm512_add_epi64(s, _mm512_popcnt_epi64(_mm512_xor_si512(t3, word(qi, 3))));
            const __m256i sums = _mm256_permutevar8x32_epi32(_mm512_cvtepi64_epi32(s), order);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i * out_stride + j), sums);
        }
    }
    for (; j < n; ++j) {
        const __m256i dv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(db + j * db_stride));
        for (int64_t i = 0; i < nq; ++i) {
            const __m256i x = _mm256_xor_si256(
                dv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i * q_stride)));
            out[i * out_stride + j] = static_cast<int32_t>(
                _mm512_reduce_add_epi64(_mm512_popcnt_epi64(_mm512_zextsi256_si512(x))));
        }
    }
}

}  // namespace

void hamming_tile_avx512(const uint8_t* q, int64_t nq, int64_t q_stride, const uint8_t* db,
                         int64_t n, int64_t db_stride, int64_t width, int32_t* out,
                         int64_t out_stride) noexcept {
    if (width == 32) {
        tile_width32(q, nq, q_stride, db, n, db_stride, out, out_stride);
        return;
    }
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

int64_t find_below_avx512(const int32_t* d, int64_t n, int32_t threshold) noexcept {
    const __m512i thr = _mm512_set1_epi32(threshold);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __mmask16 m = _mm512_cmplt_epi32_mask(_mm512_loadu_si512(d + i), thr);
        if (m) return i + _tzcnt_u32(m);
    }
    if (i < n) {
        const __mmask16 live = static_cast<__mmask16>((1u << (n - i)) - 1);
        const __mmask16 m = _mm512_mask_cmplt_epi32_mask(live, _mm512_maskz_loadu_epi32(live, d + i), thr);
        if (m) return i + _tzcnt_u32(m);
    }
    return n;
}

}  // namespace semcbir::detail
