// Minimal fork-join helper: split [0, n) into contiguous chunks over threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace semcbir {

/// Most threads one call uses: a larger `threads`, and threads = 0 on a larger machine, are
/// capped here (and every call uses at most one thread per work item). Results never depend
/// on the thread count.
constexpr int kMaxThreads = 1024;

/// threads <= 0 means all hardware threads; the result is in [1, kMaxThreads].
inline int resolve_threads(int threads) noexcept {
    if (threads <= 0) {
        const unsigned hw = std::thread::hardware_concurrency();
        threads = hw == 0 ? 1 : static_cast<int>(std::min<unsigned>(hw, kMaxThreads));
    }
    return std::min(threads, kMaxThreads);
}

/// Calls fn(chunk, begin, end) on `workers` contiguous chunks of [0, n) (chunk c is
/// [floor(c n / W), floor((c + 1) n / W)), W = min(workers, n, kMaxThreads)); the calling
/// thread runs chunk 0. A thread that cannot be started (resource limits: std::system_error,
/// or std::bad_alloc) is not an error: the calling thread runs that chunk and the later ones
/// itself, with the same chunk numbers, so the results are the same. Exceptions from the
/// chunks are rethrown on the caller's thread (the one of the lowest chunk) once every
/// started thread has been joined.
template <class Fn>
void parallel_chunks(int64_t n, int workers, Fn&& fn) {
    if (n <= 0) return;
    workers = std::clamp(workers, 1, kMaxThreads);
    if (workers > n) workers = static_cast<int>(n);
    // floor(n * w / workers) without overflowing n * w: n = q * workers + r, r * w < 2^20.
    const int64_t q = n / workers, r = n % workers;
    auto bound = [q, r, workers](int w) { return q * w + r * w / workers; };
    if (workers == 1) {
        fn(0, int64_t{0}, n);
        return;
    }
    std::vector<std::exception_ptr> errors;
    std::vector<std::thread> pool;
    try {
        errors.resize(static_cast<size_t>(workers));
        pool.reserve(static_cast<size_t>(workers - 1));
    } catch (const std::bad_alloc&) {  // no thread started yet: run the chunks here, in order
        for (int w = 0; w < workers; ++w) fn(w, bound(w), bound(w + 1));
        return;
    }
    auto run = [&](int w) noexcept {
        try {
            fn(w, bound(w), bound(w + 1));
        } catch (...) {
            errors[static_cast<size_t>(w)] = std::current_exception();
        }
    };
    int started = 1;  // chunks [1, started) run on their own thread
    for (; started < workers; ++started) {
        try {
            pool.emplace_back(run, started);
        } catch (...) {  // std::system_error (EAGAIN: thread or memory limit) or bad_alloc
            break;
        }
    }
    run(0);
    for (int w = started; w < workers; ++w) run(w);
    for (auto& t : pool) t.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace semcbir
