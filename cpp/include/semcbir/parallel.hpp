// Minimal fork-join helper: split [0, n) into contiguous chunks over threads.
#pragma once

#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace semcbir {

/// threads <= 0 means all hardware threads.
inline int resolve_threads(int threads) noexcept {
    if (threads > 0) return threads;
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

/// Calls fn(worker, begin, end) on `workers` contiguous chunks of [0, n); the calling
/// thread runs chunk 0. Exceptions from workers are rethrown on the caller's thread.
template <class Fn>
void parallel_chunks(int64_t n, int workers, Fn&& fn) {
    if (n <= 0) return;
    if (workers < 1) workers = 1;
    if (workers > n) workers = static_cast<int>(n);
    if (workers == 1) {
        fn(0, int64_t{0}, n);
        return;
    }
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
    auto bound = [n, workers](int w) { return n * w / workers; };
    pool.reserve(static_cast<size_t>(workers - 1));
    for (int w = 1; w < workers; ++w) {
        pool.emplace_back([&, w] {
            try {
                fn(w, bound(w), bound(w + 1));
            } catch (...) {
                errors[static_cast<size_t>(w)] = std::current_exception();
            }
        });
    }
    try {
        fn(0, bound(0), bound(1));
    } catch (...) {
        errors[0] = std::current_exception();
    }
    for (auto& t : pool) t.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace semcbir
