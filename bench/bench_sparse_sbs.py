"""Sparse SBS search against our dense scan and faiss IndexBinaryFlat, one run, same codes.

Codes with the real distribution: the default model's label maps of Corel-1K (cached by
``semcbir eval`` / ``semcbir index``; ``--labels FILE.npz`` or build/sparse/corel1k_labels.npz
with ``shapes``, ``flat``, ``num_classes``) are encoded, and N synthetic codes are made block by
block: each synthetic image takes a random real image, and each of its blocks keeps that
image's block with probability 1/2, else the same block of another random real image. Every
block's content (which classes, at which levels, together) is a real one, so each cell keeps
its real frequency and the classes of a block keep their co-occurrence; half the blocks of
an image share one source, which keeps much of the co-occurrence across blocks.

Run as a script (the table of docs/benchmarks.md#sparse-sbs-search)::

    PYTHONPATH=python python bench/bench_sparse_sbs.py --n 100000 1000000 --levels 2 3
    PYTHONPATH=python python bench/bench_sparse_sbs.py --lanes --levels 3 --nq 1 16 64
    PYTHONPATH=python python bench/bench_sparse_sbs.py --hot-cost --n 200000 --levels 3
    PYTHONPATH=python python bench/bench_sparse_sbs.py --make-labels   # the label cache first

or as a pytest-benchmark suite (N = 100k, 64 blocks, nq = 1; checks results first)::

    PYTHONPATH=python python -m pytest bench/bench_sparse_sbs.py --benchmark-only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import semcbir_fast as sf
from semcbir_fast.sparse_sbs import SparseSBSCodes, SparseSBSSearcher, to_sparse_sbs

DEFAULT_LABELS = ROOT / "build" / "sparse" / "corel1k_labels.npz"


def load_real_codes(levels: int, labels: Path = DEFAULT_LABELS) -> tuple[np.ndarray, sf.SBSLayout]:
    """Dense codes of the cached Corel-1K label maps (FileNotFoundError when absent)."""
    if not labels.exists():
        raise FileNotFoundError(f"{labels}: cache the Corel-1K label maps first (see the module "
                                "docstring)")
    z = np.load(labels)
    flat, shapes, m = z["flat"], z["shapes"], int(z["num_classes"])
    maps, o = [], 0
    for h, w in shapes:
        maps.append(flat[o:o + h * w].reshape(h, w))
        o += h * w
    return sf.encode_sbs(maps, num_classes=m, levels=levels), sf.sbs_layout(m, levels)


def make_labels(out: Path = DEFAULT_LABELS, model: str = "ade20k-mnv2") -> Path:
    """Segment Corel-1K (``$SEMCBIR_DATA``) with ``model`` (through the per-image label cache)
    and write the maps to ``out`` in the form :func:`load_real_codes` reads."""
    from semcbir_fast.eval.cache import segment_cached
    from semcbir_fast.eval.datasets import corel1k

    ds = corel1k()
    maps, info = segment_cached(ds.images, model=model, log=print)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, flat=np.concatenate([m.reshape(-1) for m in maps]),
                        shapes=np.array([m.shape for m in maps], np.int64),
                        num_classes=info["num_classes"])
    print(f"{len(maps)} label maps of {model} ({info['num_classes']} classes) -> {out}")
    return out


def synthesise(real: SparseSBSCodes, n: int, seed: int = 0, keep: float = 0.5,
               chunk: int = 100_000) -> SparseSBSCodes:
    """``n`` synthetic sparse codes from the blocks of ``real`` (see the module docstring)."""
    lay = real.layout
    nb, m = lay.blocks, lay.num_classes
    r = len(real)
    cells = real.entries.astype(np.int64) >> 2
    row = np.repeat(np.arange(r), np.diff(real.offsets))
    key = row * nb + cells // m  # ascending: rows ascend, cells ascend inside a row
    seg_start = np.searchsorted(key, np.arange(r * nb))
    seg_len = np.diff(np.append(seg_start, key.shape[0]))
    bits = 2 + (real.entries.astype(np.int64) & 3)
    seg_pop = np.add.reduceat(np.append(bits, 0), seg_start) * (seg_len > 0)
    rng = np.random.default_rng(seed)
    parts = []
    for c0 in range(0, n, chunk):
        c = min(chunk, n - c0)
        src = rng.integers(0, r, (c, 1)) * np.ones((1, nb), np.int64)
        other = rng.random((c, nb)) >= keep
        src[other] = rng.integers(0, r, int(other.sum()))
        seg = (src * nb + np.arange(nb)).reshape(-1)
        lens = seg_len[seg]
        offsets = np.zeros(c + 1, np.int64)
        np.cumsum(lens.reshape(c, nb).sum(1), out=offsets[1:])
        seg_out = np.zeros(seg.shape[0] + 1, np.int64)
        np.cumsum(lens, out=seg_out[1:])
        pos = np.repeat(seg_start[seg] - seg_out[:-1], lens) + np.arange(seg_out[-1])
        pop = seg_pop[seg].reshape(c, nb).sum(1).astype(np.int32)
        parts.append(SparseSBSCodes(lay, offsets, real.entries[pos], pop))
    return SparseSBSCodes.concat(parts)


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def faiss_search(dense: np.ndarray, q: np.ndarray, k: int, threads: int,
                 shard: int = 250_000) -> tuple[float, np.ndarray]:
    """faiss IndexBinaryFlat over shards of ``shard`` rows (bounded memory; a flat scan's time
    adds up over shards); returns (seconds, distances (nq, k))."""
    import faiss

    faiss.omp_set_num_threads(threads)
    total, ds = 0.0, []
    for r0 in range(0, dense.shape[0], shard):
        index = faiss.IndexBinaryFlat(dense.shape[1] * 8)
        index.add(dense[r0:r0 + shard])
        total += timed(lambda index=index: ds.append(index.search(q, k)[0]), 1)
    d = np.sort(np.concatenate(ds, axis=1), axis=1)[:, :k]
    return total, d


def run(n: int, levels: int, nqs: list[int], threads_list: list[int], k: int = 10,
        with_faiss: bool = True, seed: int = 0) -> list[dict]:
    real_codes, lay = load_real_codes(levels)
    real = to_sparse_sbs(real_codes, lay)
    t = time.perf_counter()
    sp = synthesise(real, n, seed)
    t_syn = time.perf_counter() - t
    dense = sp.to_dense()
    searcher = SparseSBSSearcher(sp)
    inv_bytes = searcher.inverted_bytes
    rows = []
    print(f"# N={n:,} levels={levels} ({lay.blocks} blocks, {lay.nbits} bits, stride "
          f"{lay.stride} B) density {sp.density():.4f}, {sp.nnz / n:.1f} cells/image; "
          f"sparse {sp.bytes_per_image():.0f} B/image + inverted {inv_bytes / n:.0f} B/image "
          f"= 1/{lay.stride / (sp.bytes_per_image() + inv_bytes / n):.1f} of dense; "
          f"isa {sf.active_isa()}; synthesised in {t_syn:.1f} s", flush=True)
    rng = np.random.default_rng(seed + 1)
    for nq in nqs:
        q = dense[rng.integers(0, n, nq)]
        for threads in threads_list:
            rep = 3 if nq == 1 else 1
            want = sf.hamming_topk(q, dense, k, threads=threads)
            got = searcher.search(q, k, threads=threads)
            assert (got[0] == want[0]).all() and (got[1] == want[1]).all()
            def sparse(method: str = "auto", q=q, threads=threads) -> object:
                return searcher.search(q, k, threads=threads, method=method)

            t_dense = timed(lambda q=q, threads=threads: sf.hamming_topk(q, dense, k,
                                                                         threads=threads), rep)
            t_sparse = timed(sparse, max(rep, 3))
            t_inv = timed(lambda: sparse("inverted"), rep)
            t_scan = timed(lambda: sparse("scan"), rep)
            row = {"n": n, "blocks": lay.blocks, "nq": nq, "threads": threads,
                   "sparse_ms": t_sparse * 1e3, "inverted_ms": t_inv * 1e3,
                   "scan_ms": t_scan * 1e3, "dense_ms": t_dense * 1e3}
            if with_faiss:
                t_f, d_f = faiss_search(dense, q, k, threads)
                assert (d_f == want[0]).all()
                row["faiss_ms"] = t_f * 1e3
            rows.append(row)
            print(f"N={n:>9,} blocks={lay.blocks:>2} nq={nq:>2} threads={threads}: sparse "
                  f"{t_sparse * 1e3:9.2f} ms (inverted {t_inv * 1e3:.2f}, scan {t_scan * 1e3:.2f})"
                  f" | dense {t_dense * 1e3:9.2f} ms = {t_dense / t_sparse:6.1f}x"
                  + (f" | faiss {t_f * 1e3:9.2f} ms = {t_f / t_sparse:6.1f}x" if with_faiss else ""),
                  flush=True)
    return rows


def lanes(n: int, levels: int, nqs: list[int], seed: int = 0) -> None:
    """The forced methods and ``auto`` at each ISA level, one thread (the cost constants of
    cpp/src/sparse_sbs.cpp come from this table)."""
    from semcbir_fast import _backend

    real_codes, lay = load_real_codes(levels)
    sp = synthesise(to_sparse_sbs(real_codes, lay), n, seed)
    searcher = SparseSBSSearcher(sp)
    qs = real_codes[np.random.default_rng(seed + 1).integers(0, len(real_codes), max(nqs))]
    want = {nq: sf.hamming_topk(qs[:nq], sp.to_dense(), 10) for nq in nqs} if n <= 200_000 \
        else {}
    for isa in sf.available_isas():
        _backend.set_isa(isa)
        for nq in nqs:
            q = qs[:nq]
            t = {}
            for method in ("inverted", "scan", "auto"):
                got = searcher.search(q, 10, threads=1, method=method)
                if nq in want:
                    assert (got[0] == want[nq][0]).all() and (got[1] == want[nq][1]).all()
                t[method] = timed(lambda m=method, q=q: searcher.search(q, 10, threads=1,
                                                                        method=m), 3)
            print(f"N={n:,} blocks={lay.blocks} isa={isa:<6} nq={nq:>2}: inverted "
                  f"{t['inverted'] * 1e3:8.2f} ms  scan {t['scan'] * 1e3:8.2f} ms "
                  f"({t['scan'] * 1e9 / sp.nnz:.2f} ns/entry)  auto {t['auto'] * 1e3:8.2f} ms",
                  flush=True)
    _backend.set_isa(sf.available_isas()[-1])


def hot_cost(n: int, levels: int, seed: int = 0, nq: int = 16) -> None:
    """Per ISA level, one thread, the inverted path with no hot cells, with the default
    hot_fraction and with every cell hot: ns per posting (row costs included) and, from the
    difference, ns per row and hot column (the IsaCost::hot_row constants of
    cpp/src/sparse_sbs.cpp)."""
    from semcbir_fast import _backend

    real_codes, lay = load_real_codes(levels)
    sp = synthesise(to_sparse_sbs(real_codes, lay), n, seed)
    qs = real_codes[np.random.default_rng(seed + 1).integers(0, len(real_codes), nq)]
    e = sp.entries.astype(np.int64)
    per_level = np.zeros((lay.num_classes * lay.blocks, 4), np.int64)
    np.add.at(per_level, (e >> 2, e & 3), 1)
    df, rare = per_level.sum(1), per_level.min(1)
    rq = to_sparse_sbs(qs, lay)

    def postings_and_hot(hf: float) -> tuple[float, float]:
        hot = df - rare > hf * n  # the rule of SparseSbsIndex
        post = hot_cells = 0
        for i in range(nq):
            c = (rq.entries[rq.offsets[i]:rq.offsets[i + 1]] >> 2).astype(np.int64)
            post += np.where(hot[c], rare[c], df[c]).sum()
            hot_cells += hot[c].sum()
        return post / nq, hot_cells / nq

    searchers = {hf: SparseSBSSearcher(sp, hot_fraction=hf) for hf in (1.0, 0.125, 0.0)}
    for isa in sf.available_isas():
        _backend.set_isa(isa)
        t = {hf: timed(lambda s=s: [s.search(qs[i:i + 1], 10, threads=1, method="inverted")
                                    for i in range(nq)], 3) / nq
             for hf, s in searchers.items()}
        per_posting = t[1.0] / postings_and_hot(1.0)[0]
        out = [f"N={n:,} isa={isa:<6}: {per_posting * 1e9:.2f} ns/posting"]
        for hf in (0.125, 0.0):
            p, h = postings_and_hot(hf)
            out.append(f"hot_fraction={hf}: {t[hf] * 1e3:.2f} ms/query, "
                       f"{(t[hf] - p * per_posting) / (h * n) * 1e9:.3f} ns per row and hot column")
        print("  ".join(out), flush=True)
    _backend.set_isa(sf.available_isas()[-1])


def crossover(levels: int = 3, n: int = 20000, seed: int = 0) -> None:
    """Time per query of the sparse and dense engines on random canonical codes of rising
    density (nq = 1 and 64, one thread): where the dense scan starts to win."""
    from test_sparse_sbs import random_codes  # type: ignore[import-not-found]

    lay = sf.sbs_layout(151, levels)
    rng = np.random.default_rng(seed)
    for p in (0.005, 0.01, 0.02, 0.04, 0.08, 0.12, 0.16):
        db = random_codes(rng, lay, n, p)
        s = SparseSBSSearcher(to_sparse_sbs(db, lay))
        dens = np.unpackbits(db[:500], axis=1).mean()
        out = [f"density {dens:.3f}:"]
        for nq in (1, 64):
            q = db[:nq]
            td = timed(lambda q=q, db=db: sf.hamming_topk(q, db, 10, threads=1), 3)
            ts = timed(lambda q=q, s=s: s.search(q, 10, threads=1), 3)
            out.append(f"nq={nq} dense/sparse = {td / ts:.2f}")
        print(" ".join(out), flush=True)


def gpu_bench(n: int, levels: int, device: str = "cuda", seed: int = 0) -> None:
    """search/gpu.py on device-resident codes: random canonical codes at the real density
    (2 % of the cells present; the dense scan's speed does not depend on it), checked against
    the CPU engines on the first queries."""
    import torch
    from semcbir_fast.search.gpu import DeviceCodes

    sys.path.insert(0, str(ROOT / "tests"))
    from test_sparse_sbs import random_codes  # type: ignore[import-not-found]

    lay = sf.sbs_layout(151, levels)
    rng = np.random.default_rng(seed)
    step = 50_000
    dense = np.concatenate([random_codes(rng, lay, min(step, n - r0), 0.02)
                            for r0 in range(0, n, step)])
    sp = to_sparse_sbs(dense, lay)
    cpu = SparseSBSSearcher(sp)

    def sync_timed(fn, repeat=5):
        fn()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best

    for name, dev in (("dense", DeviceCodes(dense, device)), ("sparse", DeviceCodes(sp, device))):
        for nq in (1, 64):
            q = dense[rng.integers(0, n, nq)]
            got = dev.search(q, 10)
            want = cpu.search(q, 10)
            assert (got[0] == want[0]).all() and (got[1] == want[1]).all()
            t = sync_timed(lambda dev=dev, q=q: dev.search(q, 10))
            rate = dense.nbytes / t / 1e12 if name == "dense" else float("nan")
            print(f"gpu {name:6s} N={n:,} blocks={lay.blocks} nq={nq:2d}: {t * 1e3:8.2f} ms, "
                  f"{nq / t:9.0f} queries/s, dense-scan rate {rate:.2f} TB/s "
                  f"(device bytes {dev.nbytes() / n:.0f} B/image)", flush=True)


# ------------------------------------------------------------------------- pytest-benchmark

def _bench_data():
    import pytest

    try:
        real_codes, lay = load_real_codes(3)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    sp = synthesise(to_sparse_sbs(real_codes, lay), 100_000)
    return sp, sp.to_dense()


_DATA: list = []


def _data():
    if not _DATA:
        _DATA.append(_bench_data())
    return _DATA[0]


def test_sparse_nq1(benchmark):
    sp, dense = _data()
    s = SparseSBSSearcher(sp)
    q = dense[:1]
    want = sf.hamming_topk(q, dense, 10)
    got = benchmark(s.search, q, 10, threads=1)
    assert (got[1] == want[1]).all()
    benchmark.group = "sbs 64 blocks N=100k nq=1"
    benchmark.extra_info.update(isa=sf.active_isa(), threads=1, n=len(sp), engine="sparse")


def test_dense_nq1(benchmark):
    _, dense = _data()
    benchmark(sf.hamming_topk, dense[:1], dense, 10, threads=1)
    benchmark.group = "sbs 64 blocks N=100k nq=1"
    benchmark.extra_info.update(isa=sf.active_isa(), threads=1, n=dense.shape[0], engine="dense")


def test_faiss_nq1(benchmark):
    import pytest

    faiss = pytest.importorskip("faiss")
    _, dense = _data()
    faiss.omp_set_num_threads(1)
    index = faiss.IndexBinaryFlat(dense.shape[1] * 8)
    index.add(dense)
    benchmark(index.search, dense[:1], 10)
    benchmark.group = "sbs 64 blocks N=100k nq=1"
    benchmark.extra_info.update(threads=1, n=dense.shape[0], engine="faiss IndexBinaryFlat")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--levels", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--nq", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--crossover", action="store_true", help="density sweep instead")
    ap.add_argument("--gpu", action="store_true", help="search/gpu.py on CUDA instead")
    ap.add_argument("--lanes", action="store_true",
                    help="forced methods and auto per ISA level, one thread, instead")
    ap.add_argument("--hot-cost", action="store_true",
                    help="cost of a hot column per ISA level, one thread, instead")
    ap.add_argument("--make-labels", action="store_true",
                    help=f"segment Corel-1K with ade20k-mnv2 into {DEFAULT_LABELS} first")
    a = ap.parse_args()
    if a.make_labels:
        make_labels()
    if a.crossover:
        sys.path.insert(0, str(ROOT / "tests"))
        crossover()
        return
    if a.hot_cost:
        one = hot_cost
    elif a.lanes:
        one = lambda n, lv: lanes(n, lv, a.nq)
    elif a.gpu:
        one = gpu_bench
    else:
        one = lambda n, lv: run(n, lv, a.nq, a.threads, with_faiss=not a.no_faiss)
    for n in a.n:  # every mode runs once per (N, levels)
        for lv in a.levels:
            one(n, lv)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
