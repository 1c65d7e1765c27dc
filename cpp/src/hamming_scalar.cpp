// Portable kernel: 64-bit words, SWAR popcount (this file is built without POPCNT).
#include "hamming_kernels.hpp"
#include "popcount.hpp"

namespace semcbir::detail {

void hamming_tile_scalar(const uint8_t* q, int64_t nq, int64_t q_stride, const uint8_t* db,
                         int64_t n, int64_t db_stride, int64_t width, int32_t* out,
                         int64_t out_stride) noexcept {
    const int64_t words = width / 8, rem = width % 8;
    for (int64_t i = 0; i < nq; ++i) {
        const uint8_t* qi = q + i * q_stride;
        int32_t* oi = out + i * out_stride;
        for (int64_t j = 0; j < n; ++j) {
            const uint8_t* dj = db + j * db_stride;
            int64_t acc = 0;
            for (int64_t w = 0; w < words; ++w)
                acc += popcount64(load_u64(qi + 8 * w) ^ load_u64(dj + 8 * w));
            if (rem) acc += popcount64(tail_xor(qi + 8 * words, dj + 8 * words, rem));
            oi[j] = static_cast<int32_t>(acc);
        }
    }
}

int64_t find_below_scalar(const int32_t* d, int64_t n, int32_t threshold) noexcept {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {  // branch once per 16 (the compiler vectorises the test)
        int any = 0;
        for (int t = 0; t < 16; ++t) any |= d[i + t] < threshold;
        if (any) break;
    }
    for (; i < n; ++i)
        if (d[i] < threshold) return i;
    return n;
}

}  // namespace semcbir::detail
