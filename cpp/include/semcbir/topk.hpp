// Bounded top-k selection shared by every search (Hamming, sparse SBS, sparse L2): keeps the k smallest
// (distance, id) pairs, ordered by distance, then by the smaller id, and writes them out as one
// sorted, padded result row.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace semcbir {

/// Largest k of a search (results per query). A larger k could only add padding (k > N
/// slots hold id -1), yet its output would be allocated: it is refused instead.
constexpr int64_t kMaxK = int64_t{1} << 24;

/// Most result slots (queries x k) one search call returns (3 GiB of int32/float32 distances
/// and int64 ids); more queries are searched in several calls.
constexpr int64_t kMaxResultSlots = int64_t{1} << 28;

/// Throws std::invalid_argument unless 1 <= k <= kMaxK and nq * k <= kMaxResultSlots (the
/// Python package checks the same, with the same messages, before calling the core).
inline void check_topk_size(int64_t nq, int64_t k) {
    if (k < 1) throw std::invalid_argument("k must be >= 1, got " + std::to_string(k));
    if (k > kMaxK)
        throw std::invalid_argument("k must be <= " + std::to_string(kMaxK) +
                                    " (results per query), got " + std::to_string(k));
    if (nq < 0) throw std::invalid_argument("number of queries must be >= 0");
    if (nq > kMaxResultSlots / k)
        throw std::invalid_argument(
            "queries x k = " + std::to_string(nq) + " x " + std::to_string(k) +
            " result slots exceed the maximum of " + std::to_string(kMaxResultSlots) +
            " per call; search at most " + std::to_string(kMaxResultSlots / k) +
            " queries at a time");
}

/// (da, ia) ranks before (db, ib): smaller distance, ties by the smaller id.
template <class D>
inline bool ranks_before(D da, int64_t ia, D db, int64_t ib) noexcept {
    return da < db || (da == db && ia < ib);
}

/// Max-heap over caller-owned arrays of capacity k; the root is the current k-th pair.
template <class D>
class TopK {
public:
    TopK(D* d, int64_t* id, int64_t k) noexcept : d_(d), id_(id), k_(k) {}

    int64_t size() const noexcept { return size_; }
    bool full() const noexcept { return size_ == k_; }
    /// The k-th smallest pair's distance so far (valid when size() > 0).
    D worst() const noexcept { return d_[0]; }
    const D* distances() const noexcept { return d_; }
    const int64_t* ids() const noexcept { return id_; }

    /// Offers a pair; when ids arrive in ascending order, a pair equal to the worst never enters.
    void push(D d, int64_t id) noexcept {
        if (size_ < k_) {
            int64_t i = size_++;
            while (i > 0) {  // sift up
                const int64_t parent = (i - 1) / 2;
                if (!ranks_before(d_[parent], id_[parent], d, id)) break;
                d_[i] = d_[parent];
                id_[i] = id_[parent];
                i = parent;
            }
            d_[i] = d;
            id_[i] = id;
            return;
        }
        if (!ranks_before(d, id, d_[0], id_[0])) return;
        int64_t i = 0;
        for (;;) {  // sift the new pair down from the root
            const int64_t l = 2 * i + 1;
            if (l >= k_) break;
            int64_t c = l;
            if (l + 1 < k_ && ranks_before(d_[c], id_[c], d_[l + 1], id_[l + 1])) c = l + 1;
            if (!ranks_before(d, id, d_[c], id_[c])) break;
            d_[i] = d_[c];
            id_[i] = id_[c];
            i = c;
        }
        d_[i] = d;
        id_[i] = id;
    }

private:
    D* d_;
    int64_t* id_;
    int64_t k_;
    int64_t size_ = 0;
};

/// Heaps of capacity kk for nq queries in each of `workers` workers that split a database,
/// merged per query afterwards. Worker w calls heaps(w) once, fills them, then keep(w, ...);
/// workers touch only their own storage, so they may run concurrently.
template <class D>
class WorkerHeaps {
public:
    WorkerHeaps(int workers, int64_t nq, int64_t kk)
        : nq_(nq), kk_(kk), d_(static_cast<size_t>(workers)), id_(static_cast<size_t>(workers)),
          size_(static_cast<size_t>(workers)) {}

    /// Worker w's heaps, one per query (allocated here, owned by this object).
    std::vector<TopK<D>> heaps(int w) {
        auto& d = d_[static_cast<size_t>(w)];
        auto& id = id_[static_cast<size_t>(w)];
        d.resize(static_cast<size_t>(nq_ * kk_));
        id.resize(static_cast<size_t>(nq_ * kk_));
        std::vector<TopK<D>> out;
        out.reserve(static_cast<size_t>(nq_));
        for (int64_t q = 0; q < nq_; ++q) out.emplace_back(d.data() + q * kk_, id.data() + q * kk_, kk_);
        return out;
    }

    /// Records how many pairs each of worker w's heaps holds.
    void keep(int w, const std::vector<TopK<D>>& heaps) {
        auto& sz = size_[static_cast<size_t>(w)];
        sz.resize(static_cast<size_t>(nq_));
        for (int64_t q = 0; q < nq_; ++q) sz[static_cast<size_t>(q)] = heaps[static_cast<size_t>(q)].size();
    }

    /// Offers query q's pairs of every worker (that ran) to `merged`.
    void merge_into(int64_t q, TopK<D>& merged) const {
        for (size_t w = 0; w < size_.size(); ++w) {
            const auto& sz = size_[w];
            if (sz.empty()) continue;
            for (int64_t e = 0; e < sz[static_cast<size_t>(q)]; ++e)
                merged.push(d_[w][static_cast<size_t>(q * kk_ + e)], id_[w][static_cast<size_t>(q * kk_ + e)]);
        }
    }

private:
    int64_t nq_, kk_;
    std::vector<std::vector<D>> d_;
    std::vector<std::vector<int64_t>> id_;
    std::vector<std::vector<int64_t>> size_;
};

/// Writes one result row of k slots: the pairs (d[t], id[t]), t < size (any order, ids
/// distinct), sorted by (distance, id); slot t < min(size, k) gets (convert(distance), id),
/// the slots after it (missing, -1). `scratch` is reused between calls.
template <class D, class Out, class Convert>
void write_sorted_row(const D* d, const int64_t* id, int64_t size, int64_t k, Convert convert,
                      Out missing, std::vector<std::pair<D, int64_t>>& scratch, Out* out_d,
                      int64_t* out_id) {
    scratch.clear();
    for (int64_t t = 0; t < size; ++t) scratch.emplace_back(d[t], id[t]);
    std::sort(scratch.begin(), scratch.end());
    const int64_t have = std::min(size, k);
    for (int64_t t = 0; t < have; ++t) {
        out_d[t] = convert(scratch[static_cast<size_t>(t)].first);
        out_id[t] = scratch[static_cast<size_t>(t)].second;
    }
    for (int64_t t = have; t < k; ++t) {
        out_d[t] = missing;
        out_id[t] = -1;
    }
}

}  // namespace semcbir
