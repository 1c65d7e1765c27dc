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

/// Largest grid level (4^12 blocks); the code size bounds it further.
constexpr int kMaxSbsLevels = 12;

/// Largest code: nbytes <= 4 MiB (e.g. 151 classes: levels <= 7; 1 class: levels <= 11). It
/// also bounds the encoder's scratch memory per thread: 8 bytes of counter per (block, class)
/// cell, 1.6 cells per code byte, plus at most as much again for the touched list (at most
/// 107 MiB at the limit; sbs_workspace_bytes).
constexpr int64_t kMaxSbsCodeBytes = int64_t{1} << 22;

/// Layout for M classes and 4^levels blocks (levels 0..levels when pyramid).
/// stride = 0 picks nbytes rounded up to a multiple of 8. Throws std::invalid_argument for
/// num_classes outside [1, 65536], levels outside [0, kMaxSbsLevels], a code larger than
/// kMaxSbsCodeBytes or a bad stride.
SbsLayout make_sbs_layout(int64_t num_classes, int64_t levels, bool pyramid, int64_t stride = 0);

/// Pixels equal to `ignore_index` (when has_ignore), negative or >= M are void.
struct VoidRule {
    bool has_ignore = false;
    int64_t ignore_index = 0;
};

/// Reusable scratch memory for one thread. Between calls every count is zero again: only the
/// (block, class) cells listed in `touched` are cleared, so the cost follows the number of
/// runs in the map, not blocks x classes. Counts are 64-bit: one block may hold more than
/// 2^31 pixels of one class.
struct SbsWorkspace {
    struct Level {
        std::vector<int64_t> counts;   // 4^l * M cells, all zero between calls
        std::vector<int64_t> totals;   // 4^l non-void pixel counts
        std::vector<int64_t> touched;  // min(4^l * M, pixels) slots: cells made non-zero
        int64_t ntouched = 0;
    };
    std::vector<Level> levels;         // index l = grid level
    std::vector<int64_t> col_bounds;   // g + 1 block column bounds
    std::vector<int32_t> col_block;    // column -> block column (moderate widths only)
    std::vector<uint64_t> col_starts;  // bit x set where a block column starts (x > 0)
};

/// Bytes of scratch memory one thread needs to encode maps of up to `max_width` columns and
/// `max_pixels` pixels (saturates at INT64_MAX).
int64_t sbs_workspace_bytes(const SbsLayout& layout, int64_t max_width,
                            int64_t max_pixels) noexcept;

/// Scratch memory of all encoding threads together: a batch uses fewer threads when one
/// thread's workspace times the threads would exceed it (results never depend on threads).
constexpr int64_t kSbsWorkspaceBudget = int64_t{1} << 30;

/// Grows `ws` for maps of up to `max_width` columns and `max_pixels` pixels (throws
/// std::bad_alloc; the encoding itself then allocates nothing).
void reserve_sbs_workspace(SbsWorkspace& ws, const SbsLayout& layout, int64_t max_width,
                           int64_t max_pixels);

/// Encode one map into out[0, layout.stride) (fully overwritten, padding zeroed). Sizes `ws`
/// first (throws std::bad_alloc when that fails; nothing is allocated while encoding).
void encode_sbs(const LabelMap& map, const SbsLayout& layout, const VoidRule& rule, uint8_t* out,
                SbsWorkspace& ws);

/// Encode n maps into out (n rows of layout.stride bytes) on up to `threads` threads
/// (capped by the maps, kMaxThreads and kSbsWorkspaceBudget). Throws std::invalid_argument
/// for a map with a negative size, std::bad_alloc when scratch memory cannot be had.
void encode_sbs_batch(const LabelMap* maps, int64_t n, const SbsLayout& layout,
                      const VoidRule& rule, uint8_t* out, int threads);

}  // namespace semcbir
