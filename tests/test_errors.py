"""Every validated argument: ValueError whose message names the argument."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import semcbir_fast as sf
from reference import package_root

LAB = np.zeros((4, 5), dtype=np.int32)
CODES = np.zeros((3, 16), dtype=np.uint8)


def encode(labels=LAB, num_classes=3, levels=1, **kw):
    return sf.encode_sbs(labels, num_classes=num_classes, levels=levels, **kw)


# --------------------------------------------------------------------------------------
# encode_sbs
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "labels",
    [
        np.zeros((4, 5), np.float32),
        np.zeros((4, 5), np.float64),
        np.zeros((4, 5), bool),
        np.zeros((4, 5), np.complex64),
        [np.zeros((4, 5), np.int32), np.zeros((2, 2), np.float32)],
        np.array(3, dtype=np.int32),
        np.zeros((2, 3, 4, 5), np.int32),
        np.zeros((0, 5), np.int32),
        np.zeros((5, 0), np.int32),
        np.zeros((2, 0, 3), np.int32),
        [],
        [np.zeros((3, 3), np.int32), np.zeros((0, 3), np.int32)],
        [np.zeros((3, 3), np.int32), np.zeros((3, 3, 3), np.int32)],
        np.array(["a", "b"]),
    ],
    ids=[
        "float32",
        "float64",
        "bool",
        "complex",
        "list-with-float",
        "0-D",
        "4-D",
        "H=0",
        "W=0",
        "batch-W=0",
        "empty-list",
        "list-with-empty",
        "list-with-3-D",
        "str",
    ],
)
def test_encode_bad_labels(backend_isa, labels):
    with pytest.raises(ValueError, match="labels"):
        encode(labels)


def test_encode_bad_torch_labels(backend_isa):
    torch = pytest.importorskip("torch")
    for t in (
        torch.zeros(4, 5),
        torch.zeros(4, 5, dtype=torch.bool),
        torch.zeros(2, 2, 2, 2, dtype=torch.int64),
        torch.zeros(0, 4, dtype=torch.int64),
    ):
        with pytest.raises(ValueError, match="labels"):
            encode(t)


@pytest.mark.parametrize(
    "dtype,num_classes",
    [
        (np.int32, 0),
        (np.int32, -3),
        (np.uint8, 257),
        (np.int8, 129),
        (np.int16, 32769),
        (np.uint16, 65537),
        (np.int32, 65537),
        (np.int64, 10**6),
        (np.uint64, 2**40),
    ],
)
def test_encode_bad_num_classes(backend_isa, dtype, num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        encode(LAB.astype(dtype), num_classes=num_classes)


def test_encode_num_classes_limits_ok(backend_isa):
    """The largest num_classes each dtype can hold is accepted."""
    for dtype, m in (
        (np.uint8, 256),
        (np.int8, 128),
        (np.int16, 32768),
        (np.uint16, 65536),
        (np.int32, 65536),
    ):
        code = encode(LAB.astype(dtype), num_classes=m, levels=0)
        assert code.shape == (sf.sbs_layout(m, 0).stride,)
    # integer-like types are fine
    encode(num_classes=np.int64(3), levels=np.int32(1))


def test_encode_bad_num_classes_in_list(backend_isa):
    maps = [np.zeros((3, 3), np.int32), np.zeros((3, 3), np.uint8)]
    with pytest.raises(ValueError, match="num_classes"):
        encode(maps, num_classes=300)


@pytest.mark.parametrize("levels", [-1, 13, 100, 1.5, "2", None])
def test_encode_bad_levels(backend_isa, levels):
    with pytest.raises(ValueError, match="levels"):
        encode(levels=levels)


@pytest.mark.parametrize("threads", [-1, -8])
def test_encode_bad_threads(backend_isa, threads):
    with pytest.raises(ValueError, match="threads"):
        encode(threads=threads)


@pytest.mark.parametrize("levels", [-1, 13, 1.5])
def test_layout_bad_levels(levels):
    with pytest.raises(ValueError, match="levels"):
        sf.sbs_layout(3, levels)


@pytest.mark.parametrize("num_classes", [0, -1, 65537])
def test_layout_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        sf.sbs_layout(num_classes, 1)


# --------------------------------------------------------------------------------------
# hamming_topk / hamming_distances
# --------------------------------------------------------------------------------------
BAD_CODES = [
    (np.zeros((3, 16), np.int8), "int8"),
    (np.zeros((3, 16), np.uint16), "uint16"),
    (np.zeros((3, 16), np.float32), "float32"),
    (np.zeros((3, 16), bool), "bool"),
    (np.zeros((3, 2, 16), np.uint8), "3-D"),
    (np.array(5, dtype=np.uint8), "0-D"),
    (np.zeros((3, 0), np.uint8), "width-0"),
]


@pytest.mark.parametrize("bad", [b[0] for b in BAD_CODES], ids=[b[1] for b in BAD_CODES])
def test_topk_bad_codes(backend_isa, bad):
    with pytest.raises(ValueError, match="queries"):
        sf.hamming_topk(bad, CODES, 2)
    with pytest.raises(ValueError, match="database"):
        sf.hamming_topk(CODES, bad, 2)
    with pytest.raises(ValueError):
        sf.hamming_distances(bad, CODES)
    with pytest.raises(ValueError):
        sf.hamming_distances(CODES, bad)


def test_topk_width_mismatch(backend_isa):
    for w in (8, 15, 17, 24):
        other = np.zeros((2, w), np.uint8)
        with pytest.raises(ValueError, match="queries|database"):
            sf.hamming_topk(other, CODES, 1)
        with pytest.raises(ValueError, match="queries|database"):
            sf.hamming_topk(CODES, other, 1)
        with pytest.raises(ValueError):
            sf.hamming_distances(other, CODES)


@pytest.mark.parametrize("k", [0, -1, -100])
def test_topk_bad_k(backend_isa, k):
    with pytest.raises(ValueError, match="k"):
        sf.hamming_topk(CODES, CODES, k)


@pytest.mark.parametrize("threads", [-1, -4])
def test_hamming_bad_threads(backend_isa, threads):
    with pytest.raises(ValueError, match="threads"):
        sf.hamming_topk(CODES, CODES, 1, threads=threads)
    with pytest.raises(ValueError, match="threads"):
        sf.hamming_distances(CODES, CODES, threads=threads)


# --------------------------------------------------------------------------------------
# decode_sbs
# --------------------------------------------------------------------------------------
def test_decode_bad_codes(backend_isa):
    lay = sf.sbs_layout(14, 2)  # nbits 1120 -> nbytes 140, stride 144
    assert lay.nbytes == 140
    ok = np.zeros((2, lay.stride), np.uint8)
    sf.decode_sbs(ok, lay)
    sf.decode_sbs(ok[:, : lay.nbytes], lay)  # exactly nbytes is enough
    for bad in (
        ok[:, : lay.nbytes - 1],
        ok[0, :10],
        ok.astype(np.int16),
        ok.astype(np.float32),
        ok[None],
        np.array(1, np.uint8),
    ):
        with pytest.raises(ValueError, match="codes"):
            sf.decode_sbs(bad, lay)


def test_decode_bad_layout(backend_isa):
    for bad in (None, 14, (14, 2), "layout"):
        with pytest.raises((ValueError, TypeError), match="layout"):
            sf.decode_sbs(np.zeros((1, 144), np.uint8), bad)


# --------------------------------------------------------------------------------------
# backend / ISA selection
# --------------------------------------------------------------------------------------
def test_bad_backend_and_isa():
    with pytest.raises(ValueError):
        sf.set_backend("cuda-magic")
    with pytest.raises(ValueError):
        sf.set_backend("")
    prev = sf.backend()
    try:
        try:
            sf.set_backend("cpp")
        except RuntimeError:
            pytest.skip("C++ backend not built")
        before = sf.active_isa()
        for bad in ("sse9", "AVX2-", ""):
            with pytest.raises(ValueError):
                sf.set_isa(bad)
        assert sf.active_isa() == before
    finally:
        sf.set_backend(prev)


def _import_error(hide: tuple[str, ...], **env) -> subprocess.CompletedProcess:
    """`import semcbir_fast` in a fresh process with the modules `hide` made unimportable."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEMCBIR_")}
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [package_root()] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    code = ("import sys\n"
            f"for name in {hide!r}: sys.modules[name] = None\n"
            "import semcbir_fast as sf\n"
            "print(sf.backend())\n")
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_missing_numba_is_named():
    """SEMCBIR_BACKEND=numba without numba: the error says numba is missing and how to get it,
    and does not blame the (working) compiled core."""
    from semcbir_fast import _backend

    if _backend._core is None:
        pytest.skip("C++ backend not built")
    res = _import_error(("numba",), SEMCBIR_BACKEND="numba")
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:"), res.stderr
    assert "numba is not installed (pip install 'semcbir_fast[numba]')" in last
    assert "_core" not in last and "compiled core" not in last
    # without numba the compiled core is simply used
    res = _import_error(("numba",))
    assert res.returncode == 0 and res.stdout.strip() == "cpp", res.stderr


def test_missing_core_and_numba_are_named():
    res = _import_error(("numba", "semcbir_fast._core"))
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert "compiled core semcbir_fast._core cannot be imported (ModuleNotFoundError" in last, last
    assert "numba is not installed (pip install 'semcbir_fast[numba]')" in last
    res = _import_error(("semcbir_fast._core",), SEMCBIR_BACKEND="cpp")
    assert res.returncode != 0 and "compiled core semcbir_fast._core" in res.stderr
    assert "numba is not installed" not in res.stderr
    pytest.importorskip("numba")
    res = _import_error(("semcbir_fast._core",))  # the fallback takes over
    assert res.returncode == 0 and res.stdout.strip() == "numba", res.stderr
