// Internal to the sparse SBS search (sparse_sbs.cpp): the forward-scan kernel, one copy per
// instruction set (sparse_sbs_scalar.cpp, sparse_sbs_avx2.cpp, sparse_sbs_avx512.cpp), each
// compiled with its file's flags from the one template below (the lane loops vectorise: uint8
// weights widened into 16- or 32-bit lanes, one lane per query).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512BW__)
#include <immintrin.h>
#endif

namespace semcbir::detail {

/// Forward scan of `lanes` queries (16, 32 or 64) over rows [0, n) of sparse codes:
///   out[g * out_stride + i] = pq[g] + pop[i] - 2 * sum over the entries e of row i of
///                             table[(slot[e >> 2] * 4 + (e & 3)) * lanes + g].
/// Entries are uint16 (wide = false) or uint32; `offsets` has n + 1 values (absolute).
/// narrow_acc: every sum fits in 16 bits (codes of at most 65535 bits).
using SparseScanFn = void (*)(const void* entries, bool wide, const int64_t* offsets,
                              const int32_t* pop, int64_t n, const uint32_t* slot,
                              const uint8_t* table, int lanes, bool narrow_acc, const int32_t* pq,
                              int32_t* out, int64_t out_stride) noexcept;

void sparse_scan_scalar(const void*, bool, const int64_t*, const int32_t*, int64_t,
                        const uint32_t*, const uint8_t*, int, bool, const int32_t*, int32_t*,
                        int64_t) noexcept;
#if defined(SEMCBIR_HAVE_AVX2)
void sparse_scan_avx2(const void*, bool, const int64_t*, const int32_t*, int64_t,
                      const uint32_t*, const uint8_t*, int, bool, const int32_t*, int32_t*,
                      int64_t) noexcept;
#endif
#if defined(SEMCBIR_HAVE_AVX512)
void sparse_scan_avx512(const void*, bool, const int64_t*, const int32_t*, int64_t,
                        const uint32_t*, const uint8_t*, int, bool, const int32_t*, int32_t*,
                        int64_t) noexcept;
#endif

/// Most hot columns summed in one uint8 pass (a weight is at most 5: 51 * 5 = 255).
constexpr int kMaxHotPass = 51;

/// Sum of `ncols` (<= kMaxHotPass) 2-bit code columns of one block, each through its own
/// 16-entry weight table (tables + 16 * c; only entries 0..3 are read), q = quarter rows:
///   acc[s * q + j] = sum over c of table_c[(cols[c][j] >> 2 s) & 3]   (s = 0..3, j < q)
/// acc (4 * q bytes) is overwritten.
using HotSumFn = void (*)(const uint8_t* const* cols, const uint8_t* tables, int ncols,
                          int64_t q, uint8_t* acc) noexcept;

void hot_sum_scalar(const uint8_t* const*, const uint8_t*, int, int64_t, uint8_t*) noexcept;
#if defined(SEMCBIR_HAVE_AVX2)
void hot_sum_avx2(const uint8_t* const*, const uint8_t*, int, int64_t, uint8_t*) noexcept;
#endif
#if defined(SEMCBIR_HAVE_AVX512)
void hot_sum_avx512(const uint8_t* const*, const uint8_t*, int, int64_t, uint8_t*) noexcept;
#endif

namespace {

// The hot-column body, with byte shuffles: columns in groups of kHotStreams (so that few
// memory streams run at once), 64 (AVX-512) or 32 (AVX2) bytes of each column per step, each
// of the four 2-bit codes of a byte looked up with one byte shuffle (the table in every
// 128-bit lane), the sums of a group kept in registers and added to acc; a scalar loop for
// the rest.
constexpr int kHotStreams = 8;

#if defined(__AVX512BW__)
#define SEMCBIR_HOT_STEP 64
using HotVec = __m512i;
inline HotVec hot_load(const uint8_t* p) noexcept { return _mm512_loadu_si512(p); }
inline void hot_store(uint8_t* p, HotVec v) noexcept { _mm512_storeu_si512(p, v); }
inline HotVec hot_zero() noexcept { return _mm512_setzero_si512(); }
inline HotVec hot_table(const uint8_t* t) noexcept {
    return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
}
inline HotVec hot_add(HotVec a, HotVec b) noexcept { return _mm512_add_epi8(a, b); }
template <int S>
inline HotVec hot_look(HotVec t, HotVec v) noexcept {
    const HotVec codes = S == 0 ? v : _mm512_srli_epi16(v, 2 * S);
    return _mm512_shuffle_epi8(t, _mm512_and_si512(codes, _mm512_set1_epi8(3)));
}
#elif defined(__AVX2__)
#define SEMCBIR_HOT_STEP 32
using HotVec = __m256i;
inline HotVec hot_load(const uint8_t* p) noexcept {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
inline void hot_store(uint8_t* p, HotVec v) noexcept {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
}
inline HotVec hot_zero() noexcept { return _mm256_setzero_si256(); }
inline HotVec hot_table(const uint8_t* t) noexcept {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
}
inline HotVec hot_add(HotVec a, HotVec b) noexcept { return _mm256_add_epi8(a, b); }
template <int S>
inline HotVec hot_look(HotVec t, HotVec v) noexcept {
    const HotVec codes = S == 0 ? v : _mm256_srli_epi16(v, 2 * S);
    return _mm256_shuffle_epi8(t, _mm256_and_si256(codes, _mm256_set1_epi8(3)));
}
#endif

#if !defined(SEMCBIR_HOT_STEP)
// Without byte shuffles: per column a 256-entry table of the four weights of a byte's codes,
// packed in the bytes of a uint32 (a sum of at most kMaxHotPass weights never carries into
// the next byte), so that a byte of a column costs one lookup and one add.
inline void hot_sum_any(const uint8_t* const* cols, const uint8_t* tables, int ncols, int64_t q,
                        uint8_t* acc) noexcept {
    constexpr int64_t kChunk = 2048;
    uint32_t sum[kChunk];
    uint32_t packed[256];
    for (int64_t j0 = 0; j0 < q; j0 += kChunk) {
        const int64_t jn = q - j0 < kChunk ? q - j0 : kChunk;
        std::memset(sum, 0, static_cast<size_t>(jn) * sizeof(uint32_t));
        for (int c = 0; c < ncols; ++c) {
            const uint8_t* t = tables + 16 * c;
            for (unsigned v = 0; v < 256; ++v)
                packed[v] = uint32_t{t[v & 3u]} | uint32_t{t[(v >> 2) & 3u]} << 8 |
                            uint32_t{t[(v >> 4) & 3u]} << 16 | uint32_t{t[v >> 6]} << 24;
            const uint8_t* col = cols[c] + j0;
            for (int64_t j = 0; j < jn; ++j) sum[j] += packed[col[j]];
        }
        for (int64_t j = 0; j < jn; ++j)
            for (int s = 0; s < 4; ++s)
                acc[s * q + j0 + j] = static_cast<uint8_t>(sum[j] >> (8 * s));
    }
}
#else
inline void hot_sum_any(const uint8_t* const* cols, const uint8_t* tables, int ncols, int64_t q,
                        uint8_t* acc) noexcept {
    for (int c0 = 0; c0 < ncols || c0 == 0; c0 += kHotStreams) {
        const int c1 = ncols < c0 + kHotStreams ? ncols : c0 + kHotStreams;
        const bool first = c0 == 0;
        int64_t j = 0;
        for (; j + SEMCBIR_HOT_STEP <= q; j += SEMCBIR_HOT_STEP) {
            HotVec a0 = first ? hot_zero() : hot_load(acc + j);
            HotVec a1 = first ? hot_zero() : hot_load(acc + q + j);
            HotVec a2 = first ? hot_zero() : hot_load(acc + 2 * q + j);
            HotVec a3 = first ? hot_zero() : hot_load(acc + 3 * q + j);
            for (int c = c0; c < c1; ++c) {
                const HotVec t = hot_table(tables + 16 * c);
                const HotVec v = hot_load(cols[c] + j);
                a0 = hot_add(a0, hot_look<0>(t, v));
                a1 = hot_add(a1, hot_look<1>(t, v));
                a2 = hot_add(a2, hot_look<2>(t, v));
                a3 = hot_add(a3, hot_look<3>(t, v));
            }
            hot_store(acc + j, a0);
            hot_store(acc + q + j, a1);
            hot_store(acc + 2 * q + j, a2);
            hot_store(acc + 3 * q + j, a3);
        }
        for (; j < q; ++j) {  // the last bytes of each column
            unsigned a[4];
            for (int s = 0; s < 4; ++s) a[s] = first ? 0u : acc[s * q + j];
            for (int c = c0; c < c1; ++c) {
                const unsigned v = cols[c][j];
                for (int s = 0; s < 4; ++s) a[s] += tables[16 * c + ((v >> (2 * s)) & 3u)];
            }
            for (int s = 0; s < 4; ++s) acc[s * q + j] = static_cast<uint8_t>(a[s]);
        }
    }
}
#endif
#undef SEMCBIR_HOT_STEP

// The kernel body; included by each per-ISA file (internal linkage: one copy per file, built
// with that file's flags). GCC and Clang: the L accumulators are one vector value (vector
// extensions), so that they stay in registers (a plain lane loop was scalarised by GCC 12,
// 16 byte loads and adds per entry); elsewhere the plain loop.
#if defined(__GNUC__) || defined(__clang__)
template <int L, class E, class Acc>
inline void sparse_scan_rows(const E* entries, const int64_t* offsets, const int32_t* pop,
                             int64_t n, const uint32_t* slot, const uint8_t* table,
                             const int32_t* pq, int32_t* out, int64_t out_stride) noexcept {
    typedef Acc AccVec __attribute__((vector_size(L * sizeof(Acc))));
    typedef uint8_t WeightVec __attribute__((vector_size(L)));
    for (int64_t i = 0; i < n; ++i) {
        AccVec acc = {};
        const E* p = entries + offsets[i];
        const E* end = entries + offsets[i + 1];
        for (; p < end; ++p) {
            const uint32_t e = *p;
            WeightVec w;
            std::memcpy(&w, table + (static_cast<uint64_t>(slot[e >> 2]) * 4 + (e & 3u)) * L, L);
            acc += __builtin_convertvector(w, AccVec);
        }
        const int32_t base = pop[i];
        for (int g = 0; g < L; ++g)
            out[g * out_stride + i] = pq[g] + base - 2 * static_cast<int32_t>(acc[g]);
    }
}
#else
template <int L, class E, class Acc>
inline void sparse_scan_rows(const E* entries, const int64_t* offsets, const int32_t* pop,
                             int64_t n, const uint32_t* slot, const uint8_t* table,
                             const int32_t* pq, int32_t* out, int64_t out_stride) noexcept {
    for (int64_t i = 0; i < n; ++i) {
        Acc acc[L];
        for (int g = 0; g < L; ++g) acc[g] = 0;
        const E* p = entries + offsets[i];
        const E* end = entries + offsets[i + 1];
        for (; p < end; ++p) {
            const uint32_t e = *p;
            const uint8_t* w = table + (static_cast<uint64_t>(slot[e >> 2]) * 4 + (e & 3u)) * L;
            for (int g = 0; g < L; ++g) acc[g] = static_cast<Acc>(acc[g] + w[g]);
        }
        const int32_t base = pop[i];
        for (int g = 0; g < L; ++g)
            out[g * out_stride + i] = pq[g] + base - 2 * static_cast<int32_t>(acc[g]);
    }
}
#endif

template <class E, class Acc>
inline void sparse_scan_lanes(const E* entries, const int64_t* offsets, const int32_t* pop,
                              int64_t n, const uint32_t* slot, const uint8_t* table, int lanes,
                              const int32_t* pq, int32_t* out, int64_t out_stride) noexcept {
    if (lanes == 16)
        sparse_scan_rows<16, E, Acc>(entries, offsets, pop, n, slot, table, pq, out, out_stride);
    else if (lanes == 32)
        sparse_scan_rows<32, E, Acc>(entries, offsets, pop, n, slot, table, pq, out, out_stride);
    else
        sparse_scan_rows<64, E, Acc>(entries, offsets, pop, n, slot, table, pq, out, out_stride);
}

template <class E>
inline void sparse_scan_entries(const E* entries, const int64_t* offsets, const int32_t* pop,
                                int64_t n, const uint32_t* slot, const uint8_t* table, int lanes,
                                bool narrow_acc, const int32_t* pq, int32_t* out,
                                int64_t out_stride) noexcept {
    if (narrow_acc)
        sparse_scan_lanes<E, uint16_t>(entries, offsets, pop, n, slot, table, lanes, pq, out,
                                       out_stride);
    else
        sparse_scan_lanes<E, uint32_t>(entries, offsets, pop, n, slot, table, lanes, pq, out,
                                       out_stride);
}

inline void sparse_scan_any(const void* entries, bool wide, const int64_t* offsets,
                            const int32_t* pop, int64_t n, const uint32_t* slot,
                            const uint8_t* table, int lanes, bool narrow_acc, const int32_t* pq,
                            int32_t* out, int64_t out_stride) noexcept {
    if (wide)
        sparse_scan_entries(static_cast<const uint32_t*>(entries), offsets, pop, n, slot, table,
                            lanes, narrow_acc, pq, out, out_stride);
    else
        sparse_scan_entries(static_cast<const uint16_t*>(entries), offsets, pop, n, slot, table,
                            lanes, narrow_acc, pq, out, out_stride);
}

}  // namespace
}  // namespace semcbir::detail

/// Defines the kernels `name` (SparseScanFn) and `hot` (HotSumFn) of one per-ISA file from the
/// bodies above.
#define SEMCBIR_DEFINE_SPARSE_SCAN(name, hot)                                                 \
    namespace semcbir::detail {                                                              \
    void hot(const uint8_t* const* cols, const uint8_t* tables, int ncols, int64_t q,         \
             uint8_t* acc) noexcept {                                                         \
        hot_sum_any(cols, tables, ncols, q, acc);                                             \
    }                                                                                         \
    void name(const void* entries, bool wide, const int64_t* offsets, const int32_t* pop,     \
              int64_t n, const uint32_t* slot, const uint8_t* table, int lanes,               \
              bool narrow_acc, const int32_t* pq, int32_t* out, int64_t out_stride) noexcept { \
        sparse_scan_any(entries, wide, offsets, pop, n, slot, table, lanes, narrow_acc, pq,   \
                        out, out_stride);                                                     \
    }                                                                                         \
    }
