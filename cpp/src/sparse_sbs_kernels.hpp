// Internal to the sparse SBS search (sparse_sbs.cpp): the forward-scan kernel, one copy per
// instruction set (sparse_sbs_scalar.cpp, sparse_sbs_avx2.cpp, sparse_sbs_avx512.cpp), each
// compiled with its file's flags from the one template below (the lane loops vectorise: uint8
// weights widened into 16- or 32-bit lanes, one lane per query).
#pragma once

#include <cstdint>
#include <cstring>

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

namespace {

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

/// Defines the kernel `name` of one per-ISA file (SparseScanFn) from the template above.
#define SEMCBIR_DEFINE_SPARSE_SCAN(name)                                                      \
    namespace semcbir::detail {                                                              \
    void name(const void* entries, bool wide, const int64_t* offsets, const int32_t* pop,     \
              int64_t n, const uint32_t* slot, const uint8_t* table, int lanes,               \
              bool narrow_acc, const int32_t* pq, int32_t* out, int64_t out_stride) noexcept { \
        sparse_scan_any(entries, wide, offsets, pop, n, slot, table, lanes, narrow_acc, pq,   \
                        out, out_stride);                                                     \
    }                                                                                         \
    }
