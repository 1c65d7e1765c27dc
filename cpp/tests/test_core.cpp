// C++-side randomized checks of the core against naive implementations written here, for
// every ISA level this CPU supports. Built with -DSEMCBIR_BUILD_TESTS=ON (and meant to run
// under -DSEMCBIR_SANITIZE=ON: ASan + UBSan); `ctest` runs it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "semcbir/csr.hpp"
#include "semcbir/hamming.hpp"
#include "semcbir/isa.hpp"
#include "semcbir/parallel.hpp"
#include "semcbir/phrase.hpp"
#include "semcbir/sbs.hpp"
#include "semcbir/sparse_l2.hpp"
#include "semcbir/sparse_sbs.hpp"
#include "semcbir/topk.hpp"

using namespace semcbir;

static int failures = 0;
#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            ++failures;                                          \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);                   \
            std::fprintf(stderr, "\n");                          \
        }                                                        \
    } while (0)

// Naive SBS: per pixel, per level, straight from SPEC section 1.
static std::vector<uint8_t> naive_sbs(const std::vector<int64_t>& lab, int64_t h, int64_t w,
                                      int64_t m, int levels, bool pyramid, bool has_ignore,
                                      int64_t ignore, int64_t stride) {
    std::vector<uint8_t> out(static_cast<size_t>(stride), 0);
    int64_t offset = 0;
    for (int l = pyramid ? 0 : levels; l <= levels; ++l) {
        const int64_t g = int64_t{1} << l, nb = g * g;
        std::vector<int64_t> cnt(static_cast<size_t>(nb * m), 0), tot(static_cast<size_t>(nb), 0);
        for (int64_t y = 0; y < h; ++y)
            for (int64_t x = 0; x < w; ++x) {
                const int64_t v = lab[static_cast<size_t>(y * w + x)];
                if (v < 0 || v >= m || (has_ignore && v == ignore)) continue;
                int64_t by = 0, bx = 0;
                while (!((by * h / g) <= y && y < ((by + 1) * h / g))) ++by;
                while (!((bx * w / g) <= x && x < ((bx + 1) * w / g))) ++bx;
                cnt[static_cast<size_t>((by * g + bx) * m + v)]++;
                tot[static_cast<size_t>(by * g + bx)]++;
            }
        for (int64_t b = 0; b < nb; ++b)
            for (int64_t c = 0; c < m; ++c) {
                const int64_t n = cnt[static_cast<size_t>(b * m + c)];
                if (!n) continue;
                const double p = double(n) / double(tot[static_cast<size_t>(b)]);
                const int lv = p <= 0.25 ? 1 : p <= 0.5 ? 2 : p <= 0.75 ? 3 : 4;
                auto set = [&](int64_t i) { out[static_cast<size_t>(i / 8)] |= uint8_t(0x80 >> (i % 8)); };
                set(offset + b * m + c);
                for (int t = 0; t < lv; ++t) set(offset + m * nb + (b * m + c) * 4 + t);
            }
        offset += 5 * m * nb;
    }
    return out;
}

// wide: maps wider than the encoder's column table (2^16 columns), whose row counters
// follow the block columns along each row instead.
template <class T>
static void check_encoder(std::mt19937_64& rng, LabelType type, bool wide_maps = false) {
    for (int trial = 0; trial < (wide_maps ? 6 : 60); ++trial) {
        const int64_t h = wide_maps ? 1 + rng() % 3 : 1 + rng() % 70;
        const int64_t w = wide_maps ? 65537 + rng() % 5000 : 1 + rng() % 70;
        const int64_t m = 1 + rng() % 20;
        const int levels = static_cast<int>(rng() % 5);
        const bool pyramid = rng() % 2, has_ignore = rng() % 2;
        const int64_t ignore = static_cast<int64_t>(rng() % 5);
        std::vector<T> lab(static_cast<size_t>(h * w));
        std::vector<int64_t> wide(lab.size());
        T cur = 0;
        for (size_t i = 0; i < lab.size(); ++i) {
            if (rng() % 4 == 0) {  // runs of equal labels, with void values mixed in
                int64_t v = static_cast<int64_t>(rng() % (m + 3));
                if (std::is_signed<T>::value && rng() % 7 == 0) v = -1 - static_cast<int64_t>(rng() % 3);
                cur = static_cast<T>(v);
            }
            lab[i] = cur;
            wide[i] = std::is_signed<T>::value ? static_cast<int64_t>(cur)
                                               : static_cast<int64_t>(static_cast<uint64_t>(cur));
        }
        const SbsLayout layout = make_sbs_layout(m, levels, pyramid);
        std::vector<uint8_t> got(static_cast<size_t>(layout.stride));
        LabelMap map{lab.data(), type, h, w};
        SbsWorkspace ws;
        encode_sbs(map, layout, VoidRule{has_ignore, ignore}, got.data(), ws);
        const auto want = naive_sbs(wide, h, w, m, levels, pyramid, has_ignore, ignore, layout.stride);
        CHECK(got == want, "encode h=%lld w=%lld m=%lld levels=%d pyramid=%d",
              (long long)h, (long long)w, (long long)m, levels, int(pyramid));
        encode_sbs(map, layout, VoidRule{has_ignore, ignore}, got.data(), ws);  // workspace reuse
        CHECK(got == want, "encode (reused workspace) h=%lld w=%lld", (long long)h, (long long)w);
    }
}

