#include "semcbir/sbs.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "semcbir/parallel.hpp"

namespace semcbir {

SbsLayout make_sbs_layout(int64_t num_classes, int levels, bool pyramid, int64_t stride) {
    if (num_classes <= 0 || num_classes > 65536)
        throw std::invalid_argument("num_classes must be in [1, 65536], got " +
                                    std::to_string(num_classes));
    if (levels < 0 || levels > 12)
        throw std::invalid_argument("levels must be in [0, 12], got " + std::to_string(levels));
    SbsLayout l;
    l.num_classes = num_classes;
    l.levels = levels;
    l.pyramid = pyramid;
    l.blocks = 0;
    for (int lv = pyramid ? 0 : levels; lv <= levels; ++lv) l.blocks += int64_t{1} << (2 * lv);
    l.nbits = 5 * num_classes * l.blocks;
    l.nbytes = (l.nbits + 7) / 8;
    const int64_t minimal = (l.nbytes + 7) / 8 * 8;
    if (stride == 0) stride = minimal;
    if (stride < l.nbytes || stride % 8 != 0)
        throw std::invalid_argument("stride must be a multiple of 8 and >= nbytes=" +
                                    std::to_string(l.nbytes) + ", got " + std::to_string(stride));
    l.stride = stride;
    return l;
}

namespace {

// Class of a label value, or -1 for a void pixel.
template <class T>
inline int64_t class_of(T v, int64_t m, const VoidRule& rule) noexcept {
    if constexpr (std::is_signed_v<T>) {
        if (v < 0) return -1;
    }
    if (static_cast<uint64_t>(v) >= static_cast<uint64_t>(m)) return -1;
    const auto c = static_cast<int64_t>(v);
    if (rule.has_ignore && c == rule.ignore_index) return -1;
    return c;
}

// End of the run of values equal to p[i] that starts at i, within [i, len).
// Compares 8 bytes at a time (SWAR) on little-endian targets.
template <class T>
inline int64_t run_end(const T* p, int64_t i, int64_t len) noexcept {
    const T v = p[i];
    int64_t j = i + 1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ || defined(_M_X64) || defined(_M_ARM64)
    constexpr int64_t per_word = 8 / sizeof(T);
    uint64_t pattern = 0;
    for (int64_t k = 0; k < per_word; ++k) {
        uint64_t bits = 0;
        std::memcpy(&bits, &v, sizeof(T));
        pattern |= bits << (8 * sizeof(T) * k);
    }
    while (j + per_word <= len) {
        uint64_t word;
        std::memcpy(&word, p + j, 8);
        const uint64_t diff = word ^ pattern;
        if (diff != 0) {
#if defined(_MSC_VER) && !defined(__clang__)
            unsigned long tz;
            _BitScanForward64(&tz, diff);
#else
            const int tz = __builtin_ctzll(diff);
#endif
            return j + static_cast<int64_t>(tz) / (8 * static_cast<int64_t>(sizeof(T)));
        }
        j += per_word;
    }
#endif
    while (j < len && p[j] == v) ++j;
    return j;
}

// Adds the class counts of one row segment to cnt (M entries) and its non-void total.
template <class T>
inline void count_segment(const T* p, int64_t len, int64_t m, const VoidRule& rule, int32_t* cnt,
                          int64_t& total) noexcept {
    int64_t i = 0;
    while (i < len) {
        const int64_t j = run_end(p, i, len);
        const int64_t c = class_of(p[i], m, rule);
        if (c >= 0) {
            cnt[c] += static_cast<int32_t>(j - i);
            total += j - i;
        }
        i = j;
    }
}

inline int64_t bound(int64_t k, int64_t size, int64_t g) noexcept { return k * size / g; }

template <class T>
void count_blocks(const LabelMap& map, int64_t m, int g, const VoidRule& rule, int32_t* counts,
                  int64_t* totals) noexcept {
    const T* base = static_cast<const T*>(map.data);
    const int64_t h = map.height, w = map.width;
    for (int by = 0; by < g; ++by) {
        const int64_t y0 = bound(by, h, g), y1 = bound(by + 1, h, g);
        for (int64_t y = y0; y < y1; ++y) {
            const T* row = base + y * w;
            for (int bx = 0; bx < g; ++bx) {
                const int64_t x0 = bound(bx, w, g), x1 = bound(bx + 1, w, g);
                const int64_t b = int64_t{by} * g + bx;
                count_segment(row + x0, x1 - x0, m, rule, counts + b * m, totals[b]);
            }
        }
    }
}

inline void set_bit(uint8_t* out, int64_t i) noexcept {
    out[i >> 3] |= static_cast<uint8_t>(0x80u >> (i & 7));
}

// Writes the presence and thermometer-coded proportion bits of one level at bit offset `base`.
void emit_level(const int32_t* counts, const int64_t* totals, int64_t nblocks, int64_t m,
                int64_t base, uint8_t* out) noexcept {
    const int64_t prop_base = base + m * nblocks;
    for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t total = totals[b];
        if (total == 0) continue;
        const int32_t* cnt = counts + b * m;
        for (int64_t c = 0; c < m; ++c) {
            const int64_t n = cnt[c];
            if (n == 0) continue;
            const int64_t idx = b * m + c;
            set_bit(out, base + idx);
            const int64_t level = (4 * n + total - 1) / total;  // 1..4
            for (int64_t t = 0; t < level; ++t) set_bit(out, prop_base + idx * 4 + t);
        }
    }
}

// Sums the 2x2 children of a (2g x 2g) grid into a (g x g) grid.
void coarsen(const int32_t* fine, const int64_t* fine_tot, int g, int64_t m, int32_t* coarse,
             int64_t* coarse_tot) noexcept {
    const int fg = 2 * g;
    std::fill(coarse, coarse + int64_t{g} * g * m, 0);
    std::fill(coarse_tot, coarse_tot + int64_t{g} * g, 0);
    for (int y = 0; y < fg; ++y)
        for (int x = 0; x < fg; ++x) {
            const int64_t fb = int64_t{y} * fg + x, cb = int64_t{y / 2} * g + x / 2;
            coarse_tot[cb] += fine_tot[fb];
            const int32_t* src = fine + fb * m;
            int32_t* dst = coarse + cb * m;
            for (int64_t c = 0; c < m; ++c) dst[c] += src[c];
        }
}

}  // namespace

