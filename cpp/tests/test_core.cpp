// C++-side randomized checks of the core against naive implementations written here, for
// every ISA level this CPU supports. Built with -DSEMCBIR_BUILD_TESTS=ON (and meant to run
// under -DSEMCBIR_SANITIZE=ON: ASan + UBSan); `ctest` runs it.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include "semcbir/hamming.hpp"
#include "semcbir/isa.hpp"
#include "semcbir/sbs.hpp"

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

template <class T>
static void check_encoder(std::mt19937_64& rng, LabelType type) {
    for (int trial = 0; trial < 60; ++trial) {
        const int64_t h = 1 + rng() % 70, w = 1 + rng() % 70, m = 1 + rng() % 20;
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

int main() {
    std::mt19937_64 rng(12345);
    for (Isa isa : supported_isas()) {  // uint8 maps have per-ISA row counters
        set_active_isa(isa);
        check_encoder<uint8_t>(rng, LabelType::u8);
    }
    check_encoder<int8_t>(rng, LabelType::i8);
    check_encoder<uint16_t>(rng, LabelType::u16);
    check_encoder<int16_t>(rng, LabelType::i16);
    check_encoder<uint32_t>(rng, LabelType::u32);
    check_encoder<int32_t>(rng, LabelType::i32);
    check_encoder<uint64_t>(rng, LabelType::u64);
    check_encoder<int64_t>(rng, LabelType::i64);
    for (int round = 0; round < 5; ++round) check_hamming(rng);
    std::printf("semcbir core tests: %d failure(s); ISA levels checked:", failures);
    for (Isa isa : supported_isas()) std::printf(" %s", isa_name(isa));
    std::printf("\n");
    return failures == 0 ? 0 : 1;
}