static int naive_hamming(const uint8_t* a, const uint8_t* b, int64_t width) {
    int d = 0;
    for (int64_t i = 0; i < width; ++i)
        for (int bit = 0; bit < 8; ++bit) d += ((a[i] ^ b[i]) >> bit) & 1;
    return d;
}

static void check_hamming(std::mt19937_64& rng) {
    const int64_t widths[] = {1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 127, 128, 200, 6000};
    for (int64_t width : widths) {
        const int64_t nq = 1 + rng() % 9, n = 1 + rng() % 41;
        std::vector<uint8_t> q(static_cast<size_t>(nq * width)), d(static_cast<size_t>(n * width));
        for (auto& x : q) x = static_cast<uint8_t>(rng());
        for (auto& x : d) x = static_cast<uint8_t>(rng() % 4 ? rng() : 0);
        if (n > 3) std::copy(d.begin(), d.begin() + width, d.begin() + 2 * width);  // a tie
        std::vector<int32_t> want(static_cast<size_t>(nq * n));
        for (int64_t i = 0; i < nq; ++i)
            for (int64_t j = 0; j < n; ++j)
                want[static_cast<size_t>(i * n + j)] = naive_hamming(&q[static_cast<size_t>(i * width)], &d[static_cast<size_t>(j * width)], width);
        const CodeMatrix cq{q.data(), nq, width, width}, cd{d.data(), n, width, width};
        for (Isa isa : supported_isas()) {
            set_active_isa(isa);
            for (int threads : {1, 2, 3}) {
                std::vector<int32_t> got(want.size(), -7);
                hamming_distances(cq, cd, got.data(), threads);
                CHECK(got == want, "distances isa=%s width=%lld", isa_name(isa), (long long)width);
                const int64_t k = 1 + static_cast<int64_t>(rng() % (n + 3));
                std::vector<int32_t> dist(static_cast<size_t>(nq * k));
                std::vector<int64_t> ids(static_cast<size_t>(nq * k));
                hamming_topk(cq, cd, k, dist.data(), ids.data(), threads);
                for (int64_t i = 0; i < nq; ++i) {
                    std::vector<std::pair<int32_t, int64_t>> ref;
                    for (int64_t j = 0; j < n; ++j) ref.emplace_back(want[static_cast<size_t>(i * n + j)], j);
                    std::sort(ref.begin(), ref.end());
                    for (int64_t r = 0; r < k; ++r) {
                        const bool pad = r >= n;
                        const int32_t wd = pad ? std::numeric_limits<int32_t>::max() : ref[static_cast<size_t>(r)].first;
                        const int64_t wi = pad ? -1 : ref[static_cast<size_t>(r)].second;
                        CHECK(dist[static_cast<size_t>(i * k + r)] == wd && ids[static_cast<size_t>(i * k + r)] == wi,
                              "topk isa=%s width=%lld threads=%d rank=%lld", isa_name(isa),
                              (long long)width, threads, (long long)r);
                    }
                }
            }
        }
    }
}

