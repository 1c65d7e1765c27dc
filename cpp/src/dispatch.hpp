// The one table of per-ISA kernels. isa.cpp detects the CPU and holds the active level
// (SEMCBIR_ISA / set_active_isa force one); dispatch.cpp keeps one row of kernels per level;
// every search and encoder takes its kernels from kernels(), so the forced level governs all
// of them (no file asks the CPU itself).
#pragma once

#include "hamming_kernels.hpp"
#include "sbs_kernels.hpp"
#include "sparse_l2_kernels.hpp"

namespace semcbir::detail {

struct KernelTable {
    HammingTileFn hamming_tile;
    FindBelowFn find_below;
    CountRowsU8Fn count_rows_u8;  ///< nullptr: the portable run counter of sbs.cpp
    RowDistancesFn row_distances;
    CollectDirectFn collect_direct;
};

/// The kernels of the active ISA level (semcbir::active_isa()).
const KernelTable& kernels() noexcept;

}  // namespace semcbir::detail
