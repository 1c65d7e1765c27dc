// Semantic Binary Signature encoder (SPEC.md section 1).
#pragma once

#include <cstdint>
#include <vector>

namespace semcbir {

/// Element type of a label map.
enum class LabelType : int { u8, i8, u16, i16, u32, i32, u64, i64 };

/// A C-contiguous (H, W) label map; `data` is not owned.
struct LabelMap {
    const void* data = nullptr;
    LabelType type = LabelType::u8;
    int64_t height = 0;
    int64_t width = 0;
};

/// Bit layout of one code. nbits = 5 * M * blocks; bytes [nbytes, stride) are zero padding.
struct SbsLayout {
    int64_t num_classes = 0;
    int levels = 0;
    bool pyramid = false;
    int64_t blocks = 0;  ///< blocks over all encoded levels
    int64_t nbits = 0;
    int64_t nbytes = 0;
    int64_t stride = 0;
};

/// Layout for M classes and 4^levels blocks (levels 0..levels when pyramid).
/// stride = 0 picks nbytes rounded up to a multiple of 8. Throws std::invalid_argument.
SbsLayout make_sbs_layout(int64_t num_classes, int levels, bool pyramid, int64_t stride = 0);

/// Pixels equal to `ignore_index` (when has_ignore), negative or >= M are void.
struct VoidRule {
    bool has_ignore = false;
    int64_t ignore_index = 0;
};

/// Reusable scratch memory for one thread. Between calls every count is zero again: only the
/// (block, class) cells listed in `touched` are cleared, so the cost follows the number of
/// runs in the map, not blocks x classes.
struct SbsWorkspace {
    struct Level {
        std::vector<int32_t> counts;   // 4^l * M cells, all zero between calls
        std::vector<int64_t> totals;   // 4^l non-void pixel counts
        std::vector<int64_t> touched;  // capacity 4^l * M: cells made non-zero by this call
        int64_t ntouched = 0;
    };
    std::vector<Level> levels;         // index l = grid level
    std::vector<int32_t> col_block;    // column -> block column
    std::vector<uint64_t> col_starts;  // bit x set where a block column starts (x > 0)
};

/// Encode one map into out[0, layout.stride) (fully overwritten, padding zeroed).
void encode_sbs(const LabelMap& map, const SbsLayout& layout, const VoidRule& rule, uint8_t* out,
                SbsWorkspace& ws) noexcept;

/// Encode n maps into out (n rows of layout.stride bytes) on up to `threads` threads.
void encode_sbs_batch(const LabelMap* maps, int64_t n, const SbsLayout& layout,
                      const VoidRule& rule, uint8_t* out, int threads);

}  // namespace semcbir
