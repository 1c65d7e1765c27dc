// SBoVP phrase building (SPEC.md section 3): exact k-NN inside semantic regions and pair
// accumulation into one sparse phrase-matrix row per image.
#include "semcbir/phrase.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "semcbir/parallel.hpp"

namespace semcbir {

namespace {

struct Neighbour {
    double d2;
    int64_t idx;  // keypoint index in the image
};

inline bool closer(double da, int64_t ia, double db, int64_t ib) noexcept {
    return da < db || (da == db && ia < ib);
}

// Reused per worker: region members sorted by x, and the pairs of the current image.
struct PhraseWorkspace {
    std::vector<int64_t> order;     // keypoints of the image with class >= 0, by (class, index)
    std::vector<int64_t> by_x;      // one region's keypoints sorted by (x, index)
    std::vector<double> xs, ys;     // coordinates in by_x order
    std::vector<int64_t> pairs;     // linear indices i * L + j of every pair of every phrase
};

// The kk nearest members of a region to member `pos` (positions in by_x order), by
// (squared distance, keypoint index). Sweeps outwards in x and stops when dx^2 alone exceeds
// the current k-th distance. `best` gets kk entries, closest first.
void region_knn(const PhraseWorkspace& ws, int64_t m, int64_t pos, int kk,
                Neighbour* best) noexcept {
    const double x0 = ws.xs[static_cast<size_t>(pos)];
    const double y0 = ws.ys[static_cast<size_t>(pos)];
    int have = 0;
    auto offer = [&](int64_t q) noexcept {
        const double dx = ws.xs[static_cast<size_t>(q)] - x0;
        const double dy = ws.ys[static_cast<size_t>(q)] - y0;
        const double d2 = dx * dx + dy * dy;
        const int64_t idx = ws.by_x[static_cast<size_t>(q)];
        if (have == kk && !closer(d2, idx, best[kk - 1].d2, best[kk - 1].idx)) return;
        int i = have < kk ? have++ : kk - 1;
        while (i > 0 && closer(d2, idx, best[i - 1].d2, best[i - 1].idx)) {
            best[i] = best[i - 1];
            --i;
        }
        best[i] = Neighbour{d2, idx};
    };
    int64_t lo = pos - 1, hi = pos + 1;
    bool lo_open = lo >= 0, hi_open = hi < m;
    while (lo_open || hi_open) {
        if (lo_open) {
            const double dx = x0 - ws.xs[static_cast<size_t>(lo)];
            if (have == kk && dx * dx > best[kk - 1].d2) {
                lo_open = false;
            } else {
                offer(lo);
                lo_open = --lo >= 0;
            }
        }
        if (hi_open) {
            const double dx = ws.xs[static_cast<size_t>(hi)] - x0;
            if (have == kk && dx * dx > best[kk - 1].d2) {
                hi_open = false;
            } else {
                offer(hi);
                hi_open = ++hi < m;
            }
        }
    }
}

// Pairs of all phrases of one image into ws.pairs (unsorted).
void image_pairs(const KeypointSet& img, int64_t vocab, int phrase_len, PhraseWorkspace& ws) {
    ws.pairs.clear();
    ws.order.clear();
    for (int64_t p = 0; p < img.n; ++p)
        if (img.classes[p] >= 0) ws.order.push_back(p);
    std::stable_sort(ws.order.begin(), ws.order.end(), [&](int64_t a, int64_t b) {
        return img.classes[a] < img.classes[b];
    });
    Neighbour best[kMaxPhraseLength];
    int32_t words[kMaxPhraseLength];
    const int64_t total = static_cast<int64_t>(ws.order.size());
    for (int64_t start = 0; start < total;) {
        const int32_t cls = img.classes[ws.order[static_cast<size_t>(start)]];
        int64_t end = start + 1;
        while (end < total && img.classes[ws.order[static_cast<size_t>(end)]] == cls) ++end;
        const int64_t m = end - start;
        if (m >= 2) {
            ws.by_x.assign(ws.order.begin() + start, ws.order.begin() + end);
            std::sort(ws.by_x.begin(), ws.by_x.end(), [&](int64_t a, int64_t b) {
                const float xa = img.xy[2 * a], xb = img.xy[2 * b];
                return xa < xb || (xa == xb && a < b);
            });
            ws.xs.resize(static_cast<size_t>(m));
            ws.ys.resize(static_cast<size_t>(m));
            for (int64_t q = 0; q < m; ++q) {
                const int64_t p = ws.by_x[static_cast<size_t>(q)];
                ws.xs[static_cast<size_t>(q)] = static_cast<double>(img.xy[2 * p]);
                ws.ys[static_cast<size_t>(q)] = static_cast<double>(img.xy[2 * p + 1]);
            }
            const int kk = static_cast<int>(std::min<int64_t>(phrase_len - 1, m - 1));
            for (int64_t q = 0; q < m; ++q) {
                region_knn(ws, m, q, kk, best);
                words[0] = img.words[ws.by_x[static_cast<size_t>(q)]];
                for (int t = 0; t < kk; ++t) words[t + 1] = img.words[best[t].idx];
                for (int a = 0; a <= kk; ++a)
                    for (int b = a + 1; b <= kk; ++b) {
                        const int64_t i = std::min(words[a], words[b]);
                        const int64_t j = std::max(words[a], words[b]);
                        ws.pairs.push_back(i * vocab + j);
                    }
            }
        }
        start = end;
    }
    std::sort(ws.pairs.begin(), ws.pairs.end());
}

// Run-length encode the sorted pairs into (indices, counts).
void run_lengths(const std::vector<int64_t>& pairs, std::vector<int64_t>& idx,
                 std::vector<float>& cnt) {
    idx.clear();
    cnt.clear();
    for (size_t s = 0; s < pairs.size();) {
        size_t e = s + 1;
        while (e < pairs.size() && pairs[e] == pairs[s]) ++e;
        idx.push_back(pairs[s]);
        cnt.push_back(static_cast<float>(e - s));
        s = e;
    }
}

}  // namespace

void validate_keypoints(const KeypointSet* images, int64_t n_images, int64_t vocab_size,
                        int64_t phrase_len) {
    if (vocab_size < 1 || vocab_size > std::numeric_limits<int32_t>::max())
        throw std::invalid_argument("vocab_size must be in [1, 2^31 - 1], got " +
                                    std::to_string(vocab_size));
    if (phrase_len < 2 || phrase_len > kMaxPhraseLength)
        throw std::invalid_argument("n (phrase length) must be in [2, " +
                                    std::to_string(kMaxPhraseLength) + "], got " +
                                    std::to_string(phrase_len));
    if (n_images < 0) throw std::invalid_argument("n_images must be >= 0");
    for (int64_t i = 0; i < n_images; ++i) {
        const KeypointSet& img = images[i];
        const std::string where = "image " + std::to_string(i);
        if (img.n < 0) throw std::invalid_argument(where + ": negative keypoint count");
        if (img.n > 0 && (!img.xy || !img.words || !img.classes))
            throw std::invalid_argument(where + ": missing keypoint arrays");
        for (int64_t p = 0; p < img.n; ++p) {
            if (img.words[p] < 0 || img.words[p] >= vocab_size)
                throw std::invalid_argument(
                    where + ": word " + std::to_string(img.words[p]) + " of keypoint " +
                    std::to_string(p) + " is outside [0, " + std::to_string(vocab_size) +
                    "); words must come from a vocabulary of that size");
            if (!std::isfinite(img.xy[2 * p]) || !std::isfinite(img.xy[2 * p + 1]))
                throw std::invalid_argument(where + ": keypoint " + std::to_string(p) +
                                            " has a non-finite coordinate");
        }
    }
}

SparseRows build_phrase_matrices(const KeypointSet* images, int64_t n_images,
                                 int64_t vocab_size, int64_t phrase_len, int threads) {
    validate_keypoints(images, n_images, vocab_size, phrase_len);
    std::vector<std::vector<int64_t>> idx(static_cast<size_t>(n_images));
    std::vector<std::vector<float>> cnt(static_cast<size_t>(n_images));
    int64_t keypoints = 0;
    for (int64_t i = 0; i < n_images; ++i) keypoints += images[i].n;
    // About 20k keypoints per worker before a thread pays for itself.
    const int64_t by_work = std::max<int64_t>(1, keypoints / 20000 + 1);
    const int workers = static_cast<int>(std::min<int64_t>(resolve_threads(threads), by_work));
    parallel_chunks(n_images, workers, [&](int, int64_t begin, int64_t end) {
        PhraseWorkspace ws;
        for (int64_t i = begin; i < end; ++i) {
            image_pairs(images[i], vocab_size, static_cast<int>(phrase_len), ws);
            run_lengths(ws.pairs, idx[static_cast<size_t>(i)], cnt[static_cast<size_t>(i)]);
        }
    });
    SparseRows out;
    out.indptr.assign(static_cast<size_t>(n_images + 1), 0);
    for (int64_t i = 0; i < n_images; ++i)
        out.indptr[static_cast<size_t>(i + 1)] =
            out.indptr[static_cast<size_t>(i)] + static_cast<int64_t>(idx[static_cast<size_t>(i)].size());
    out.indices.reserve(static_cast<size_t>(out.indptr.back()));
    out.data.reserve(static_cast<size_t>(out.indptr.back()));
    for (int64_t i = 0; i < n_images; ++i) {
        out.indices.insert(out.indices.end(), idx[static_cast<size_t>(i)].begin(), idx[static_cast<size_t>(i)].end());
        out.data.insert(out.data.end(), cnt[static_cast<size_t>(i)].begin(), cnt[static_cast<size_t>(i)].end());
    }
    return out;
}
}  // namespace semcbir