// ---- phrase building and sparse L2 (SBoVP) ----
// Naive phrase matrix: per keypoint, sort the other keypoints of its class by (d2, index).
static std::vector<int64_t> naive_phrases(const std::vector<float>& xy, const std::vector<int32_t>& w,
                                          const std::vector<int32_t>& c, int64_t L, int n) {
    std::vector<int64_t> H(static_cast<size_t>(L * L), 0);
    const int64_t m = static_cast<int64_t>(w.size());
    for (int64_t p = 0; p < m; ++p) {
        if (c[p] < 0) continue;
        std::vector<std::pair<double, int64_t>> cand;
        for (int64_t q = 0; q < m; ++q) {
            if (q == p || c[q] != c[p]) continue;
            const double dx = double(xy[2 * q]) - double(xy[2 * p]);
            const double dy = double(xy[2 * q + 1]) - double(xy[2 * p + 1]);
            cand.emplace_back(dx * dx + dy * dy, q);
        }
        if (cand.empty()) continue;
        std::sort(cand.begin(), cand.end());
        std::vector<int32_t> words{w[p]};
        for (size_t t = 0; t < cand.size() && static_cast<int>(t) < n - 1; ++t)
            words.push_back(w[cand[t].second]);
        for (size_t a = 0; a < words.size(); ++a)
            for (size_t b = a + 1; b < words.size(); ++b)
                ++H[static_cast<size_t>(std::min(words[a], words[b]) * L + std::max(words[a], words[b]))];
    }
    return H;
}

static void check_phrases(std::mt19937_64& rng) {
    const int64_t L = 9;
    for (int n = 2; n <= 4; ++n) {
        std::vector<std::vector<float>> xy(6);
        std::vector<std::vector<int32_t>> w(6), c(6);
        std::vector<KeypointSet> sets(6);
        for (size_t i = 0; i < 6; ++i) {
            const int64_t m = static_cast<int64_t>(rng() % 50);
            for (int64_t p = 0; p < m; ++p) {
                xy[i].push_back(static_cast<float>(rng() % 7));  // integer grid: ties
                xy[i].push_back(static_cast<float>(rng() % 7));
                w[i].push_back(static_cast<int32_t>(rng() % L));
                c[i].push_back(static_cast<int32_t>(rng() % 4) - 1);
            }
            sets[i] = KeypointSet{xy[i].data(), w[i].data(), c[i].data(), m};
        }
        for (int threads : {1, 3}) {
            const SparseRows rows = build_phrase_matrices(sets.data(), 6, L, n, threads);
            for (size_t i = 0; i < 6; ++i) {
                std::vector<int64_t> got(static_cast<size_t>(L * L), 0);
                for (int64_t e = rows.indptr[i]; e < rows.indptr[i + 1]; ++e)
                    got[static_cast<size_t>(rows.indices[static_cast<size_t>(e)])] =
                        static_cast<int64_t>(rows.data[static_cast<size_t>(e)]);
                CHECK(got == naive_phrases(xy[i], w[i], c[i], L, n), "phrases n=%d image %zu", n, i);
            }
        }
    }
}

