"""The main job as a user runs it: ``semcbir index`` of Corel-1K (levels 2), timed end to end
in a fresh cache, then again from the per-image cache, for each CPU runtime side by side;
and Ctrl-C: the time from SIGINT to the process's exit, and the rerun that continues.

Run from the repository root (a script, not pytest: each case is one long process)::

    SEMCBIR_DATA=../shared/data SEMCBIR_MODELS=../shared/models \\
        .venv/bin/python bench/bench_main_job.py --runtimes litert torch --images 1000 \\
        --json bench_main_job.json

``--images N`` takes the first N Corel-1K images (a copy of their names in a temporary
folder, by symlink); ``--sigint-after S`` sends SIGINT S seconds into a cold run (0: skip).
Every run uses its own empty ``SEMCBIR_CACHE`` (the model conversion is cached in a shared
one made once first, so the times are of the job, not of the one-off model conversion,
which ``convert`` reports). Prints one line per case and, with ``--json``, writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _data() -> Path:
    base = Path(os.environ.get("SEMCBIR_DATA", ROOT.parent / "shared" / "data"))
    return base / "corel1k" / "images"


def _semcbir(args: list[str], env: dict[str, str], **kw: object) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "semcbir_fast", *args]
    # SIGINT as in a terminal, even when this script runs in the background (where the
    # shell starts it with SIGINT ignored, which Python then keeps ignoring)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint,  # noqa: PLW1509
                            **kw)  # type: ignore[call-overload]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    p = _semcbir(args, env)
    out, err = p.communicate()
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"semcbir {' '.join(args)} failed ({p.returncode}):\n{err[-2000:]}")
    return dt, out, err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtimes", nargs="+", default=["litert", "torch"])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--sigint-after", type=float, default=30.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default=None,
                    help="segmentation model (default: the library's, ade20k+voc)")
    args = ap.parse_args()
    src = sorted(_data().glob("*.jpg"), key=lambda p: int(p.stem))[: args.images]
    if not src:
        raise SystemExit(f"no Corel-1K images under {_data()}")
    work = Path(tempfile.mkdtemp(prefix="semcbir-mainjob-"))
    rows = []
    try:
        imgs = work / "images"
        imgs.mkdir()
        for p in src:
            (imgs / p.name).symlink_to(p)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT / "python") + os.pathsep + env.get("PYTHONPATH", "")
        # the converted model files: a shared cache, made once (not part of the job's time)
        model_cache = work / "models-cache"
        for rt in args.runtimes:
            code = ("from semcbir_fast.segment import load_segmenter as L; "  # the default
                    f"L(*{[args.model] if args.model else []!r}, device='cpu', runtime={rt!r})")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True,
                           env={**env, "SEMCBIR_CACHE": str(model_cache)})
            rows.append({"case": "convert", "runtime": rt,
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
        for rt in args.runtimes:
            cache = work / f"cache-{rt}"
            shutil.copytree(model_cache, cache)
            shutil.rmtree(cache / "labels", ignore_errors=True)
            renv = {**env, "SEMCBIR_CACHE": str(cache)}
            out = work / f"{rt}.sbsi"
            job = ["index", str(imgs), "-o", str(out), "--levels", "2", "--append",
                   *(["--model", args.model] if args.model else []),
                   "--runtime", rt, "--device", "cpu", "-q"]
            if args.sigint_after > 0:
                p = _semcbir(job, renv)
                time.sleep(args.sigint_after)
                t0 = time.perf_counter()
                p.send_signal(signal.SIGINT)
                p.communicate()
                rows.append({"case": "sigint-to-exit", "runtime": rt,
                             "seconds": round(time.perf_counter() - t0, 3),
                             "returncode": p.returncode})
                print(rows[-1], flush=True)
                dt, _, _ = _timed(job, renv)
                rows.append({"case": "rerun-after-sigint", "runtime": rt,
                             "seconds": round(dt, 1)})
                print(rows[-1], flush=True)
                out.unlink()
                shutil.rmtree(cache / "labels")
            dt, _, _ = _timed(job, renv)
            rows.append({"case": "cold", "runtime": rt, "images": len(src),
                         "seconds": round(dt, 1), "ms_per_image": round(1e3 * dt / len(src), 1)})
            print(rows[-1], flush=True)
            out.unlink()  # a new index, labels from the cache: what a second demo run does
            dt, _, _ = _timed(job, renv)
            rows.append({"case": "from-cache", "runtime": rt, "seconds": round(dt, 1)})
            print(rows[-1], flush=True)
        cold = {r["runtime"]: r["seconds"] for r in rows if r["case"] == "cold"}
        if "torch" in cold:
            for rt, sec in cold.items():
                print(f"cold index, {rt}: {cold['torch'] / sec:.2f}x the torch float port")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_count": os.cpu_count(), "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
