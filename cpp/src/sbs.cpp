#include "semcbir/sbs.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "dispatch.hpp"
#include "sbs_kernels.hpp"
#include "semcbir/parallel.hpp"

namespace semcbir {

SbsLayout make_sbs_layout(int64_t num_classes, int64_t levels, bool pyramid, int64_t stride) {
    if (num_classes <= 0 || num_classes > 65536)
        throw std::invalid_argument("num_classes must be in [1, 65536], got " +
                                    std::to_string(num_classes));
    if (levels < 0 || levels > kMaxSbsLevels)
        throw std::invalid_argument("levels must be in [0, " + std::to_string(kMaxSbsLevels) +
                                    "], got " + std::to_string(levels));
    SbsLayout l;
    l.num_classes = num_classes;
    l.levels = static_cast<int>(levels);
    l.pyramid = pyramid;
    l.blocks = 0;
    for (int64_t lv = pyramid ? 0 : levels; lv <= levels; ++lv) l.blocks += int64_t{1} << (2 * lv);
    l.nbits = 5 * num_classes * l.blocks;  // <= 5 * 2^16 * 2^25: no overflow
    l.nbytes = (l.nbits + 7) / 8;
    if (l.nbytes > kMaxSbsCodeBytes)
        throw std::invalid_argument(
            "levels=" + std::to_string(levels) + " with num_classes=" +
            std::to_string(num_classes) + (pyramid ? " (pyramid)" : "") + " makes codes of " +
            std::to_string(l.nbytes) + " bytes, more than the maximum of " +
            std::to_string(kMaxSbsCodeBytes) + " bytes (4 MiB); use fewer levels");
    const int64_t minimal = (l.nbytes + 7) / 8 * 8;
    if (stride == 0) stride = minimal;
    if (stride < l.nbytes || stride % 8 != 0 || stride > minimal + kMaxSbsCodeBytes)
        throw std::invalid_argument("stride must be a multiple of 8 in [nbytes, nbytes + 4 MiB], "
                                    "nbytes=" + std::to_string(l.nbytes) + ", got " +
                                    std::to_string(stride));
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
    constexpr uint64_t repeat = sizeof(T) == 1   ? 0x0101010101010101ULL
                                : sizeof(T) == 2 ? 0x0001000100010001ULL
                                : sizeof(T) == 4 ? 0x0000000100000001ULL
                                                 : 1ULL;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    const uint64_t pattern = bits * repeat;
    while (j + 4 * per_word <= len) {  // skip 32 equal bytes at a time
        uint64_t w[4];
        std::memcpy(w, p + j, 32);
        if (((w[0] ^ pattern) | (w[1] ^ pattern) | (w[2] ^ pattern) | (w[3] ^ pattern)) != 0) break;
        j += 4 * per_word;
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

// Adds the class counts of one row segment of block `b`.
template <class T>
inline void count_segment(const T* p, int64_t len, int64_t m, const VoidRule& rule, int64_t b,
                          detail::CellCounter& cc) noexcept {
    int64_t i = 0;
    while (i < len) {
        const int64_t j = run_end(p, i, len);
        const int64_t c = class_of(p[i], m, rule);
        if (c >= 0) detail::add_cell(cc, b, c, j - i);
        i = j;
    }
}

// Portable counter for every label type: segment by segment, runs found 8 bytes at a time.
template <class T>
void count_blocks(const LabelMap& map, int64_t m, int g, const VoidRule& rule,
                  detail::CellCounter& cc) noexcept {
    using detail::bound;
    const T* base = static_cast<const T*>(map.data);
    const int64_t h = map.height, w = map.width;
    for (int by = 0; by < g; ++by) {
        const int64_t y0 = bound(by, h, g), y1 = bound(by + 1, h, g);
        for (int64_t y = y0; y < y1; ++y) {
            const T* row = base + y * w;
            for (int bx = 0; bx < g; ++bx) {
                const int64_t x0 = bound(bx, w, g), x1 = bound(bx + 1, w, g);
                count_segment(row + x0, x1 - x0, m, rule, int64_t{by} * g + bx, cc);
            }
        }
    }
}

void count_u8_simd(const LabelMap& map, int64_t m, int g, const VoidRule& rule,
                   detail::CountRowsU8Fn kernel, SbsWorkspace& ws, detail::CellCounter& cc) noexcept {
    int16_t lut[256];
    for (int v = 0; v < 256; ++v) lut[v] = static_cast<int16_t>(class_of(static_cast<uint8_t>(v), m, rule));
    const int64_t w = map.width;
    // Sized by reserve_sbs_workspace (no allocation here: this runs inside noexcept code).
    int64_t* col_bounds = ws.col_bounds.data();
    int32_t* col_block = w <= detail::kColumnTableMax ? ws.col_block.data() : nullptr;
    uint64_t* col_starts = ws.col_starts.data();
    std::fill_n(col_starts, static_cast<size_t>((w >> 6) + 2), uint64_t{0});
    for (int bx = 0; bx < g; ++bx) {
        const int64_t x0 = detail::bound(bx, w, g), x1 = detail::bound(bx + 1, w, g);
        col_bounds[bx] = x0;
        if (col_block != nullptr)
            for (int64_t x = x0; x < x1; ++x) col_block[x] = bx;
        if (x0 > 0 && x0 < x1) col_starts[x0 >> 6] |= uint64_t{1} << (x0 & 63);
    }
    col_bounds[g] = w;
    const detail::U8Rows in{static_cast<const uint8_t*>(map.data), map.height, w, g, lut,
                            col_bounds, col_block, col_starts};
    kernel(in, cc);
}

detail::CellCounter counter_of(SbsWorkspace::Level& lv, int64_t m) noexcept {
    return {lv.counts.data(), lv.totals.data(), lv.touched.data(), lv.ntouched, m};
}

inline void set_bit(uint8_t* out, int64_t i) noexcept {
    out[i >> 3] |= static_cast<uint8_t>(0x80u >> (i & 7));
}

// Writes the presence and thermometer-coded proportion bits of one level at bit offset `base`.
void emit_level(const SbsWorkspace::Level& lv, int64_t nblocks, int64_t m, int64_t base,
                uint8_t* out) noexcept {
    const int64_t prop_base = base + m * nblocks;
    for (int64_t t_i = 0; t_i < lv.ntouched; ++t_i) {
        const int64_t idx = lv.touched[static_cast<size_t>(t_i)];
        const int64_t n = lv.counts[static_cast<size_t>(idx)];
        const int64_t total = lv.totals[static_cast<size_t>(idx / m)];
        set_bit(out, base + idx);
        const int64_t level = (4 * n + total - 1) / total;  // 1..4
        for (int64_t t = 0; t < level; ++t) set_bit(out, prop_base + idx * 4 + t);
    }
}

// Sums the 2x2 children of level l+1 (grid 2g) into level l (grid g).
void coarsen(const SbsWorkspace::Level& fine, int g, int64_t m, SbsWorkspace::Level& coarse) noexcept {
    const int fg = 2 * g;
    detail::CellCounter cc = counter_of(coarse, m);
    for (int64_t t_i = 0; t_i < fine.ntouched; ++t_i) {
        const int64_t idx = fine.touched[static_cast<size_t>(t_i)];
        const int64_t fb = idx / m, c = idx % m;
        const int64_t cb = (fb / fg / 2) * g + (fb % fg) / 2;
        const int64_t cell = cb * m + c;
        if (cc.counts[cell] == 0) cc.touched[cc.ntouched++] = cell;
        cc.counts[cell] += fine.counts[static_cast<size_t>(idx)];
    }
    coarse.ntouched = cc.ntouched;
    for (int64_t fb = 0; fb < int64_t{fg} * fg; ++fb)
        coarse.totals[static_cast<size_t>((fb / fg / 2) * g + (fb % fg) / 2)] +=
            fine.totals[static_cast<size_t>(fb)];
}

void reset(SbsWorkspace::Level& lv) noexcept {
    for (int64_t t_i = 0; t_i < lv.ntouched; ++t_i)
        lv.counts[static_cast<size_t>(lv.touched[static_cast<size_t>(t_i)])] = 0;
    lv.ntouched = 0;
    std::fill(lv.totals.begin(), lv.totals.end(), 0);
}

// Level l's bit string starts after those of the levels encoded before it.
int64_t level_offset(const SbsLayout& layout, int l) noexcept {
    if (!layout.pyramid) return 0;
    int64_t blocks = 0;
    for (int i = 0; i < l; ++i) blocks += int64_t{1} << (2 * i);
    return 5 * layout.num_classes * blocks;
}

}  // namespace

namespace {

// Cells of level l: 4^l blocks x M classes.
inline int64_t level_cells(int l, int64_t m) noexcept { return (int64_t{1} << (2 * l)) * m; }

// Saturating a + b for non-negative sizes.
inline int64_t add_sat(int64_t a, int64_t b) noexcept {
    return a > std::numeric_limits<int64_t>::max() - b ? std::numeric_limits<int64_t>::max()
                                                       : a + b;
}

// Encodes one map with a workspace sized by reserve_sbs_workspace (allocates nothing).
void encode_prepared(const LabelMap& map, const SbsLayout& layout, const VoidRule& rule,
                     uint8_t* out, SbsWorkspace& ws) noexcept {
    const int64_t m = layout.num_classes;
    const int n = layout.levels;
    const int g = 1 << n;
    std::memset(out, 0, static_cast<size_t>(layout.stride));
    SbsWorkspace::Level& finest = ws.levels[static_cast<size_t>(n)];
    detail::CellCounter cc = counter_of(finest, m);
    const detail::CountRowsU8Fn u8_kernel = detail::kernels().count_rows_u8;  // may be null
    switch (map.type) {
        case LabelType::u8:
            if (u8_kernel != nullptr)
                count_u8_simd(map, m, g, rule, u8_kernel, ws, cc);
            else
                count_blocks<uint8_t>(map, m, g, rule, cc);
            break;
        case LabelType::i8: count_blocks<int8_t>(map, m, g, rule, cc); break;
        case LabelType::u16: count_blocks<uint16_t>(map, m, g, rule, cc); break;
        case LabelType::i16: count_blocks<int16_t>(map, m, g, rule, cc); break;
        case LabelType::u32: count_blocks<uint32_t>(map, m, g, rule, cc); break;
        case LabelType::i32: count_blocks<int32_t>(map, m, g, rule, cc); break;
        case LabelType::u64: count_blocks<uint64_t>(map, m, g, rule, cc); break;
        case LabelType::i64: count_blocks<int64_t>(map, m, g, rule, cc); break;
    }
    finest.ntouched = cc.ntouched;
    emit_level(finest, int64_t{g} * g, m, level_offset(layout, n), out);
    if (layout.pyramid) {
        // Coarser levels are sums of finer ones: floor(2k*H/2g) == floor(k*H/g), the grids nest.
        for (int l = n - 1; l >= 0; --l) {
            auto& lv = ws.levels[static_cast<size_t>(l)];
            coarsen(ws.levels[static_cast<size_t>(l + 1)], 1 << l, m, lv);
            emit_level(lv, int64_t{1} << (2 * l), m, level_offset(layout, l), out);
        }
        for (int l = 0; l < n; ++l) reset(ws.levels[static_cast<size_t>(l)]);
    }
    reset(finest);
}

}  // namespace

int64_t sbs_workspace_bytes(const SbsLayout& layout, int64_t max_width,
                            int64_t max_pixels) noexcept {
    const int64_t m = layout.num_classes;
    int64_t bytes = 0;
    for (int l = layout.pyramid ? 0 : layout.levels; l <= layout.levels; ++l) {
        const int64_t cells = level_cells(l, m);
        // counts + totals + touched (a cell is touched by at least one pixel)
        bytes = add_sat(bytes, 8 * cells + 8 * (int64_t{1} << (2 * l)) +
                                   8 * std::min(cells, std::max<int64_t>(max_pixels, 1)));
    }
    const int64_t w = std::max<int64_t>(max_width, 0);
    if (w > std::numeric_limits<int64_t>::max() / 8) return std::numeric_limits<int64_t>::max();
    return add_sat(bytes, 8 * ((int64_t{1} << layout.levels) + 1) +
                              4 * std::min(w, detail::kColumnTableMax) + 8 * ((w >> 6) + 2));
}

void reserve_sbs_workspace(SbsWorkspace& ws, const SbsLayout& layout, int64_t max_width,
                           int64_t max_pixels) {
    const int64_t m = layout.num_classes;
    const int n = layout.levels;
    if (ws.levels.size() < static_cast<size_t>(n + 1)) ws.levels.resize(static_cast<size_t>(n + 1));
    for (int l = layout.pyramid ? 0 : n; l <= n; ++l) {
        auto& lv = ws.levels[static_cast<size_t>(l)];
        const auto cells = static_cast<size_t>(level_cells(l, m));
        if (lv.counts.size() != cells) {  // another layout: all counts zero from here on
            lv.counts.assign(cells, 0);
            lv.totals.assign(size_t{1} << (2 * l), 0);
            lv.touched.clear();
            lv.ntouched = 0;
        }
        const auto touched =
            std::min(cells, static_cast<size_t>(std::max<int64_t>(max_pixels, 1)));
        if (lv.touched.size() < touched) lv.touched.resize(touched);
    }
    const auto w = static_cast<size_t>(std::max<int64_t>(max_width, 0));
    const auto g = size_t{1} << n;
    if (ws.col_bounds.size() < g + 1) ws.col_bounds.resize(g + 1);
    const size_t table = std::min(w, static_cast<size_t>(detail::kColumnTableMax));
    if (ws.col_block.size() < table) ws.col_block.resize(table);
    if (ws.col_starts.size() < (w >> 6) + 2) ws.col_starts.resize((w >> 6) + 2);
}

void encode_sbs(const LabelMap& map, const SbsLayout& layout, const VoidRule& rule, uint8_t* out,
                SbsWorkspace& ws) {
    reserve_sbs_workspace(ws, layout, map.width, map.height * map.width);
    encode_prepared(map, layout, rule, out, ws);
}

void encode_sbs_batch(const LabelMap* maps, int64_t n, const SbsLayout& layout,
                      const VoidRule& rule, uint8_t* out, int threads) {
    int64_t max_width = 0, max_pixels = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (maps[i].height < 0 || maps[i].width < 0)
            throw std::invalid_argument("labels: map " + std::to_string(i) +
                                        " has a negative size");
        max_width = std::max(max_width, maps[i].width);
        max_pixels = std::max(max_pixels, maps[i].height * maps[i].width);
    }
    // Fewer threads when their workspaces together would exceed the budget.
    const int64_t per_worker = std::max<int64_t>(1, sbs_workspace_bytes(layout, max_width, max_pixels));
    const int64_t by_memory = std::max<int64_t>(1, kSbsWorkspaceBudget / per_worker);
    const int workers =
        static_cast<int>(std::min<int64_t>({resolve_threads(threads), n, by_memory}));
    parallel_chunks(n, workers, [&](int, int64_t begin, int64_t end) {
        int64_t w = 0, px = 0;
        for (int64_t i = begin; i < end; ++i) {
            w = std::max(w, maps[i].width);
            px = std::max(px, maps[i].height * maps[i].width);
        }
        SbsWorkspace ws;
        reserve_sbs_workspace(ws, layout, w, px);  // may throw std::bad_alloc (-> MemoryError)
        for (int64_t i = begin; i < end; ++i)
            encode_prepared(maps[i], layout, rule, out + i * layout.stride, ws);
    });
}

}  // namespace semcbir