static void check_sparse_topk(std::mt19937_64& rng, int64_t cols_scale, int threads) {
    const int64_t nq = 7, nd = 40, dim = 30, k = 45;
    auto random_rows = [&](int64_t rows, std::vector<int64_t>& ip, std::vector<int64_t>& ix,
                           std::vector<float>& d, std::vector<double>& dense) {
        ip.assign(1, 0);
        dense.assign(static_cast<size_t>(rows * dim), 0.0);
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < dim; ++j)
                if (rng() % 5 == 0) {
                    const float v = static_cast<float>(1 + rng() % 3);
                    ix.push_back(j * cols_scale);
                    d.push_back(v);
                    dense[static_cast<size_t>(r * dim + j)] = v;
                }
            ip.push_back(static_cast<int64_t>(ix.size()));
        }
    };
    std::vector<int64_t> qi, qx, di, dx;
    std::vector<float> qd, dd;
    std::vector<double> qdense, ddense;
    random_rows(nq, qi, qx, qd, qdense);
    random_rows(nd, di, dx, dd, ddense);
    const CsrView q{qi.data(), qx.data(), qd.data(), nq, dim * cols_scale};
    const CsrView db{di.data(), dx.data(), dd.data(), nd, dim * cols_scale};
    std::vector<float> dist(static_cast<size_t>(nq * k));
    std::vector<int64_t> ids(static_cast<size_t>(nq * k));
    sparse_l2_topk(q, db, k, dist.data(), ids.data(), threads);
    for (int64_t i = 0; i < nq; ++i) {
        std::vector<std::pair<double, int64_t>> want;
        for (int64_t j = 0; j < nd; ++j) {
            double d2 = 0;
            for (int64_t t = 0; t < dim; ++t) {
                const double x = qdense[static_cast<size_t>(i * dim + t)] - ddense[static_cast<size_t>(j * dim + t)];
                d2 += x * x;
            }
            want.emplace_back(d2, j);
        }
        std::sort(want.begin(), want.end());
        for (int64_t r = 0; r < k; ++r) {
            const size_t at = static_cast<size_t>(i * k + r);
            if (r < nd)
                CHECK(ids[at] == want[static_cast<size_t>(r)].second &&
                          dist[at] == static_cast<float>(std::sqrt(want[static_cast<size_t>(r)].first)),
                      "sparse topk q=%lld rank=%lld", (long long)i, (long long)r);
            else
                CHECK(ids[at] == -1 && std::isinf(dist[at]), "sparse topk padding");
        }
    }
}
// The one-shot search checks the database rows while it streams them: a bad row anywhere
// must still raise validate_csr's message (the first error), at any thread count.
static void check_sparse_bad_database() {
    const int64_t nd = 64, cols = 100;
    std::vector<int64_t> ip(1, 0), ix;
    std::vector<float> d;
    for (int64_t r = 0; r < nd; ++r) {
        for (int64_t c = r % 7; c < cols; c += 9) {
            ix.push_back(c);
            d.push_back(1.0f + static_cast<float>(c % 3));
        }
        ip.push_back(static_cast<int64_t>(ix.size()));
    }
    // Enough queries that 2 or 3 threads split the database rows between workers.
    const int64_t nq = 1100;
    std::vector<int64_t> qi(1, 0), qx;
    std::vector<float> qd;
    for (int64_t r = 0; r < nq; ++r) {
        for (int64_t c = r % 11; c < cols; c += 13) {
            qx.push_back(c);
            qd.push_back(1.0f);
        }
        qi.push_back(static_cast<int64_t>(qx.size()));
    }
    const CsrView q{qi.data(), qx.data(), qd.data(), nq, cols};
    std::vector<float> dist(static_cast<size_t>(nq * 3));
    std::vector<int64_t> ids(static_cast<size_t>(nq * 3));
    auto message = [&](const CsrView& db, int threads, bool one_shot) -> std::string {
        try {
            if (one_shot)
                sparse_l2_topk(q, db, 3, dist.data(), ids.data(), threads);
            else
                validate_csr(db, "database");
        } catch (const std::invalid_argument& e) {
            return e.what();
        }
        return "";
    };
    for (int kind = 0; kind < 4; ++kind)
        for (int64_t row : {int64_t{0}, int64_t{1}, int64_t{37}, nd - 1}) {
            std::vector<int64_t> bx = ix;
            std::vector<float> bd = d;
            const size_t at = static_cast<size_t>(ip[static_cast<size_t>(row)] + 2);
            if (kind == 0) bx[at] = cols;                        // outside [0, cols)
            if (kind == 1) bx[at] = -1;                          // negative
            if (kind == 2) bx[at] = bx[at - 1];                  // not increasing
            if (kind == 3) bd[at] = std::numeric_limits<float>::quiet_NaN();
            if (kind == 3 && row == 37) bd[at + 1] = std::numeric_limits<float>::infinity();
            if (row == 37) bx[static_cast<size_t>(ip[50]) + 1] = cols + 5;  // a later error too
            const CsrView db{ip.data(), bx.data(), bd.data(), nd, cols};
            const std::string want = message(db, 1, false);
            CHECK(!want.empty(), "validate_csr kind=%d row=%lld", kind, (long long)row);
            for (int threads : {1, 2, 3})
                CHECK(message(db, threads, true) == want, "streamed check kind=%d row=%lld t=%d",
                      kind, (long long)row, threads);
        }
}

