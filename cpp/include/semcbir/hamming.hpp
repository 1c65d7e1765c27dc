// Hamming distances between packed binary codes and exact top-k search (SPEC.md section 2).
#pragma once

#include <cstdint>

namespace semcbir {

/// A row-major matrix of n codes of `width` bytes each, rows `stride` bytes apart.
struct CodeMatrix {
    const uint8_t* data = nullptr;
    int64_t n = 0;
    int64_t width = 0;
    int64_t stride = 0;
};

/// Distance kernel: out[i * out_stride + j] = popcount(q_i xor d_j) for i < nq, j < n.
using HammingTileFn = void (*)(const uint8_t* q, int64_t nq, int64_t q_stride, const uint8_t* db,
                               int64_t n, int64_t db_stride, int64_t width, int32_t* out,
                               int64_t out_stride) noexcept;

void hamming_tile_scalar(const uint8_t*, int64_t, int64_t, const uint8_t*, int64_t, int64_t,
                         int64_t, int32_t*, int64_t) noexcept;
#if defined(SEMCBIR_HAVE_AVX2)
void hamming_tile_avx2(const uint8_t*, int64_t, int64_t, const uint8_t*, int64_t, int64_t,
                       int64_t, int32_t*, int64_t) noexcept;
#endif
#if defined(SEMCBIR_HAVE_AVX512)
void hamming_tile_avx512(const uint8_t*, int64_t, int64_t, const uint8_t*, int64_t, int64_t,
                         int64_t, int32_t*, int64_t) noexcept;
#endif

/// Selection helper: index of the first d[i] < threshold in [0, n), or n.
using FindBelowFn = int64_t (*)(const int32_t* d, int64_t n, int32_t threshold) noexcept;

int64_t find_below_scalar(const int32_t*, int64_t, int32_t) noexcept;
#if defined(SEMCBIR_HAVE_AVX2)
int64_t find_below_avx2(const int32_t*, int64_t, int32_t) noexcept;
#endif
#if defined(SEMCBIR_HAVE_AVX512)
int64_t find_below_avx512(const int32_t*, int64_t, int32_t) noexcept;
#endif

/// The kernels of the active ISA level.
HammingTileFn active_hamming_tile() noexcept;
FindBelowFn active_find_below() noexcept;

/// Full distance matrix, out is a.n x b.n int32 (row-major).
void hamming_distances(const CodeMatrix& a, const CodeMatrix& b, int32_t* out, int threads);

/// Exact k nearest codes for every query: distances ascending, ties by smaller id,
/// missing slots (k > n) hold id -1 and distance INT32_MAX. Outputs are nq x k.
void hamming_topk(const CodeMatrix& queries, const CodeMatrix& database, int64_t k,
                  int32_t* distances, int64_t* ids, int threads);

}  // namespace semcbir
