// CSR validation: validate_csr, and the pieces the streaming sparse L2 search checks with.
#include "semcbir/csr.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "csr_check.hpp"

namespace semcbir {
namespace detail {

void check_csr_shape(const CsrView& m, const std::string& who) {
    if (m.rows < 0 || m.cols < 0) throw std::invalid_argument(who + ": negative shape");
    if (!m.indptr) throw std::invalid_argument(who + ": missing indptr");
    if (m.indptr[0] != 0)
        throw std::invalid_argument(who + ": indptr[0] must be 0, got " + std::to_string(m.indptr[0]));
    for (int64_t r = 0; r < m.rows; ++r)
        if (m.indptr[r + 1] < m.indptr[r])
            throw std::invalid_argument(who + ": indptr must be non-decreasing (row " +
                                        std::to_string(r) + ")");
    if (m.indptr[m.rows] > 0 && (!m.indices || !m.data))
        throw std::invalid_argument(who + ": missing indices or data");
}

void throw_row_error(const CsrView& m, int64_t r, const std::string& who) {
    const int64_t b = m.indptr[r], e = m.indptr[r + 1];
    for (int64_t t = b; t < e; ++t) {
        const int64_t c = m.indices[t];
        if (c < 0 || c >= m.cols)
            throw std::invalid_argument(who + ": column index " + std::to_string(c) + " in row " +
                                        std::to_string(r) + " is outside [0, " +
                                        std::to_string(m.cols) + ")");
        if (t > b && c <= m.indices[t - 1])
            throw std::invalid_argument(
                who + ": column indices must be strictly increasing within each row (row " +
                std::to_string(r) + "); sort them and sum duplicates first");
        if (!std::isfinite(m.data[t]))
            throw std::invalid_argument(who + ": non-finite value in row " + std::to_string(r));
    }
    throw std::logic_error(who + ": row " + std::to_string(r) + " failed the fast check only");
}

}  // namespace detail

void validate_csr(const CsrView& m, const char* name) {
    const std::string who(name);
    detail::check_csr_shape(m, who);
    for (int64_t r = 0; r < m.rows; ++r)
        if (!detail::csr_row_ok(m, r)) detail::throw_row_error(m, r, who);
}

}  // namespace semcbir