void encode_sbs(const LabelMap& map, const SbsLayout& layout, const VoidRule& rule, uint8_t* out,
                SbsWorkspace& ws) noexcept {
    const int64_t m = layout.num_classes;
    const int g = 1 << layout.levels;
    const int64_t nb = int64_t{g} * g;
    std::memset(out, 0, static_cast<size_t>(layout.stride));
    ws.counts.assign(static_cast<size_t>(nb * m), 0);
    ws.totals.assign(static_cast<size_t>(nb), 0);
    int32_t* counts = ws.counts.data();
    int64_t* totals = ws.totals.data();
    switch (map.type) {
        case LabelType::u8: count_blocks<uint8_t>(map, m, g, rule, counts, totals); break;
        case LabelType::i8: count_blocks<int8_t>(map, m, g, rule, counts, totals); break;
        case LabelType::u16: count_blocks<uint16_t>(map, m, g, rule, counts, totals); break;
        case LabelType::i16: count_blocks<int16_t>(map, m, g, rule, counts, totals); break;
        case LabelType::u32: count_blocks<uint32_t>(map, m, g, rule, counts, totals); break;
        case LabelType::i32: count_blocks<int32_t>(map, m, g, rule, counts, totals); break;
        case LabelType::u64: count_blocks<uint64_t>(map, m, g, rule, counts, totals); break;
        case LabelType::i64: count_blocks<int64_t>(map, m, g, rule, counts, totals); break;
    }
    if (!layout.pyramid) {
        emit_level(counts, totals, nb, m, 0, out);
        return;
    }
    // Pyramid: level l's bit string starts after those of levels 0..l-1. Coarser levels are
    // sums of finer ones, because floor(2k*H/2g) == floor(k*H/g): the grids nest exactly.
    auto level_offset = [m](int l) {
        int64_t blocks = 0;
        for (int i = 0; i < l; ++i) blocks += int64_t{1} << (2 * i);
        return 5 * m * blocks;
    };
    emit_level(counts, totals, nb, m, level_offset(layout.levels), out);
    ws.coarse_counts.resize(static_cast<size_t>(nb * m));
    ws.coarse_totals.resize(static_cast<size_t>(nb));
    std::vector<int32_t>& fine_c = ws.counts;
    std::vector<int64_t>& fine_t = ws.totals;
    for (int l = layout.levels - 1; l >= 0; --l) {
        const int cg = 1 << l;
        coarsen(fine_c.data(), fine_t.data(), cg, m, ws.coarse_counts.data(),
                ws.coarse_totals.data());
        emit_level(ws.coarse_counts.data(), ws.coarse_totals.data(), int64_t{cg} * cg, m,
                   level_offset(l), out);
        std::swap(fine_c, ws.coarse_counts);
        std::swap(fine_t, ws.coarse_totals);
    }
}

void encode_sbs_batch(const LabelMap* maps, int64_t n, const SbsLayout& layout,
                      const VoidRule& rule, uint8_t* out, int threads) {
    const int workers = static_cast<int>(std::min<int64_t>(resolve_threads(threads), n));
    parallel_chunks(n, workers, [&](int, int64_t begin, int64_t end) {
        SbsWorkspace ws;
        for (int64_t i = begin; i < end; ++i)
            encode_sbs(maps[i], layout, rule, out + i * layout.stride, ws);
    });
}

}  // namespace semcbir
