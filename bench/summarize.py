"""Markdown tables from pytest-benchmark JSON files written by bench_sbs.py / bench_hamming.py.

Usage::

    python bench/summarize.py bench_hamming.json [bench_sbs.json ...]

- ``hamming_topk``: per case (width, N, nq, threads) every peer with its median time,
  queries/s, database GB/s (N * width / time: one pass answers all nq queries), compared
  GB/s (nq * N * width / time) and ``vs faiss`` = faiss time / this time (> 1: faster
  than faiss).
- ``hamming_distances``: median time, compared GB/s and ``vs numpy``.
- ``encode_sbs``: ms per image, the paper's Table 4 ms, the speed-up over the paper and
  ``vs numpy`` (NumPy reference time / this time).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _fmt(x, nd=2):
    if x is None:
        return "-"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 1:
            return f"{x:.{nd}f}"
        return f"{x:.{nd + 1}g}"
    return str(x)


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def load(paths):
    benches = []
    machine = None
    for p in paths:
        with open(p) as f:
            data = json.load(f)
        machine = machine or data.get("machine_info", {})
        for b in data["benchmarks"]:
            info = dict(b.get("extra_info", {}))
            info.setdefault("seconds_median", b["stats"]["median"])
            info["_name"] = b["name"]
            info["_rounds"] = b["stats"]["rounds"]
            benches.append(info)
    return benches, machine


def topk_table(benches):
    cases = defaultdict(dict)
    for b in benches:
        if b.get("op") == "hamming_topk":
            cases[(b["width_bytes"], b["n"], b["nq"], b["threads"])][b["impl"]] = b
    rows = []
    for key in sorted(cases):
        peers = cases[key]
        faiss_t = peers.get("faiss", {}).get("seconds_median")
        for impl, b in sorted(peers.items(), key=lambda kv: kv[1]["seconds_median"]):
            t = b["seconds_median"]
            rows.append(
                [
                    key[0],
                    key[1],
                    key[2],
                    key[3],
                    impl,
                    b.get("isa", "-")[:24],
                    t * 1e3,
                    b.get("queries_per_s"),
                    b.get("db_gbps"),
                    b.get("compared_gbps"),
                    (faiss_t / t) if faiss_t else None,
                ]
            )
    header = [
        "width B",
        "N",
        "nq",
        "threads",
        "impl",
        "isa",
        "median ms",
        "queries/s",
        "db GB/s",
        "compared GB/s",
        "vs faiss",
    ]
    return _table(header, rows) if rows else ""


def distances_table(benches):
    cases = defaultdict(dict)
    for b in benches:
        if b.get("op") == "hamming_distances":
            cases[b["width_bytes"]][b["impl"]] = b
    rows = []
    for w in sorted(cases):
        np_t = cases[w].get("numpy", {}).get("seconds_median")
        for impl, b in sorted(cases[w].items(), key=lambda kv: kv[1]["seconds_median"]):
            t = b["seconds_median"]
            rows.append(
                [
                    w,
                    b["nq"],
                    b["n"],
                    impl,
                    b.get("isa"),
                    t * 1e3,
                    b.get("compared_gbps"),
                    (np_t / t) if np_t else None,
                ]
            )
    header = ["width B", "na", "nb", "impl", "isa", "median ms", "compared GB/s", "vs numpy"]
    return _table(header, rows) if rows else ""


def encode_table(benches):
    cases = defaultdict(dict)
    for b in benches:
        if b.get("op") == "encode_sbs":
            cases[(b["dataset"], b["levels"])][b["impl"]] = b
    rows = []
    for key in sorted(cases):
        np_ms = cases[key].get("numpy-ref", {}).get("ms_per_image")
        for impl, b in sorted(cases[key].items(), key=lambda kv: kv[1]["ms_per_image"]):
            ms = b["ms_per_image"]
            rows.append(
                [
                    key[0],
                    key[1],
                    b["blocks"],
                    b["num_classes"],
                    impl,
                    b.get("isa"),
                    b["threads"],
                    ms,
                    b.get("paper_ms"),
                    b.get("speedup_vs_paper"),
                    (np_ms / ms) if np_ms else None,
                ]
            )
    header = [
        "dataset",
        "levels",
        "blocks",
        "M",
        "impl",
        "isa",
        "threads",
        "ms/image",
        "paper ms",
        "x paper",
        "vs numpy",
    ]
    return _table(header, rows) if rows else ""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    benches, machine = load(argv)
    cpu = machine.get("cpu", {})
    print(
        f"Machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, "
        f"{cpu.get('count', '?')} logical CPUs, Python {machine.get('python_version', '?')}\n"
    )
    for title, fn in (
        ("encode_sbs (paper 000, Table 4)", encode_table),
        ("hamming_topk (k = 10)", topk_table),
        ("hamming_distances", distances_table),
    ):
        text = fn(benches)
        if text:
            print(f"### {title}\n\n{text}\n")
    notes = {b.get("paper_note") for b in benches if b.get("paper_note")}
    for n in sorted(notes):
        print(f"Note: {n}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
