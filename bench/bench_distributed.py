"""Distributed build throughput and sharded-search overhead (issue 17; docs/distributed.md).

    SEMCBIR_DATA=../shared/data SEMCBIR_MODELS=../shared/models \\
        python bench/bench_distributed.py --images 32 --codes 50000 --json bench_distributed.json

1. Build: the same ``--images`` Corel-1K images (label-map cache off, so every run
   segments) with the single-process ``build_index`` and with ``build_sharded`` on a local
   Ray cluster of ``--cpus`` CPUs with 1 and 2 workers (actor start-up included, as a user
   sees it; the steady-state rate without it is printed too). Also the per-image costs that
   docs/distributed.md scales to 100M images: segmentation, SBS encoding, bytes per image.
2. Search: ``--codes`` random SBS codes of the default layout (151 classes, 16 blocks, 1512
   bytes) in one index and split into 4 shards, searched by one query and by a batch of 16
   (k = 10), median of ``--repeat`` runs, for the ``threads`` and ``ray`` backends; every
   sharded result is checked equal to the single index's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def bench_build(n: int, tmp: Path, out: dict) -> None:
    import ray
    import torch
    from semcbir_fast.distributed import SegmenterSpec, build_sharded
    from semcbir_fast.pipeline import build_index, load_inputs
    from semcbir_fast.segment import load_segmenter
    from semcbir_fast.signatures import create_signature

    root = Path(os.environ.get("SEMCBIR_DATA", "../shared/data")) / "corel1k" / "images"
    paths = [str(root / f"{i}.jpg") for i in range(0, 1000, 1000 // n)][:n]
    seg = load_segmenter("ade20k-mnv2")
    sig = create_signature("sbs", num_classes=seg.num_classes, levels=2)
    t0 = time.perf_counter()
    ref = build_index(paths, sig, segmenter=seg, progress=False, use_cache=False).index
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    inputs, _ = load_inputs(paths, sig, segmenter=seg, progress=False, use_cache=False)
    t_seg = time.perf_counter() - t0
    t0 = time.perf_counter()
    codes = sig.encode(inputs)
    t_enc = time.perf_counter() - t0
    ref.save(tmp / "single.idx")
    out["build"] = {
        "images": n, "runtime": seg.runtime, "device": str(seg.device),
        "single_process_images_per_s": n / single,
        "segment_ms_per_image": 1e3 * t_seg / n, "encode_ms_per_image": 1e3 * t_enc / n,
        "code_bytes_per_image": int(codes.shape[1]),
        "index_file_bytes_per_image": (tmp / "single.idx").stat().st_size / n,
        "mean_image_file_bytes": float(np.mean([os.path.getsize(p) for p in paths])),
    }
    spec = SegmenterSpec(torch_threads=torch.get_num_threads())
    for workers in (1, 2):
        dst = tmp / f"w{workers}"
        t0 = time.perf_counter()
        rep = build_sharded(paths, sig, dst, segmenter=spec, shard_size=max(1, n // 8),
                            workers=workers, discover=False, progress=False, use_cache=False)
        wall = time.perf_counter() - t0
        from semcbir_fast.distributed import read_manifest
        from semcbir_fast.index import load_index

        m = read_manifest(dst)
        got = np.concatenate([load_index(m.shard_path(s)).reconstruct_batch(
            np.arange(s.count)) for s in m.shards])
        assert got.tobytes() == ref.reconstruct_batch(ref.ids()).tobytes(), "codes differ"
        out["build"][f"ray_{workers}_workers_images_per_s"] = n / wall
        out["build"][f"ray_{workers}_workers_wall_s"] = wall
        print(f"build, {workers} worker(s): {n / wall:.2f} images/s ({wall:.1f} s incl. "
              f"actor start-up; {rep.images_per_second:.2f} images/s from the call)")
    assert ray.is_initialized()


def bench_search(n: int, repeat: int, tmp: Path, out: dict) -> None:
    from semcbir_fast.distributed import ShardedIndex, shard_index
    from semcbir_fast.signatures import create_signature

    sig = create_signature("sbs", num_classes=151, levels=2)
    lay = sig.new_index().layout
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n, lay.stride), dtype=np.uint8)
    codes[:, lay.nbytes:] = 0
    full = sig.new_index()
    full.add(codes)
    shard_index(full, tmp / "four", shard_size=-(-n // 4))
    res: dict = {"codes": n, "shards": 4, "k": 10, "stride_bytes": lay.stride}
    for backend in ("threads", "ray"):
        with ShardedIndex(tmp / "four", backend=backend, workers=2) as sh:
            for nq in (1, 16):
                q = codes[rng.integers(0, n, nq)]
                want = full.search(q, 10, threads=2)
                got = sh.search(q, 10, threads=2)
                assert all(np.array_equal(a, b) for a, b in zip(got, want))
                one = _median_ms(lambda q=q: full.search(q, 10, threads=2), repeat)
                four = _median_ms(lambda q=q: sh.search(q, 10, threads=2), repeat)
                res[f"{backend}_nq{nq}"] = {"one_index_ms": one, "four_shards_ms": four}
                print(f"search {n} codes, nq={nq}, {backend}: one index {one:.2f} ms, "
                      f"4 shards {four:.2f} ms")
    out["search"] = res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--codes", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import ray

    out: dict = {"ray": ray.__version__, "cpus": args.cpus, "machine_cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault("SEMCBIR_CACHE", str(Path(d) / "cache"))
        ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
        try:
            bench_build(args.images, Path(d), out)
            bench_search(args.codes, args.repeat, Path(d), out)
        finally:
            ray.shutdown()
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
