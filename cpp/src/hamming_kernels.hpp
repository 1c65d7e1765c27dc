// Internal to the Hamming search (hamming.cpp): the per-ISA kernels, one file per instruction
// set (hamming_scalar.cpp, hamming_avx2.cpp, hamming_avx512.cpp), picked through the dispatch
// table (dispatch.hpp).
#pragma once

#include <cstdint>

namespace semcbir::detail {

/// Distance kernel: out[i * out_stride + j] = popcount(q_i xor d_j) for i < nq, j < n.
using HammingTileFn = void (*)(const uint8_t* q, int64_t nq, int64_t q_stride, const uint8_t* db,
                               int64_t n, int64_t db_stride, int64_t width, int32_t* out,
                               int64_t out_stride) noexcept;

/// Selection helper: index of the first d[i] < threshold in [0, n), or n.
using FindBelowFn = int64_t (*)(const int32_t* d, int64_t n, int32_t threshold) noexcept;

void hamming_tile_scalar(const uint8_t*, int64_t, int64_t, const uint8_t*, int64_t, int64_t,
                         int64_t, int32_t*, int64_t) noexcept;
int64_t find_below_scalar(const int32_t*, int64_t, int32_t) noexcept;
#if defined(SEMCBIR_HAVE_AVX2)
void hamming_tile_avx2(const uint8_t*, int64_t, int64_t, const uint8_t*, int64_t, int64_t,
                       int64_t, int32_t*, int64_t) noexcept;
int64_t find_below_avx2(const int32_t*, int64_t, int32_t) noexcept;
#endif
#if defined(SEMCBIR_HAVE_AVX512)
void hamming_tile_avx512(const uint8_t*, int64_t, int64_t, const uint8_t*, int64_t, int64_t,
                         int64_t, int32_t*, int64_t) noexcept;
int64_t find_below_avx512(const int32_t*, int64_t, int32_t) noexcept;
#endif

}  // namespace semcbir::detail
