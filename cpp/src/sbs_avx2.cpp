// uint8 row counter with AVX2 (compiled with -mavx2 -mbmi -mbmi2): compares 32 pixels with their
// left neighbours at once; each set bit of the mask starts a run.
#include <immintrin.h>

#include "sbs_kernels.hpp"

namespace semcbir::detail {

void count_rows_u8_avx2(const U8Rows& in, CellCounter& cc) noexcept {
    const int64_t w = in.width;
    count_rows_with(in, cc, [&](const uint8_t* row, auto& run_starts_at) noexcept {
        int64_t x0 = 1;
        for (; x0 + 32 <= w; x0 += 32) {
            const __m256i cur = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + x0));
            const __m256i prev = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + x0 - 1));
            const uint32_t same = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(cur, prev)));
            uint64_t change = (~same & 0xFFFFFFFFULL) | (bits_at(in.col_starts, x0) & 0xFFFFFFFFULL);
            for (; change; change = _blsr_u64(change))
                run_starts_at(x0 + static_cast<int64_t>(_tzcnt_u64(change)));
        }
        const uint64_t tail_starts = x0 < w ? bits_at(in.col_starts, x0) : 0;
        for (int64_t x = x0; x < w; ++x)
            if (row[x] != row[x - 1] || ((tail_starts >> (x - x0)) & 1)) run_starts_at(x);
    });
}

}  // namespace semcbir::detail
