// The only file that includes pybind11: converts and checks arrays, releases the GIL, calls
// the core. Friendly argument handling, defaults and docs live in the Python package.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "semcbir/csr.hpp"
#include "semcbir/hamming.hpp"
#include "semcbir/isa.hpp"
#include "semcbir/parallel.hpp"
#include "semcbir/phrase.hpp"
#include "semcbir/sbs.hpp"
#include "semcbir/sparse_l2.hpp"
#include "semcbir/sparse_sbs.hpp"
#include "semcbir/topk.hpp"

namespace py = pybind11;
using namespace semcbir;

namespace {

LabelType label_type(const py::array& a) {
    const py::dtype dt = a.dtype();
    const char kind = dt.kind();
    const auto size = dt.itemsize();
    if (kind == 'u') {
        switch (size) {
            case 1: return LabelType::u8;
            case 2: return LabelType::u16;
            case 4: return LabelType::u32;
            case 8: return LabelType::u64;
        }
    } else if (kind == 'i') {
        switch (size) {
            case 1: return LabelType::i8;
            case 2: return LabelType::i16;
            case 4: return LabelType::i32;
            case 8: return LabelType::i64;
        }
    }
    throw py::value_error("labels must have an integer dtype, got " +
                          std::string(py::str(dt)));
}

using Codes = py::array_t<uint8_t, py::array::c_style>;

// Integer arguments arrive as int64 (the Python package has checked them already; anything
// outside int64 is its ValueError, not pybind's TypeError). threads: >= 0, capped at
// kMaxThreads.
int threads_arg(int64_t threads) {
    if (threads < 0)
        throw py::value_error("threads must be >= 0 (0 = all cores), got " +
                              std::to_string(threads));
    return static_cast<int>(std::min<int64_t>(threads, kMaxThreads));
}

[[noreturn]] void memory_error(const std::string& msg) {
    PyErr_SetString(PyExc_MemoryError, msg.c_str());
    throw py::error_already_set();
}

CodeMatrix code_matrix(const Codes& a, const char* name) {
    if (a.ndim() != 2)
        throw py::value_error(std::string(name) + " must be a 2-D uint8 array (n, width)");
    CodeMatrix m;
    m.data = a.data();
    m.n = a.shape(0);
    m.width = a.shape(1);
    m.stride = a.strides(0);
    return m;
}

py::array_t<uint8_t> encode(const std::vector<py::array>& maps, int64_t num_classes,
                            int64_t levels, std::optional<int64_t> ignore_index, bool pyramid,
                            int64_t stride, int64_t threads_in) {
    const int threads = threads_arg(threads_in);
    const SbsLayout layout = make_sbs_layout(num_classes, levels, pyramid, stride);
    std::vector<LabelMap> views;
    views.reserve(maps.size());
    for (const py::array& a : maps) {
        if (a.ndim() != 2) throw py::value_error("labels: every map must be 2-D (H, W)");
        if (!(a.flags() & py::array::c_style))
            throw py::value_error("labels: every map must be C-contiguous");
        LabelMap m;
        m.data = a.data();
        m.type = label_type(a);
        m.height = a.shape(0);
        m.width = a.shape(1);
        views.push_back(m);
    }
    VoidRule rule;
    rule.has_ignore = ignore_index.has_value();
    rule.ignore_index = ignore_index.value_or(0);
    const auto n = static_cast<py::ssize_t>(views.size());
    if (n > 0 && layout.stride > PY_SSIZE_T_MAX / 2 / n)
        memory_error("encode_sbs: " + std::to_string(n) + " codes of " +
                     std::to_string(layout.stride) + " bytes do not fit in memory");
    py::array_t<uint8_t> out({n, static_cast<py::ssize_t>(layout.stride)});
    uint8_t* dst = out.mutable_data();
    bool out_of_memory = false;
    {
        py::gil_scoped_release release;
        try {
            encode_sbs_batch(views.data(), static_cast<int64_t>(views.size()), layout, rule, dst,
                             threads);
        } catch (const std::bad_alloc&) {
            out_of_memory = true;  // raised below, with the GIL
        }
    }
    if (out_of_memory) {
        int64_t w = 0, px = 0;
        for (const LabelMap& m : views) {
            w = std::max(w, m.width);
            px = std::max(px, m.height * m.width);
        }
        memory_error("encode_sbs: out of memory for the encoder's scratch memory (" +
                     std::to_string(sbs_workspace_bytes(layout, w, px) >> 20) +
                     " MiB per thread at levels=" + std::to_string(layout.levels) +
                     ", num_classes=" + std::to_string(layout.num_classes) +
                     "); use fewer levels or threads");
    }
    return out;
}

// (distances, ids) arrays of shape (nq, k), filled by `search(distances, ids)` without the GIL.
// k and nq * k are checked before anything is allocated (the limits of topk.hpp).
template <class D, class Search>
py::tuple ranked_results(int64_t nq, int64_t k, Search&& search) {
    check_topk_size(nq, k);
    py::array_t<D> dist({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(k)});
    py::array_t<int64_t> ids({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(k)});
    D* pd = dist.mutable_data();
    int64_t* pi = ids.mutable_data();
    {
        py::gil_scoped_release release;
        search(pd, pi);
    }
    return py::make_tuple(dist, ids);
}

py::tuple topk(const Codes& queries, const Codes& database, int64_t k, int64_t threads_in) {
    const int threads = threads_arg(threads_in);
    const CodeMatrix q = code_matrix(queries, "queries");
    const CodeMatrix d = code_matrix(database, "database");
    return ranked_results<int32_t>(q.n, k, [&](int32_t* pd, int64_t* pi) {
        hamming_topk(q, d, k, pd, pi, threads);
    });
}

py::array_t<int32_t> distances(const Codes& a, const Codes& b, int64_t threads_in) {
    const int threads = threads_arg(threads_in);
    const CodeMatrix ma = code_matrix(a, "a");
    const CodeMatrix mb = code_matrix(b, "b");
    if (ma.n > 0 && mb.n > PY_SSIZE_T_MAX / 8 / ma.n)
        memory_error("hamming_distances: a " + std::to_string(ma.n) + " x " +
                     std::to_string(mb.n) + " int32 matrix does not fit in memory");
    py::array_t<int32_t> out({static_cast<py::ssize_t>(ma.n), static_cast<py::ssize_t>(mb.n)});
    int32_t* po = out.mutable_data();
    {
        py::gil_scoped_release release;
        hamming_distances(ma, mb, po, threads);
    }
    return out;
}

// ---- phrase building and sparse L2 (SBoVP) ----
using F32 = py::array_t<float, py::array::c_style>;
using I32 = py::array_t<int32_t, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

template <class T>
py::array_t<T> to_numpy_vec(const std::vector<T>& v) {
    py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

py::tuple build_phrases(const std::vector<F32>& xy, const std::vector<I32>& words,
                        const std::vector<I32>& classes, int64_t vocab_size, int64_t phrase_len,
                        int64_t threads_in) {
    const int threads = threads_arg(threads_in);
    if (words.size() != xy.size() || classes.size() != xy.size())
        throw py::value_error("xy, words and classes must have one array per image, got " +
                              std::to_string(xy.size()) + ", " + std::to_string(words.size()) +
                              " and " + std::to_string(classes.size()));
    std::vector<KeypointSet> sets(xy.size());
    for (size_t i = 0; i < xy.size(); ++i) {
        const std::string where = "image " + std::to_string(i);
        if (xy[i].ndim() != 2 || xy[i].shape(1) != 2)
            throw py::value_error(where + ": xy must be (n, 2) float32");
        const auto n = xy[i].shape(0);
        if (words[i].ndim() != 1 || words[i].shape(0) != n || classes[i].ndim() != 1 ||
            classes[i].shape(0) != n)
            throw py::value_error(where + ": words and classes must be 1-D with one entry per "
                                  "keypoint (" + std::to_string(n) + ")");
        sets[i].xy = xy[i].data();
        sets[i].words = words[i].data();
        sets[i].classes = classes[i].data();
        sets[i].n = n;
    }
    SparseRows rows;
    {
        py::gil_scoped_release release;
        rows = build_phrase_matrices(sets.data(), static_cast<int64_t>(sets.size()), vocab_size,
                                     phrase_len, threads);
    }
    return py::make_tuple(to_numpy_vec(rows.indptr), to_numpy_vec(rows.indices),
                          to_numpy_vec(rows.data));
}

CsrView csr_view(const I64& indptr, const I64& indices, const F32& data, int64_t cols,
                 const char* name) {
    const std::string who(name);
    if (indptr.ndim() != 1 || indptr.shape(0) < 1)
        throw py::value_error(who + ": indptr must be 1-D with rows + 1 >= 1 entries");
    if (indices.ndim() != 1 || data.ndim() != 1 || indices.shape(0) != data.shape(0))
        throw py::value_error(who + ": indices and data must be 1-D of the same length");
    const int64_t nnz = indices.shape(0);
    if (indptr.data()[indptr.shape(0) - 1] != nnz)
        throw py::value_error(who + ": indptr[-1] must equal len(indices) = " +
                              std::to_string(nnz));
    if (cols < 0) throw py::value_error(who + ": number of columns must be >= 0");
    CsrView v;
    v.indptr = indptr.data();
    v.indices = indices.data();
    v.data = data.data();
    v.rows = indptr.shape(0) - 1;
    v.cols = cols;
    return v;
}

py::tuple sparse_topk(const I64& q_indptr, const I64& q_indices, const F32& q_data,
                      const I64& d_indptr, const I64& d_indices, const F32& d_data, int64_t cols,
                      int64_t k, int64_t threads_in) {
    const int threads = threads_arg(threads_in);
    const CsrView q = csr_view(q_indptr, q_indices, q_data, cols, "queries");
    const CsrView d = csr_view(d_indptr, d_indices, d_data, cols, "database");
    return ranked_results<float>(q.rows, k, [&](float* pd, int64_t* pi) {
        sparse_l2_topk(q, d, k, pd, pi, threads);
    });
}

py::tuple index_search(const SparseL2Index& index, const I64& q_indptr, const I64& q_indices,
                       const F32& q_data, int64_t k, int64_t threads_in) {
    const int threads = threads_arg(threads_in);
    const CsrView q = csr_view(q_indptr, q_indices, q_data, index.cols(), "queries");
    return ranked_results<float>(q.rows, k, [&](float* pd, int64_t* pi) {
        index.search(q, k, pd, pi, threads);
    });
}

std::unique_ptr<SparseL2Index> make_index(const I64& indptr, const I64& indices, const F32& data,
                                        int64_t cols, int64_t threads_in) {
    const int threads = threads_arg(threads_in);
    const CsrView v = csr_view(indptr, indices, data, cols, "database");
    py::gil_scoped_release release;
    return std::make_unique<SparseL2Index>(v, threads);
}

// ---- sparse SBS search ----
SparseSbsShape sparse_shape(int64_t num_classes, int64_t levels, bool pyramid) {
    return make_sparse_sbs_shape(make_sbs_layout(num_classes, levels, pyramid, 0));
}

// The checked view of (offsets, entries, popcounts); the arrays stay owned by the caller.
SparseSbsView sparse_view(const I64& offsets, const py::array& entries, const I32& popcounts,
                          const SparseSbsShape& shape) {
    if (offsets.ndim() != 1 || offsets.shape(0) < 1)
        throw py::value_error("sparse codes: offsets must be 1-D int64 with n + 1 >= 1 entries");
    const int64_t n = offsets.shape(0) - 1;
    if (popcounts.ndim() != 1 || popcounts.shape(0) != n)
        throw py::value_error("sparse codes: popcounts must be 1-D int32 with one entry per row (" +
                              std::to_string(n) + ")");
    const py::dtype want = shape.wide ? py::dtype::of<uint32_t>() : py::dtype::of<uint16_t>();
    if (entries.ndim() != 1 || !entries.dtype().is(want) ||
        !(entries.flags() & py::array::c_style))
        throw py::value_error(std::string("sparse codes: entries must be a 1-D contiguous ") +
                              (shape.wide ? "uint32" : "uint16") + " array for a layout of " +
                              std::to_string(shape.cells) + " cells, got dtype " +
                              std::string(py::str(entries.dtype())));
    SparseSbsView v;
    v.offsets = offsets.data();
    v.entries = entries.data();
    v.popcounts = popcounts.data();
    v.n = n;
    v.wide = shape.wide;
    return v;
}

py::tuple sparse_encode(const Codes& codes, int64_t num_classes, int64_t levels, bool pyramid,
                        int64_t threads_in) {
    const int threads = threads_arg(threads_in);
    const SparseSbsShape shape = sparse_shape(num_classes, levels, pyramid);
    const CodeMatrix m = code_matrix(codes, "codes");
    if (m.width != shape.stride)
        throw py::value_error("codes must have " + std::to_string(shape.stride) +
                              " bytes per row (the layout's stride), got " +
                              std::to_string(m.width));
    I64 offsets(static_cast<py::ssize_t>(m.n + 1));
    int64_t* off = offsets.mutable_data();
    int64_t bad = -1;
    {
        py::gil_scoped_release release;
        bad = sparse_sbs_count(m, shape, off + 1, threads);
    }
    if (bad >= 0)
        throw py::value_error("codes row " + std::to_string(bad) +
                              " is not a canonical SBS code (a presence bit without a 1..4 "
                              "thermometer code, or a proportion / padding bit without its "
                              "presence bit); only the dense engine searches such codes");
    off[0] = 0;
    for (int64_t i = 0; i < m.n; ++i) off[i + 1] += off[i];
    const int64_t nnz = off[m.n];
    py::array entries = shape.wide ? py::array(py::array_t<uint32_t>(static_cast<py::ssize_t>(nnz)))
                                   : py::array(py::array_t<uint16_t>(static_cast<py::ssize_t>(nnz)));
    I32 pop(static_cast<py::ssize_t>(m.n));
    SparseSbsView v;
    v.offsets = off;
    v.entries = entries.mutable_data();
    v.popcounts = pop.mutable_data();
    v.n = m.n;
    v.wide = shape.wide;
    {
        py::gil_scoped_release release;
        sparse_sbs_fill(m, shape, v, threads);
    }
    return py::make_tuple(offsets, entries, pop);
}

py::array_t<uint8_t> sparse_decode(const I64& offsets, const py::array& entries,
                                   const I32& popcounts, int64_t num_classes, int64_t levels,
                                   bool pyramid, int64_t threads_in) {
    const int threads = threads_arg(threads_in);
    const SparseSbsShape shape = sparse_shape(num_classes, levels, pyramid);
    const SparseSbsView v = sparse_view(offsets, entries, popcounts, shape);
    if (v.n > 0 && shape.stride > PY_SSIZE_T_MAX / 2 / v.n)
        memory_error("sparse_sbs_decode: " + std::to_string(v.n) + " codes of " +
                     std::to_string(shape.stride) + " bytes do not fit in memory");
    py::array_t<uint8_t> out({static_cast<py::ssize_t>(v.n), static_cast<py::ssize_t>(shape.stride)});
    uint8_t* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        check_sparse_sbs(v, shape, entries.shape(0));
        sparse_sbs_decode(v, shape, dst, shape.stride, threads);
    }
    return out;
}

void sparse_check(const I64& offsets, const py::array& entries, const I32& popcounts,
                  int64_t num_classes, int64_t levels, bool pyramid) {
    const SparseSbsShape shape = sparse_shape(num_classes, levels, pyramid);
    const SparseSbsView v = sparse_view(offsets, entries, popcounts, shape);
    py::gil_scoped_release release;
    check_sparse_sbs(v, shape, entries.shape(0));
}

// The index keeps the caller's arrays alive (it reads them, never writes them).
struct PySparseSbsIndex {
    py::array offsets, entries, popcounts;
    std::unique_ptr<SparseSbsIndex> index;
};

std::unique_ptr<PySparseSbsIndex> make_sparse_sbs_index(const I64& offsets,
                                                        const py::array& entries,
                                                        const I32& popcounts,
                                                        int64_t num_classes, int64_t levels,
                                                        bool pyramid, int64_t threads_in,
                                                        double hot_fraction) {
    const int threads = threads_arg(threads_in);
    const SparseSbsShape shape = sparse_shape(num_classes, levels, pyramid);
    const SparseSbsView v = sparse_view(offsets, entries, popcounts, shape);
    auto out = std::make_unique<PySparseSbsIndex>();
    out->offsets = offsets;
    out->entries = entries;
    out->popcounts = popcounts;
    const int64_t nnz = entries.shape(0);
    bool oom = false;
    {
        py::gil_scoped_release release;
        try {
            out->index = std::make_unique<SparseSbsIndex>(v, shape, nnz, threads, hot_fraction);
        } catch (const std::bad_alloc&) {
            oom = true;
        }
    }
    if (oom)
        memory_error("SparseSBSIndex: out of memory for the inverted lists of " +
                     std::to_string(nnz) + " entries");
    return out;
}

py::tuple sparse_sbs_search(const PySparseSbsIndex& self, const Codes& queries, int64_t k,
                            int64_t threads_in, int64_t method) {
    const int threads = threads_arg(threads_in);
    if (method < 0 || method > 2)
        throw py::value_error("method must be 0 (auto), 1 (inverted) or 2 (scan), got " +
                              std::to_string(method));
    const CodeMatrix q = code_matrix(queries, "queries");
    if (q.width != self.index->shape().stride)
        throw py::value_error("queries must have " + std::to_string(self.index->shape().stride) +
                              " bytes per code (the layout's stride), got " +
                              std::to_string(q.width));
    return ranked_results<int32_t>(q.n, k, [&](int32_t* pd, int64_t* pi) {
        self.index->search(q, k, pd, pi, threads, static_cast<SparseSbsMethod>(method));
    });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "semcbir_fast compiled core (private; use the semcbir_fast package)";
    m.def("encode_sbs", &encode, py::arg("maps"), py::arg("num_classes"), py::arg("levels"),
          py::arg("ignore_index"), py::arg("pyramid"), py::arg("stride"), py::arg("threads"));
    m.def("hamming_topk", &topk, py::arg("queries"), py::arg("database"), py::arg("k"),
          py::arg("threads"));
    m.def("hamming_distances", &distances, py::arg("a"), py::arg("b"), py::arg("threads"));
    m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
    m.def("available_isas", [] {
        std::vector<std::string> out;
        for (Isa i : supported_isas()) out.emplace_back(isa_name(i));
        return out;
    });
    m.def("set_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); },
          py::arg("name"));
    m.def("hardware_threads", [] { return resolve_threads(0); });
    m.def("build_phrase_matrices", &build_phrases, py::arg("xy"), py::arg("words"),
          py::arg("classes"), py::arg("vocab_size"), py::arg("phrase_len"), py::arg("threads"));
    m.def("sparse_l2_topk", &sparse_topk, py::arg("q_indptr"), py::arg("q_indices"),
          py::arg("q_data"), py::arg("d_indptr"), py::arg("d_indices"), py::arg("d_data"),
          py::arg("cols"), py::arg("k"), py::arg("threads"));
    py::class_<SparseL2Index>(m, "SparseL2Index")
        .def(py::init(&make_index), py::arg("indptr"), py::arg("indices"), py::arg("data"),
             py::arg("cols"), py::arg("threads"))
        .def_property_readonly("rows", &SparseL2Index::rows)
        .def_property_readonly("cols", &SparseL2Index::cols)
        .def_property_readonly("nnz", &SparseL2Index::nnz)
        .def("search", &index_search, py::arg("q_indptr"), py::arg("q_indices"),
             py::arg("q_data"), py::arg("k"), py::arg("threads"));
    m.def("sparse_sbs_encode", &sparse_encode, py::arg("codes"), py::arg("num_classes"),
          py::arg("levels"), py::arg("pyramid"), py::arg("threads"));
    m.def("sparse_sbs_decode", &sparse_decode, py::arg("offsets"), py::arg("entries"),
          py::arg("popcounts"), py::arg("num_classes"), py::arg("levels"), py::arg("pyramid"),
          py::arg("threads"));
    m.def("sparse_sbs_check", &sparse_check, py::arg("offsets"), py::arg("entries"),
          py::arg("popcounts"), py::arg("num_classes"), py::arg("levels"), py::arg("pyramid"));
    py::class_<PySparseSbsIndex>(m, "SparseSBSIndex")
        .def(py::init(&make_sparse_sbs_index), py::arg("offsets"), py::arg("entries"),
             py::arg("popcounts"), py::arg("num_classes"), py::arg("levels"), py::arg("pyramid"),
             py::arg("threads"), py::arg("hot_fraction"))
        .def_property_readonly("rows", [](const PySparseSbsIndex& s) { return s.index->rows(); })
        .def_property_readonly("nnz", [](const PySparseSbsIndex& s) { return s.index->nnz(); })
        .def_property_readonly("inverted_bytes",
                               [](const PySparseSbsIndex& s) { return s.index->inverted_bytes(); })
        .def_property_readonly("hot_cells",
                               [](const PySparseSbsIndex& s) { return s.index->hot_cells(); })
        .def("search", &sparse_sbs_search, py::arg("queries"), py::arg("k"), py::arg("threads"),
             py::arg("method"));
}
