// Software prefetch hints (no-ops where the compiler has none).
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define SEMCBIR_PREFETCH(p) __builtin_prefetch(p)
#define SEMCBIR_PREFETCH_L2(p) __builtin_prefetch(p, 0, 2)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#define SEMCBIR_PREFETCH(p) _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0)
#define SEMCBIR_PREFETCH_L2(p) _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1)
#else
#define SEMCBIR_PREFETCH(p) ((void)0)
#define SEMCBIR_PREFETCH_L2(p) ((void)0)
#endif
