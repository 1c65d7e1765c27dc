"""Load test of ``semcbir serve`` on 127.0.0.1: throughput and latency under concurrency.

Starts ``python -m semcbir_fast serve`` as a separate process on a free loopback port,
sends a bounded number of requests from concurrent clients (threads, one keep-alive
connection each, standard library only), checks every answer (status 200, k results,
the query's own id first for id queries), stops the server, and prints requests/s and
p50 / p90 / p99 / max latency. Any error makes the run exit non-zero. Nothing leaves the
machine: the server binds 127.0.0.1 and the clients talk only to it.

    PYTHONPATH=python .venv/bin/python bench/bench_service.py                  # defaults
    PYTHONPATH=python .venv/bin/python bench/bench_service.py --mode upload --requests 500
    PYTHONPATH=python .venv/bin/python bench/bench_service.py --index corel1k.sbsi \\
        --model ade20k-mnv2 --mode upload --requests 64 --concurrency 4

Without ``--index`` it builds an index of ``--images`` Corel-1K images (default 200) with a
tiny TorchScript segmenter (a 1x1 convolution, as in tests/test_service.py), so that the
numbers measure the service (HTTP, parsing, decoding, thread pool, search) rather than the
model. Modes: ``id`` (POST /search {"id", "k"}: the stored signature is searched),
``upload`` (multipart upload of a Corel-1K JPEG: decode, segment, encode, search),
``thumbs`` (GET /thumbs/ID, cached after the first request of each id).

Also a pytest-benchmark case (a smaller load; the numbers go to ``extra_info``)::

    PYTHONPATH=python .venv/bin/python -m pytest bench/bench_service.py --benchmark-only -s
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from semcbir_fast._paths import data_root

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

COREL = Path(data_root()) / "corel1k" / "images"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_tiny_index(out_dir: Path, n_images: int) -> tuple[Path, Path]:
    """(index, model): the first ``n_images`` Corel-1K images (by number) segmented with a
    tiny TorchScript model (argmax of R, G, B, 0.3), SBS levels 2."""
    from helpers import make_tiny_model
    from semcbir_fast import build_index, create_signature
    from semcbir_fast.segment import load_segmenter

    model = make_tiny_model(out_dir / "tiny-rgb.pt")
    seg = load_segmenter(str(model), device="cpu")
    paths = [str(COREL / f"{i}.jpg") for i in range(n_images)]
    sig = create_signature("sbs", num_classes=seg.num_classes, levels=2)
    built = build_index(paths, sig, segmenter=seg, progress=False, use_cache=False,
                        metadata={"model": str(model), "model_name": "tiny-rgb",
                                  "num_classes": 4})
    index = out_dir / "bench.sbsi"
    built.index.save(index)
    return index, Path(model)


class Server:
    """``semcbir serve`` in a child process on 127.0.0.1; stopped on exit (SIGINT, then
    SIGKILL after 10 s)."""

    def __init__(self, index: Path, model: str, *, workers: int, device: str | None,
                 extra: list[str]) -> None:
        self.port = _free_port()
        cmd = [sys.executable, "-m", "semcbir_fast", "serve", str(index), "--host",
               "127.0.0.1", "--port", str(self.port), "--model", model, "--workers",
               str(workers), "--log-level", "warning", "--max-pending", "1024", *extra]
        if device:
            cmd += ["--device", device]
        # the same interpreter and environment (PYTHONPATH included): the same package
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> Server:  # noqa: PYI034
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start within 300 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _multipart(data: bytes, name: str, k: int) -> tuple[bytes, str]:
    b = "semcbir-bench-boundary"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n{k}\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def run_load(port: int, *, mode: str, requests: int, concurrency: int, k: int,
             ids: list[int], images: list[Path], timeout_s: float, seed: int = 0
             ) -> dict[str, Any]:
    """``requests`` requests from ``concurrency`` threads; every answer checked."""
    uploads = [(p.name, p.read_bytes()) for p in images] if mode == "upload" else []
    lat = np.zeros(requests)
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.monotonic() + timeout_s

    def client(j: int) -> None:
        rng = random.Random(seed + j)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < deadline:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            i = rng.choice(ids)
            try:
                t0 = time.perf_counter()
                if mode == "id":
                    conn.request("POST", "/search", json.dumps({"id": i, "k": k}),
                                 {"Content-Type": "application/json"})
                elif mode == "upload":
                    name, data = uploads[n % len(uploads)]
                    body, ctype = _multipart(data, name, k)
                    conn.request("POST", "/search", body, {"Content-Type": ctype})
                else:
                    conn.request("GET", f"/thumbs/{i}")
                resp = conn.getresponse()
                payload = resp.read()
                lat[n] = time.perf_counter() - t0
                if resp.status != 200:
                    errors.append(f"{resp.status} {payload[:200]!r}")
                elif mode != "thumbs":
                    res = json.loads(payload)["results"]
                    if len(res) != min(k, len(ids)) or (mode == "id" and res[0]["id"] != i):
                        errors.append(f"wrong answer for id {i}: {res[:2]}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.close()

    threads = [threading.Thread(target=client, args=(j,)) for j in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    done = int(np.count_nonzero(lat))
    ms = np.sort(lat[lat > 0]) * 1e3
    pct = (lambda q: float(np.percentile(ms, q)) if ms.size else float("nan"))
    return {"mode": mode, "requests": requests, "completed": done,
            "concurrency": concurrency, "k": k, "errors": len(errors),
            "first_errors": errors[:3], "wall_s": round(wall, 3),
            "requests_per_s": round(done / wall, 1) if wall else 0.0,
            "p50_ms": round(pct(50), 2), "p90_ms": round(pct(90), 2),
            "p99_ms": round(pct(99), 2), "max_ms": round(float(ms[-1]), 2) if ms.size else None}


def _index_ids(index: Path) -> list[int]:
    from semcbir_fast.index import load_index

    return load_index(index).ids().tolist()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", help="an index file (default: build a tiny-model one)")
    ap.add_argument("--model", help="its model (default: the tiny model; with --index: "
                    "the index's registered model)")
    ap.add_argument("--images", type=int, default=200,
                    help="Corel-1K images in the built index (200)")
    ap.add_argument("--mode", choices=["id", "upload", "thumbs", "all"], default="all",
                    help="what each request does (all: id, then upload, then thumbs)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per mode (2000)")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent clients (16)")
    ap.add_argument("-k", type=int, default=10, help="results per query (10)")
    ap.add_argument("--workers", type=int, default=0, help="server threads (0: per core)")
    ap.add_argument("--device", default="cpu", help="model device (cpu)")
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds per mode before the clients stop (600)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if not COREL.is_dir():
        print(f"Corel-1K not found under {COREL} (set SEMCBIR_DATA)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="semcbir-bench-") as tmp:
        if args.index:
            index, model = Path(args.index), args.model
            if model is None:
                from semcbir_fast.index import load_index

                model = load_index(index).metadata.get("model")
        else:
            t0 = time.perf_counter()
            index, model_path = build_tiny_index(Path(tmp), args.images)
            model = args.model or str(model_path)
            print(f"built {index.name}: {args.images} images in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        ids = _index_ids(index)
        queries = sorted(COREL.glob("*.jpg"), key=lambda p: int(p.stem)
                         if p.stem.isdigit() else 0)[-32:]  # not in a --images index
        modes = ["id", "upload", "thumbs"] if args.mode == "all" else [args.mode]
        out = []
        with Server(index, str(model), workers=args.workers, device=args.device,
                    extra=[]) as srv:
            for mode in modes:
                r = run_load(srv.port, mode=mode, requests=args.requests,
                             concurrency=args.concurrency, k=args.k, ids=ids, images=queries,
                             timeout_s=args.timeout)
                r.update(index=index.name, count=len(ids), cores=os.cpu_count())
                out.append(r)
                print(f"{mode:>7}: {r['completed']}/{r['requests']} requests, "
                      f"{r['concurrency']} clients, {r['requests_per_s']} req/s, "
                      f"p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 {r['p99_ms']} ms, "
                      f"max {r['max_ms']} ms, errors {r['errors']}"
                      + (f" {r['first_errors']}" if r["errors"] else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if any(r["errors"] or r["completed"] != r["requests"] for r in out) else 0


# ----------------------------------------------------------------------------- pytest
def test_service_load(benchmark, tmp_path):  # pragma: no cover - a benchmark
    import pytest

    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    if not COREL.is_dir():
        pytest.skip(f"Corel-1K not found under {COREL}")
    index, model = build_tiny_index(tmp_path, 100)
    ids = _index_ids(index)
    with Server(index, str(model), workers=0, device="cpu", extra=[]) as srv:
        res = benchmark.pedantic(run_load, args=(srv.port,),
                                 kwargs={"mode": "id", "requests": 400, "concurrency": 8,
                                         "k": 10, "ids": ids, "images": [], "timeout_s": 120},
                                 rounds=1, iterations=1)
    benchmark.extra_info.update(res)
    assert res["errors"] == 0 and res["completed"] == 400


if __name__ == "__main__":
    raise SystemExit(main())
