// Exact L2 top-k search between the rows of sparse CSR matrices (the SBoVP phrase matrices of
// SPEC.md section 3, or any canonical CSR matrices, see csr.hpp).
#pragma once

#include <cstdint>
#include <memory>

#include "semcbir/csr.hpp"

namespace semcbir {

/// A database of sparse rows prepared for exact L2 search: squared norms and an inverted
/// index (posting list of every column: rows ascending, float32 values). The column space is
/// addressed directly, or through a hash map when it is much larger than the non-zeros
/// (semantic words). Built once (validating the database), searched many times; immutable,
/// so concurrent searches are safe; copies of it share the data.
class SparseL2Index {
public:
    struct Impl;

    explicit SparseL2Index(const CsrView& database, int threads = 0);

    int64_t rows() const noexcept;
    int64_t cols() const noexcept;
    int64_t nnz() const noexcept;

    /// Top-k of every query row: see sparse_l2_topk. Validates the queries first.
    void search(const CsrView& queries, int64_t k, float* distances, int64_t* ids,
                int threads) const;

private:
    std::shared_ptr<const Impl> impl_;
};

/// Exact L2 top-k between the rows of `queries` and of `database` (same number of columns).
/// distances/ids are queries.rows x k: distances = sqrt of the squared L2 distance (computed
/// in double as |q|^2 + |d|^2 - 2 q.d, clamped at 0, rounded to float32), each row sorted by
/// ascending squared distance, ties broken by the smaller id; missing slots (k > database.rows)
/// hold id -1 and distance +infinity. Validates both matrices first. One-shot strategy: when
/// every worker's queries fit in at most two blocks of 2^20 / min(k, N) queries, the queries
/// are transposed (counting sort by column, a rank bitmap or hash map over the columns) and
/// the database rows are streamed once per block (with few queries and several threads the
/// workers split the database rows and merge their heaps); otherwise a SparseL2Index is built.
/// All paths give bit-identical results (same summation order, same tie rule).
void sparse_l2_topk(const CsrView& queries, const CsrView& database, int64_t k,
                    float* distances, int64_t* ids, int threads);

}  // namespace semcbir
