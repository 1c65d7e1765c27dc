// Forward-scan kernel of the sparse SBS search, scalar level (portable (no extra flags); see
// sparse_sbs_kernels.hpp: the lane loops are vectorised by the compiler for this level).
#include "sparse_sbs_kernels.hpp"

SEMCBIR_DEFINE_SPARSE_SCAN(sparse_scan_scalar, hot_sum_scalar)
