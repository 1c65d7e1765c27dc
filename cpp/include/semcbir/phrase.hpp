// Semantic Bag of Visual Phrases (SPEC.md section 3): phrase building inside semantic regions,
// sparse upper-triangular phrase matrices, and exact L2 top-k search between them.
//
// Sparse layout (one image = one row of a CSR matrix):
//   column index = i * L + j with 0 <= i <= j < L (row-major index into the full L x L matrix;
//   only upper-triangle entries ever occur), L = vocabulary size; value = float32 count
//   (or a normalised value). Indices are strictly increasing inside a row.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace semcbir {

/// The keypoints of one image. `classes[p] < 0` marks a void keypoint (in no region).
struct KeypointSet {
    const float* xy = nullptr;        // n x 2, row-major (x, y) in pixels
    const int32_t* words = nullptr;   // n, visual word of each keypoint, in [0, L)
    const int32_t* classes = nullptr; // n, semantic class of each keypoint; < 0 = void
    int64_t n = 0;
};

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

/// Largest phrase length accepted by the core (SPEC allows 2..4; the Python API checks that).
constexpr int kMaxPhraseLength = 16;

/// Throws std::invalid_argument unless vocab_size is in [1, 2^31 - 1], phrase_len in
/// [2, kMaxPhraseLength], and every keypoint has finite xy and a word in [0, vocab_size).
void validate_keypoints(const KeypointSet* images, int64_t n_images, int64_t vocab_size,
                        int phrase_len);

/// Phrase matrices of a batch of images (validated first, then built in parallel).
///
/// Per image: keypoints are grouped by class (void ones skipped). Inside a region of m
/// keypoints each keypoint p is linked to its min(n - 1, m - 1) nearest other keypoints of the
/// region (exact search, squared L2 on xy computed in double, ties broken by the smaller
/// keypoint index); phrase = (word of p, words of its neighbours). A region with one keypoint
/// makes no phrase; a region with fewer than n keypoints makes shorter phrases. For each
/// phrase and every unordered pair of its positions {a, b}:
/// H[min(w_a, w_b), max(w_a, w_b)] += 1.
SparseRows build_phrase_matrices(const KeypointSet* images, int64_t n_images,
                                 int64_t vocab_size, int phrase_len, int threads);

/// Throws std::invalid_argument (naming `name`) unless `m` is a canonical CSR matrix.
void validate_csr(const CsrView& m, const char* name);

/// A database of sparse rows prepared for exact L2 search: squared norms and an inverted
/// index (posting list of every column: rows ascending, float32 values). The column space is
/// addressed directly, or through a hash map when it is much larger than the non-zeros
/// (semantic words). Built once (validating the database), searched many times; immutable,
/// so concurrent searches are safe; copies of it share the data.
class PhraseIndex {
public:
    struct Impl;

    explicit PhraseIndex(const CsrView& database, int threads = 0);

    int64_t rows() const noexcept;
    int64_t cols() const noexcept;
    int64_t nnz() const noexcept;

    /// Top-k of every query row: see phrase_l2_topk. Validates the queries first.
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
/// workers split the database rows and merge their heaps); otherwise a PhraseIndex is built.
/// All paths give bit-identical results (same summation order, same tie rule).
void phrase_l2_topk(const CsrView& queries, const CsrView& database, int64_t k, float* distances,
                    int64_t* ids, int threads);

}  // namespace semcbir
