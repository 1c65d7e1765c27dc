// Sparse matrices in CSR form: the phrase matrices of SBoVP (SPEC.md section 3) and the inputs
// of the sparse L2 search. One image = one row.
//
// Canonical form: indptr[0] == 0, indptr non-decreasing, column indices in [0, cols) and
// strictly increasing inside a row, values finite.
#pragma once

#include <cstdint>
#include <vector>

namespace semcbir {

/// A CSR matrix owned by C++ (the output of phrase building).
struct SparseRows {
    std::vector<int64_t> indptr;   // rows + 1
    std::vector<int64_t> indices;  // nnz, strictly increasing per row
    std::vector<float> data;       // nnz
};

/// A read-only CSR view (the inputs of the search).
struct CsrView {
    const int64_t* indptr = nullptr;   // rows + 1, indptr[0] == 0, non-decreasing
    const int64_t* indices = nullptr;  // nnz, in [0, cols), strictly increasing per row
    const float* data = nullptr;       // nnz, finite
    int64_t rows = 0;
    int64_t cols = 0;
};

/// Throws std::invalid_argument (naming `name`) unless `m` is a canonical CSR matrix.
void validate_csr(const CsrView& m, const char* name);

}  // namespace semcbir
