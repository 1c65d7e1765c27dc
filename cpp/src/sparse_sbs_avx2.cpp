// Forward-scan kernel of the sparse SBS search, avx2 level (-mavx2; see
// sparse_sbs_kernels.hpp: the lane loops are vectorised by the compiler for this level).
#include "sparse_sbs_kernels.hpp"

SEMCBIR_DEFINE_SPARSE_SCAN(sparse_scan_avx2, hot_sum_avx2)
