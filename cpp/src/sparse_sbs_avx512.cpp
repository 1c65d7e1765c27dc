// Forward-scan kernel of the sparse SBS search, avx512 level (-mavx512f -mavx512bw; see
// sparse_sbs_kernels.hpp: the lane loops are vectorised by the compiler for this level).
#include "sparse_sbs_kernels.hpp"

SEMCBIR_DEFINE_SPARSE_SCAN(sparse_scan_avx512, hot_sum_avx512)
