// The per-ISA kernel table (see dispatch.hpp): one row per level compiled into this build.
#include "dispatch.hpp"

#include "semcbir/isa.hpp"

namespace semcbir::detail {
namespace {

constexpr KernelTable kScalar{
    hamming_tile_scalar, find_below_scalar, nullptr, row_distances_scalar, collect_direct_scalar,
};
#if defined(SEMCBIR_HAVE_AVX2)
constexpr KernelTable kAvx2{
    hamming_tile_avx2, find_below_avx2, count_rows_u8_avx2, row_distances_avx2,
    collect_direct_avx2,
};
#endif
#if defined(SEMCBIR_HAVE_AVX512)
constexpr KernelTable kAvx512{
    hamming_tile_avx512, find_below_avx512, count_rows_u8_avx512, row_distances_avx512,
    collect_direct_avx512,
};
#endif

}  // namespace

const KernelTable& kernels() noexcept {
    // active_isa() is always a supported level, so its row is compiled in.
    switch (active_isa()) {
#if defined(SEMCBIR_HAVE_AVX512)
        case Isa::avx512: return kAvx512;
#endif
#if defined(SEMCBIR_HAVE_AVX2)
        case Isa::avx2: return kAvx2;
#endif
        default: return kScalar;
    }
}

}  // namespace semcbir::detail
