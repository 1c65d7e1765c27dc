// AVX2 kernel (compiled with -mavx2 -mpopcnt): nibble-lookup popcount (vpshufb) summed with
// vpsadbw for long codes, POPCNT on 64-bit words for the tail. Four queries share each
// database load.
#include <immintrin.h>

#include "hamming_kernels.hpp"
#include "popcount.hpp"

namespace semcbir::detail {
namespace {

inline __m256i popcount_bytes(__m256i v) noexcept {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0F);
    const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
    const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    return _mm256_add_epi8(lo, hi);  // each byte <= 8
}

inline int64_t hsum(__m256i acc) noexcept {
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

inline int64_t tail(const uint8_t* a, const uint8_t* b, int64_t from, int64_t width) noexcept {
    int64_t acc = 0, w = from;
    for (; w + 8 <= width; w += 8)
        acc += popcount64(load_u64(a + w) ^ load_u64(b + w));
    if (w < width) acc += popcount64(tail_xor(a + w, b + w, width - w));
    return acc;
}

inline __m256i load(const uint8_t* p) noexcept {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

}  // namespace

void hamming_tile_avx2(const uint8_t* q, int64_t nq, int64_t q_stride, const uint8_t* db,
                       int64_t n, int64_t db_stride, int64_t width, int32_t* out,
                       int64_t out_stride) noexcept {
    const int64_t vec_end = width / 32 * 32;
    const __m256i zero = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 4 <= nq; i += 4) {
        const uint8_t* q0 = q + i * q_stride;
        const uint8_t* q1 = q0 + q_stride;
        const uint8_t* q2 = q1 + q_stride;
        const uint8_t* q3 = q2 + q_stride;
        for (int64_t j = 0; j < n; ++j) {
            const uint8_t* d = db + j * db_stride;
            __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
            for (int64_t w = 0; w < vec_end; w += 32) {
                const __m256i dv = load(d + w);
                a0 = _mm256_add_epi64(a0, _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(dv, load(q0 + w))), zero));
                a1 = _mm256_add_epi64(a1, _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(dv, load(q1 + w))), zero));
                a2 = _mm256_add_epi64(a2, _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(dv, load(q2 + w))), zero));
                a3 = _mm256_add_epi64(a3, _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(dv, load(q3 + w))), zero));
            }
            out[(i + 0) * out_stride + j] = static_cast<int32_t>(hsum(a0) + tail(q0, d, vec_end, width));
            out[(i + 1) * out_stride + j] = static_cast<int32_t>(hsum(a1) + tail(q1, d, vec_end, width));
            out[(i + 2) * out_stride + j] = static_cast<int32_t>(hsum(a2) + tail(q2, d, vec_end, width));
            out[(i + 3) * out_stride + j] = static_cast<int32_t>(hsum(a3) + tail(q3, d, vec_end, width));
        }
    }
    for (; i < nq; ++i) {
        const uint8_t* qi = q + i * q_stride;
        int32_t* oi = out + i * out_stride;
        if (width <= 64) {  // short codes: POPCNT on words beats the vector path
            for (int64_t j = 0; j < n; ++j) oi[j] = static_cast<int32_t>(tail(qi, db + j * db_stride, 0, width));
            continue;
        }
        for (int64_t j = 0; j < n; ++j) {
            const uint8_t* d = db + j * db_stride;
            __m256i a = zero;
            for (int64_t w = 0; w < vec_end; w += 32)
                a = _mm256_add_epi64(a, _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(load(d + w), load(qi + w))), zero));
            oi[j] = static_cast<int32_t>(hsum(a) + tail(qi, d, vec_end, width));
        }
    }
}

int64_t find_below_avx2(const int32_t* d, int64_t n, int32_t threshold) noexcept {
    const __m256i thr = _mm256_set1_epi32(threshold);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + i));
        const int mask = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(thr, v)));
        if (mask) return i + _tzcnt_u32(static_cast<unsigned>(mask));
    }
    for (; i < n; ++i)
        if (d[i] < threshold) return i;
    return n;
}

}  // namespace semcbir::detail
