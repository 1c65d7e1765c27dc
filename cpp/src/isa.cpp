#include "semcbir/isa.hpp"

#include <atomic>
#include <stdexcept>

#if (defined(__x86_64__) || defined(_M_X64) || defined(__i386__)) && !defined(_MSC_VER)
#include <cpuid.h>
#define SEMCBIR_X86_GNU 1
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <immintrin.h>
#include <intrin.h>
#define SEMCBIR_X86_MSVC 1
#endif

namespace semcbir {
namespace {

struct CpuFeatures {
    bool avx2 = false;    // AVX2 + BMI1/2 + POPCNT + OS saves YMM
    bool avx512 = false;  // AVX-512 F/BW/VPOPCNTDQ + OS saves ZMM
};

#if defined(SEMCBIR_X86_GNU) || defined(SEMCBIR_X86_MSVC)
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
#if defined(SEMCBIR_X86_GNU)
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#else
    int regs[4];
    __cpuidex(regs, static_cast<int>(leaf), static_cast<int>(sub));
    for (int i = 0; i < 4; ++i) r[i] = static_cast<unsigned>(regs[i]);
#endif
}

unsigned long long xgetbv0() {
#if defined(SEMCBIR_X86_GNU)
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<unsigned long long>(hi) << 32) | lo;
#else
    return _xgetbv(0);
#endif
}

CpuFeatures detect() {
    CpuFeatures f;
    unsigned r[4];
    cpuid(0, 0, r);
    const unsigned max_leaf = r[0];
    if (max_leaf < 7) return f;
    cpuid(1, 0, r);
    const bool popcnt = (r[2] >> 23) & 1;
    const bool osxsave = (r[2] >> 27) & 1;
    const bool avx = (r[2] >> 28) & 1;
    if (!osxsave || !avx) return f;
    const unsigned long long xcr0 = xgetbv0();
    const bool ymm_os = (xcr0 & 0x6) == 0x6;
    const bool zmm_os = (xcr0 & 0xE6) == 0xE6;
    cpuid(7, 0, r);
    const bool avx2 = (r[1] >> 5) & 1;
    const bool bmi1 = (r[1] >> 3) & 1;
    const bool bmi2 = (r[1] >> 8) & 1;
    const bool avx512f = (r[1] >> 16) & 1;
    const bool avx512bw = (r[1] >> 30) & 1;
    const bool vpopcntdq = (r[2] >> 14) & 1;
    f.avx2 = avx2 && bmi1 && bmi2 && popcnt && ymm_os;
    f.avx512 = f.avx2 && avx512f && avx512bw && vpopcntdq && zmm_os;
    return f;
}
#else
CpuFeatures detect() { return {}; }
#endif

const CpuFeatures& features() {
    static const CpuFeatures f = detect();
    return f;
}

Isa best_supported() noexcept {
    if (isa_supported(Isa::avx512)) return Isa::avx512;
    if (isa_supported(Isa::avx2)) return Isa::avx2;
    return Isa::scalar;
}

std::atomic<int>& active_slot() {
    static std::atomic<int> slot{static_cast<int>(best_supported())};
    return slot;
}

}  // namespace

const char* isa_name(Isa isa) noexcept {
    switch (isa) {
        case Isa::scalar: return "scalar";
        case Isa::avx2: return "avx2";
        case Isa::avx512: return "avx512";
    }
    return "unknown";
}

Isa parse_isa(const std::string& name) {
    if (name == "scalar") return Isa::scalar;
    if (name == "avx2") return Isa::avx2;
    if (name == "avx512") return Isa::avx512;
    throw std::invalid_argument("unknown ISA level '" + name +
                                "': expected one of scalar, avx2, avx512");
}

bool isa_supported(Isa isa) noexcept {
    switch (isa) {
        case Isa::scalar: return true;
        case Isa::avx2:
#if defined(SEMCBIR_HAVE_AVX2)
            return features().avx2;
#else
            return false;
#endif
        case Isa::avx512:
#if defined(SEMCBIR_HAVE_AVX512)
            return features().avx512;
#else
            return false;
#endif
    }
    return false;
}

std::vector<Isa> supported_isas() {
    std::vector<Isa> out;
    for (Isa i : {Isa::scalar, Isa::avx2, Isa::avx512})
        if (isa_supported(i)) out.push_back(i);
    return out;
}

Isa active_isa() noexcept { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
    if (!isa_supported(isa))
        throw std::invalid_argument(std::string("ISA level '") + isa_name(isa) +
                                    "' is not supported by this CPU/build");
    active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace semcbir
