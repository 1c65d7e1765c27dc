// uint8 row counter with AVX-512BW (compiled with -mavx512f -mavx512bw -mbmi -mbmi2): compares
// 64 pixels with their left neighbours at once; each set bit of the mask starts a run.
#include <immintrin.h>

#include "sbs_kernels.hpp"

namespace semcbir::detail {

void count_rows_u8_avx512(const U8Rows& in, CellCounter& cc) noexcept {
    const int64_t w = in.width;
    count_rows_with(in, cc, [&](const uint8_t* row, auto& run_starts_at) noexcept {
        for (int64_t x0 = 1; x0 < w; x0 += 64) {
            const int64_t n = w - x0 < 64 ? w - x0 : 64;
            const __mmask64 live = n == 64 ? ~0ULL : ((1ULL << n) - 1);
            const __m512i cur = _mm512_maskz_loadu_epi8(live, row + x0);
            const __m512i prev = _mm512_maskz_loadu_epi8(live, row + x0 - 1);
            uint64_t change = (_mm512_cmpneq_epi8_mask(cur, prev) | bits_at(in.col_starts, x0)) & live;
            for (; change; change = _blsr_u64(change))
                run_starts_at(x0 + static_cast<int64_t>(_tzcnt_u64(change)));
        }
    });
}

}  // namespace semcbir::detail