// Float data (non-integer sums): every ISA level, the one-shot paths (queries transposed, or
// the database split between workers) and SparseL2Index give the same bits as the scalar
// level's one-shot search.
static void check_sparse_isas_identical(std::mt19937_64& rng, int64_t cols_scale) {
    const int64_t nd = 4000, dim = 400;  // 40 queries x 4000 rows: the workers split the rows
    std::uniform_real_distribution<float> value(0.01f, 1.0f);
    auto random_rows = [&](int64_t rows, std::vector<int64_t>& ip, std::vector<int64_t>& ix,
                           std::vector<float>& d) {
        ip.assign(1, 0);
        for (int64_t r = 0; r < rows; ++r) {
            if (r % 9 != 4)  // some empty rows
                for (int64_t j = 0; j < dim; ++j)
                    if (rng() % 25 == 0) {
                        ix.push_back(j * cols_scale);
                        d.push_back(r % 5 == 0 ? 1.0f : value(rng));  // ties too
                    }
            ip.push_back(static_cast<int64_t>(ix.size()));
        }
    };
    for (int64_t nq : {int64_t{3}, int64_t{40}}) {
        std::vector<int64_t> qi, qx, di, dx;
        std::vector<float> qd, dd;
        random_rows(nq, qi, qx, qd);
        random_rows(nd, di, dx, dd);
        const CsrView q{qi.data(), qx.data(), qd.data(), nq, dim * cols_scale};
        const CsrView db{di.data(), dx.data(), dd.data(), nd, dim * cols_scale};
        for (int64_t k : {int64_t{1}, int64_t{17}, nd + 5}) {
            const size_t size = static_cast<size_t>(nq * k);
            std::vector<float> want_d(size), got_d(size);
            std::vector<int64_t> want_i(size), got_i(size);
            set_active_isa(Isa::scalar);
            sparse_l2_topk(q, db, k, want_d.data(), want_i.data(), 1);
            for (Isa isa : supported_isas()) {
                set_active_isa(isa);
                for (int threads : {1, 2, 4}) {
                    sparse_l2_topk(q, db, k, got_d.data(), got_i.data(), threads);
                    CHECK(std::memcmp(got_d.data(), want_d.data(), size * sizeof(float)) == 0 &&
                              got_i == want_i,
                          "sparse topk %s nq=%lld k=%lld t=%d scale=%lld", isa_name(isa),
                          (long long)nq, (long long)k, threads, (long long)cols_scale);
                    const SparseL2Index index(db, threads);
                    index.search(q, k, got_d.data(), got_i.data(), threads);
                    CHECK(std::memcmp(got_d.data(), want_d.data(), size * sizeof(float)) == 0 &&
                              got_i == want_i,
                          "SparseL2Index %s nq=%lld k=%lld t=%d", isa_name(isa), (long long)nq,
                          (long long)k, threads);
                }
            }
        }
    }
}
// ---- end phrase building and sparse L2 (SBoVP) ----

