// uint8 row counter with AVX-512BW (compiled with -mavx512f -mavx512bw -mbmi -mbmi2): compares
// 64 pixels with their left neighbours at once; each set bit of the mask starts a run.
#include <immintrin.h>

#include "sbs_kernels.hpp"

namespace semcbir::detail {

namespace {

template <bool Table>
void count_rows(const U8Rows& in, CellCounter& cc) noexcept {
    const int64_t w = in.width;
    for (int by = 0; by < in.g; ++by) {
        const int64_t block_row = int64_t{by} * in.g;
        for (int64_t y = bound(by, in.height, in.g); y < bound(by + 1, in.height, in.g); ++y) {
            const uint8_t* row = in.data + y * w;
            int64_t start = 0;
            ColumnCursor col = first_column(in);
            for (int64_t x0 = 1; x0 < w; x0 += 64) {
                const int64_t n = w - x0 < 64 ? w - x0 : 64;
                const __mmask64 live = n == 64 ? ~0ULL : ((1ULL << n) - 1);
                const __m512i cur = _mm512_maskz_loadu_epi8(live, row + x0);
                const __m512i prev = _mm512_maskz_loadu_epi8(live, row + x0 - 1);
                uint64_t change = (_mm512_cmpneq_epi8_mask(cur, prev) | bits_at(in.col_starts, x0)) & live;
                while (change) {
                    const int64_t x = x0 + static_cast<int64_t>(_tzcnt_u64(change));
                    add_run<Table>(in, cc, row, block_row, col, start, x);
                    start = x;
                    change = _blsr_u64(change);
                }
            }
            add_run<Table>(in, cc, row, block_row, col, start, w);
        }
    }
}

}  // namespace

void count_rows_u8_avx512(const U8Rows& in, CellCounter& cc) noexcept {
    if (in.col_block != nullptr)
        count_rows<true>(in, cc);
    else
        count_rows<false>(in, cc);
}

}  // namespace semcbir::detail
