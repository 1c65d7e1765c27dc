// Run-time instruction-set selection for the SIMD kernels.
#pragma once

#include <string>
#include <vector>

namespace semcbir {

/// Kernel levels, from the portable baseline up. Numbers are stable (used as table indices).
enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

/// "scalar", "avx2", "avx512".
const char* isa_name(Isa isa) noexcept;

/// Parse a level name; throws std::invalid_argument for an unknown name.
Isa parse_isa(const std::string& name);

/// True when the level is compiled into this build and the CPU and OS support it.
bool isa_supported(Isa isa) noexcept;

/// Every supported level, lowest first.
std::vector<Isa> supported_isas();

/// The level the dispatch table currently points at: the best supported one unless
/// set_active_isa() chose another (the Python package applies SEMCBIR_ISA through it).
Isa active_isa() noexcept;

/// Force a level; throws std::invalid_argument when it is not supported here.
void set_active_isa(Isa isa);

}  // namespace semcbir
