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

/// Full distance matrix, out is a.n x b.n int32 (row-major).
void hamming_distances(const CodeMatrix& a, const CodeMatrix& b, int32_t* out, int threads);

/// Exact k nearest codes for every query: distances ascending, ties by smaller id,
/// missing slots (k > n) hold id -1 and distance INT32_MAX. Outputs are nq x k.
void hamming_topk(const CodeMatrix& queries, const CodeMatrix& database, int64_t k,
                  int32_t* distances, int64_t* ids, int threads);

}  // namespace semcbir
