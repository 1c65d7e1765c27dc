// Semantic Bag of Visual Phrases (SPEC.md section 3): phrase building inside semantic regions
// into sparse upper-triangular phrase matrices (searched with sparse_l2.hpp).
//
// Sparse layout (one image = one row of a CSR matrix, see csr.hpp):
//   column index = i * L + j with 0 <= i <= j < L (row-major index into the full L x L matrix;
//   only upper-triangle entries ever occur), L = vocabulary size; value = float32 count
//   (or a normalised value). Indices are strictly increasing inside a row.
#pragma once

#include <cstdint>

#include "semcbir/csr.hpp"

namespace semcbir {

/// The keypoints of one image. `classes[p] < 0` marks a void keypoint (in no region).
struct KeypointSet {
    const float* xy = nullptr;        // n x 2, row-major (x, y) in pixels
    const int32_t* words = nullptr;   // n, visual word of each keypoint, in [0, L)
    const int32_t* classes = nullptr; // n, semantic class of each keypoint; < 0 = void
    int64_t n = 0;
};

/// Largest phrase length accepted by the core (SPEC allows 2..4; the Python API checks that).
constexpr int kMaxPhraseLength = 16;

/// Throws std::invalid_argument unless vocab_size is in [1, 2^31 - 1], phrase_len in
/// [2, kMaxPhraseLength], and every keypoint has finite xy and a word in [0, vocab_size).
void validate_keypoints(const KeypointSet* images, int64_t n_images, int64_t vocab_size,
                        int64_t phrase_len);

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
                                 int64_t vocab_size, int64_t phrase_len, int threads);

}  // namespace semcbir
