// Internal to the CSR validation (csr.cpp) and the sparse L2 search, which checks the database
// row by row while it streams it (one pass over the rows instead of two).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "semcbir/csr.hpp"

namespace semcbir::detail {

/// Shape, indptr (all of it: it bounds every read of the rows) and the array pointers.
void check_csr_shape(const CsrView& m, const std::string& who);

/// The first error of a row that failed csr_row_ok.
[[noreturn]] void throw_row_error(const CsrView& m, int64_t r, const std::string& who);

namespace {

// Fast branch-free check of row r (after check_csr_shape) with 64- and 32-bit adds, shifts and
// ors only, a loop the compiler vectorises. Sign bit of `bad`: a column outside [0, cols)
// (c < 0, or c - cols does not wrap) or not above its predecessor (the difference is exact
// when both are in range; otherwise the range test already failed); bit 31 of `bad_exp`: an
// all-ones float exponent (inf or NaN). Internal linkage, like every helper shared between
// files: only portable files include it.
inline bool csr_row_ok(const CsrView& m, int64_t r) noexcept {
    const int64_t b = m.indptr[r], e = m.indptr[r + 1];
    if (b == e) return true;
    const uint64_t cols = static_cast<uint64_t>(m.cols);
    const int64_t* idx = m.indices;
    const float* data = m.data;
    const uint64_t c0 = static_cast<uint64_t>(idx[b]);
    uint64_t bad = c0 | ~(c0 - cols);
    uint32_t bad_exp = 0;
    for (int64_t t = b + 1; t < e; ++t) {
        const uint64_t c = static_cast<uint64_t>(idx[t]);
        bad |= c | ~(c - cols) | (c - static_cast<uint64_t>(idx[t - 1]) - 1u);
    }
    for (int64_t t = b; t < e; ++t) {
        uint32_t bits;
        std::memcpy(&bits, data + t, sizeof bits);
        bad_exp |= (bits & 0x7F800000u) + 0x00800000u;
    }
    return !(bad >> 63) && !(bad_exp >> 31);
}

}  // namespace
}  // namespace semcbir::detail