// ---- hardening (issue 11): limits are checked before anything is allocated ----
template <class Fn>
static std::string invalid_message(Fn&& fn) {
    try {
        fn();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

static void check_limits() {
    // levels: the range, then the code size (a 1x1 map at levels 10 with 150 classes asked
    // for ~1.9 GiB of scratch memory per thread).
    CHECK(invalid_message([] { make_sbs_layout(150, 10, false); }).find("4 MiB") !=
              std::string::npos, "levels 10 x 150 classes refused");
    CHECK(!invalid_message([] { make_sbs_layout(150, int64_t{1} << 40, false); }).empty(),
          "levels 2^40 refused");
    CHECK(!invalid_message([] { make_sbs_layout(150, -1, false); }).empty(), "levels -1");
    CHECK(invalid_message([] { make_sbs_layout(151, 7, false); }).empty(), "levels 7 x 151 ok");
    CHECK(!invalid_message([] { make_sbs_layout(151, 7, true); }).empty() ==
              (make_sbs_layout(151, 7, false).nbytes * 4 / 3 > kMaxSbsCodeBytes),
          "pyramid code size");
    CHECK(sbs_workspace_bytes(make_sbs_layout(3, 2, false), 10, 1) < 1024, "workspace estimate");
    // k and queries x k.
    CHECK(invalid_message([] { check_topk_size(1, 0); }) == "k must be >= 1, got 0", "k=0");
    CHECK(!invalid_message([] { check_topk_size(1, kMaxK + 1); }).empty(), "k > kMaxK");
    CHECK(invalid_message([] { check_topk_size(1, kMaxK); }).empty(), "k = kMaxK");
    CHECK(!invalid_message([] { check_topk_size(int64_t{1} << 40, kMaxK); }).empty(), "nq x k");
    CHECK(!invalid_message([] { check_topk_size(kMaxResultSlots + 1, 1); }).empty(), "nq x 1");
    // The searches check before they touch their (here absent) outputs.
    const uint8_t code[8] = {};
    const CodeMatrix one{code, 1, 8, 8};
    CHECK(!invalid_message([&] {
              hamming_topk(one, one, int64_t{1} << 62, nullptr, nullptr, 0);
          }).empty(), "hamming_topk k = 2^62");
    const int64_t ip[2] = {0, 0};
    const CsrView empty_row{ip, nullptr, nullptr, 1, 4};
    CHECK(!invalid_message([&] {
              sparse_l2_topk(empty_row, empty_row, int64_t{1} << 62, nullptr, nullptr, 0);
          }).empty(), "sparse_l2_topk k = 2^62");
    // Threads: capped, one chunk per work item, every chunk exactly once.
    CHECK(resolve_threads(1 << 30) == kMaxThreads && resolve_threads(0) >= 1, "thread cap");
    std::vector<int> seen(5, 0);
    parallel_chunks(5, 1 << 20, [&](int w, int64_t b, int64_t e) {
        CHECK(e == b + 1 && w == b, "chunk %d [%lld, %lld)", w, (long long)b, (long long)e);
        seen[static_cast<size_t>(b)] += 1;
    });
    CHECK(seen == std::vector<int>(5, 1), "parallel_chunks covers [0, 5) once");
    int64_t covered = 0;
    parallel_chunks(int64_t{1} << 62, 3, [&](int, int64_t b, int64_t e) {  // bounds: no overflow
        CHECK(b >= 0 && e > b, "huge range chunk");
        if (e == int64_t{1} << 62) covered = 1;
    });
    CHECK(covered == 1, "huge range reaches n");
}

// Squared distances that cancel in |q|^2 + |d|^2 - 2 q.d (near-duplicates, huge values) come
// from the direct sum: every ISA, path and thread count agree and are accurate.
static void check_sparse_cancellation(std::mt19937_64& rng) {
    {  // the case: true distance 1, the fast form gives 0
        const int64_t qi[2] = {0, 2}, qx[2] = {0, 1}, di[2] = {0, 1}, dx[1] = {0};
        const float qd[2] = {1e8f, 1.0f}, dd[1] = {1e8f};
        const CsrView q{qi, qx, qd, 1, 2}, db{di, dx, dd, 1, 2};
        for (Isa isa : supported_isas()) {
            set_active_isa(isa);
            float dist[2];
            int64_t ids[2];
            sparse_l2_topk(q, db, 2, dist, ids, 1);
            CHECK(dist[0] == 1.0f && ids[0] == 0 && ids[1] == -1, "1e8 case %s: %g", isa_name(isa),
                  double(dist[0]));
            SparseL2Index(db, 1).search(q, 2, dist, ids, 1);
            CHECK(dist[0] == 1.0f && ids[0] == 0, "1e8 case index %s: %g", isa_name(isa),
                  double(dist[0]));
        }
    }
    // Rows near a common large point: offsets of 1e4 with deltas in [0, 4).
    const int64_t nq = 9, nd = 300, dim = 40;
    std::uniform_real_distribution<float> delta(0.0f, 4.0f);
    auto rows = [&](int64_t n, std::vector<int64_t>& ip, std::vector<int64_t>& ix,
                    std::vector<float>& d) {
        ip.assign(1, 0);
        for (int64_t r = 0; r < n; ++r) {
            for (int64_t j = 0; j < dim; ++j)
                if (rng() % 3 != 0) {
                    ix.push_back(j);
                    d.push_back(1e4f + (rng() % 4 == 0 ? 0.0f : delta(rng)));
                }
            ip.push_back(static_cast<int64_t>(ix.size()));
        }
    };
    std::vector<int64_t> qi, qx, di, dx;
    std::vector<float> qd, dd;
    rows(nq - 3, qi, qx, qd);
    rows(nd, di, dx, dd);
    for (int64_t src : {5, 22, 39}) {  // exact duplicates of database rows among the queries
        for (int64_t e = di[src]; e < di[src + 1]; ++e) {
            qx.push_back(dx[static_cast<size_t>(e)]);
            qd.push_back(dd[static_cast<size_t>(e)]);
        }
        qi.push_back(static_cast<int64_t>(qx.size()));
    }
    const CsrView q{qi.data(), qx.data(), qd.data(), nq, dim};
    const CsrView db{di.data(), dx.data(), dd.data(), nd, dim};
    const int64_t k = 25;
    const size_t size = static_cast<size_t>(nq * k);
    std::vector<float> want_d(size), got_d(size);
    std::vector<int64_t> want_i(size), got_i(size);
    set_active_isa(Isa::scalar);
    sparse_l2_topk(q, db, k, want_d.data(), want_i.data(), 1);
    for (int64_t i = 0; i < nq; ++i) {  // against the direct sum in long double
        for (int64_t r = 0; r < k; ++r) {
            const int64_t j = want_i[static_cast<size_t>(i * k + r)];
            std::vector<long double> a(dim, 0), b(dim, 0);
            for (int64_t e = qi[i]; e < qi[i + 1]; ++e) a[qx[e]] = qd[e];
            for (int64_t e = di[j]; e < di[j + 1]; ++e) b[dx[e]] = dd[e];
            long double d2 = 0;
            for (int64_t t = 0; t < dim; ++t) d2 += (a[t] - b[t]) * (a[t] - b[t]);
            const double want = std::sqrt(static_cast<double>(d2));
            const double got = want_d[static_cast<size_t>(i * k + r)];
            CHECK(std::fabs(got - want) <= 1e-6 * want + 1e-30, "cancellation q=%lld r=%lld: %g vs %g",
                  (long long)i, (long long)r, got, want);
        }
    }
    for (Isa isa : supported_isas()) {
        set_active_isa(isa);
        for (int threads : {1, 2, 3}) {
            sparse_l2_topk(q, db, k, got_d.data(), got_i.data(), threads);
            CHECK(std::memcmp(got_d.data(), want_d.data(), size * sizeof(float)) == 0 &&
                      got_i == want_i, "cancellation one-shot %s t=%d", isa_name(isa), threads);
            SparseL2Index(db, threads).search(q, k, got_d.data(), got_i.data(), threads);
            CHECK(std::memcmp(got_d.data(), want_d.data(), size * sizeof(float)) == 0 &&
                      got_i == want_i, "cancellation index %s t=%d", isa_name(isa), threads);
        }
    }
    // 0 columns: every row is empty, every distance 0 (this asked for 2^61 bytes).
    const int64_t zp[4] = {0, 0, 0, 0};
    const CsrView z{zp, nullptr, nullptr, 3, 0};
    for (Isa isa : supported_isas()) {
        set_active_isa(isa);
        float dist[3 * 4];
        int64_t ids[3 * 4];
        sparse_l2_topk(z, z, 4, dist, ids, 2);
        bool ok = true;
        for (int64_t i = 0; i < 3; ++i)
            for (int64_t r = 0; r < 4; ++r)
                ok = ok && (r < 3 ? dist[i * 4 + r] == 0.0f && ids[i * 4 + r] == r
                                  : std::isinf(dist[i * 4 + r]) && ids[i * 4 + r] == -1);
        CHECK(ok, "0 columns one-shot %s", isa_name(isa));
        SparseL2Index(z, 1).search(z, 4, dist, ids, 1);
        CHECK(dist[0] == 0.0f && ids[2] == 2 && ids[3] == -1, "0 columns index %s", isa_name(isa));
    }
}

// Sparse SBS: dense -> sparse -> dense round trip, and the sparse search (every method, ISA
// and thread count) equal to hamming_topk on the dense codes; malformed sparse codes refused.
static void check_sparse_sbs(std::mt19937_64& rng) {
    struct Case { int64_t m, levels; bool pyramid; };
    for (const Case c : {Case{5, 1, false}, Case{40, 2, false}, Case{3, 2, true},
                         Case{1100, 2, false}}) {
        const SbsLayout lay = make_sbs_layout(c.m, c.levels, c.pyramid);
        const SparseSbsShape shape = make_sparse_sbs_shape(lay);
        const int64_t n = 9000, nq = 5, k = 7;  // more than one block of rows
        std::vector<uint8_t> codes(static_cast<size_t>(n * lay.stride), 0);
        std::uniform_real_distribution<double> u(0, 1);
        for (int64_t r = 0; r < n; ++r) {
            uint8_t* row = codes.data() + r * lay.stride;
            const double p = r % 3 == 0 ? 0.0 : 0.03 * static_cast<double>(r % 7);
            for (size_t j = 0; j < shape.part_cells.size(); ++j)
                for (int64_t e = 0; e < shape.part_cells[j]; ++e) {
                    if (u(rng) >= p) continue;
                    const int level = static_cast<int>(rng() % 4) + 1;
                    const int64_t b0 = shape.part_bit_offset[j];
                    auto set = [&](int64_t pos) { row[pos >> 3] |= static_cast<uint8_t>(0x80u >> (pos & 7)); };
                    set(b0 + e);
                    for (int t = 0; t < level; ++t) set(b0 + shape.part_cells[j] + 4 * e + t);
                }
        }
        CodeMatrix cm{codes.data(), n, lay.stride, lay.stride};
        std::vector<int64_t> off(static_cast<size_t>(n + 1), 0);
        CHECK(sparse_sbs_count(cm, shape, off.data() + 1, 2) == -1, "sparse count m=%lld", (long long)c.m);
        for (int64_t i = 0; i < n; ++i) off[static_cast<size_t>(i + 1)] += off[static_cast<size_t>(i)];
        const int64_t nnz = off[static_cast<size_t>(n)];
        std::vector<uint16_t> e16(static_cast<size_t>(shape.wide ? 0 : nnz));
        std::vector<uint32_t> e32(static_cast<size_t>(shape.wide ? nnz : 0));
        std::vector<int32_t> pop(static_cast<size_t>(n));
        SparseSbsView v{off.data(), shape.wide ? static_cast<const void*>(e32.data()) : e16.data(),
                        pop.data(), n, shape.wide};
        sparse_sbs_fill(cm, shape, v, 2);
        std::vector<uint8_t> back(codes.size(), 0xAA);
        sparse_sbs_decode(v, shape, back.data(), lay.stride, 2);
        CHECK(back == codes, "sparse round trip m=%lld", (long long)c.m);
        std::vector<uint8_t> q(codes.begin(), codes.begin() + nq * lay.stride);
        for (int64_t i = 0; i < lay.stride; ++i) q[static_cast<size_t>(i)] = static_cast<uint8_t>(rng());  // any bits
        CodeMatrix qm{q.data(), nq, lay.stride, lay.stride};
        std::vector<int32_t> wd(static_cast<size_t>(nq * k)), gd(wd.size());
        std::vector<int64_t> wi(wd.size()), gi(wd.size());
        hamming_topk(qm, cm, k, wd.data(), wi.data(), 1);
        for (double hot : {0.0, kDefaultHotFraction, 0.05, 1.0}) {  // every cell hot .. none
            const SparseSbsIndex index(v, shape, nnz, 2, hot);
            for (Isa isa : supported_isas()) {
                set_active_isa(isa);
                for (int method = 0; method < 3; ++method)
                    for (int threads : {1, 2}) {
                        index.search(qm, k, gd.data(), gi.data(), threads,
                                     static_cast<SparseSbsMethod>(method));
                        CHECK(gd == wd && gi == wi,
                              "sparse search m=%lld hot=%.3f isa=%s method=%d threads=%d",
                              (long long)c.m, hot, isa_name(isa), method, threads);
                    }
            }
        }
        CHECK(!invalid_message([&] { SparseSbsIndex bad(v, shape, nnz, 1, 1.5); }).empty(),
              "sparse hot_fraction > 1");
        if (nnz > 1) {  // malformed: popcount off by one, cells out of order
            pop[1] += 1;
            CHECK(!invalid_message([&] { check_sparse_sbs(v, shape, nnz); }).empty(), "sparse bad popcount");
            pop[1] -= 1;
        }
    }
}

int main() {
    std::mt19937_64 rng(12345);
    for (Isa isa : supported_isas()) {  // uint8 maps have per-ISA row counters
        set_active_isa(isa);
        check_encoder<uint8_t>(rng, LabelType::u8);
        check_encoder<uint8_t>(rng, LabelType::u8, true);
    }
    check_encoder<int8_t>(rng, LabelType::i8);
    check_encoder<uint16_t>(rng, LabelType::u16);
    check_encoder<int16_t>(rng, LabelType::i16);
    check_encoder<uint32_t>(rng, LabelType::u32);
    check_encoder<int32_t>(rng, LabelType::i32);
    check_encoder<uint64_t>(rng, LabelType::u64);
    check_encoder<int64_t>(rng, LabelType::i64);
    for (int round = 0; round < 5; ++round) check_hamming(rng);
    check_phrases(rng);
    for (Isa isa : supported_isas()) {  // per-ISA sparse L2 kernels
        set_active_isa(isa);
        for (int threads : {1, 2}) {
            check_sparse_topk(rng, 1, threads);                 // direct column table
            check_sparse_topk(rng, int64_t{1} << 34, threads);  // hashed column space
        }
    }
    check_sparse_bad_database();
    check_sparse_isas_identical(rng, 1);
    check_sparse_sbs(rng);
    check_sparse_isas_identical(rng, int64_t{1} << 30);
    check_limits();
    check_sparse_cancellation(rng);
    std::printf("semcbir core tests: %d failure(s); ISA levels checked:", failures);
    for (Isa isa : supported_isas()) std::printf(" %s", isa_name(isa));
    std::printf("\n");
    return failures == 0 ? 0 : 1;
}
