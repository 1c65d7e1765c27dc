// The only file that includes pybind11: converts and checks arrays, releases the GIL, calls
// the core. Friendly argument handling, defaults and docs live in the Python package.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "semcbir/hamming.hpp"
#include "semcbir/isa.hpp"
#include "semcbir/parallel.hpp"
#include "semcbir/sbs.hpp"

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

py::array_t<uint8_t> encode(const std::vector<py::array>& maps, int64_t num_classes, int levels,
                            std::optional<int64_t> ignore_index, bool pyramid, int64_t stride,
                            int threads) {
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
    py::array_t<uint8_t> out({n, static_cast<py::ssize_t>(layout.stride)});
    uint8_t* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        encode_sbs_batch(views.data(), static_cast<int64_t>(views.size()), layout, rule, dst,
                         threads);
    }
    return out;
}

py::tuple topk(const Codes& queries, const Codes& database, int64_t k, int threads) {
    const CodeMatrix q = code_matrix(queries, "queries");
    const CodeMatrix d = code_matrix(database, "database");
    if (k <= 0) throw py::value_error("k must be >= 1, got " + std::to_string(k));
    py::array_t<int32_t> dist({static_cast<py::ssize_t>(q.n), static_cast<py::ssize_t>(k)});
    py::array_t<int64_t> ids({static_cast<py::ssize_t>(q.n), static_cast<py::ssize_t>(k)});
    int32_t* pd = dist.mutable_data();
    int64_t* pi = ids.mutable_data();
    {
        py::gil_scoped_release release;
        hamming_topk(q, d, k, pd, pi, threads);
    }
    return py::make_tuple(dist, ids);
}

py::array_t<int32_t> distances(const Codes& a, const Codes& b, int threads) {
    const CodeMatrix ma = code_matrix(a, "a");
    const CodeMatrix mb = code_matrix(b, "b");
    py::array_t<int32_t> out({static_cast<py::ssize_t>(ma.n), static_cast<py::ssize_t>(mb.n)});
    int32_t* po = out.mutable_data();
    {
        py::gil_scoped_release release;
        hamming_distances(ma, mb, po, threads);
    }
    return out;
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
}
