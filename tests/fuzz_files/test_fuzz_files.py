"""Bounded fuzz of every file loader of the library (issue 11).

Seeds are files the library writes itself (fuzz_cases.write_seeds); each is truncated,
bit-flipped (raw and with its checksum / CRCs recomputed) and crafted (header numbers and
arrays replaced by extreme or mistyped values, the file otherwise valid). Every case runs
in a child process (fuzz_worker.py), so that a crash (``SIGBUS``, ``SIGSEGV``) or a
runaway allocation fails this test instead of killing pytest. The only acceptable outcomes
are a rejection with ``ValueError`` / ``IndexFormatError`` or a load that then answers a
query without error; the issue's reproductions (``repro:`` cases) must be rejected.

Fixed seed and case count (2,541 cases, under 10 s on two cores). Run it alone, with a
table of outcomes per kind and category, and more or fewer cases (CI: ``--per-seed 150``,
9,141 cases)::

    PYTHONPATH=python python tests/fuzz_files/test_fuzz_files.py [--per-seed 40] [--kinds ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fuzz_cases import CATEGORIES, KINDS, make_cases, write_seeds

PER_SEED = 40  # cases of each mutation per seed file (crafted: twice as many)
WORKER = HERE / "fuzz_worker.py"


def run_cases(folder: Path, per_seed: int = PER_SEED, timeout_s: float = 600
              ) -> tuple[list, dict[int, tuple[str, str]]]:
    """Write the seeds and cases under ``folder`` and run them; ``(cases, {id: (outcome,
    detail)})`` with outcomes ``rejected``, ``loaded``, ``fail`` or ``crash``."""
    seeds = write_seeds(folder / "seeds")
    cases = make_cases(seeds, per_seed)
    cdir = folder / "cases"
    cdir.mkdir(exist_ok=True)
    todo = []
    for c in cases:
        ext = ".npz" if c.kind not in ("sbs", "sparse") else ".idx"
        p = cdir / f"{c.id:05d}-{c.kind}{ext}"
        p.write_bytes(c.data)
        todo.append([c.id, c.kind, str(p)])
    results: dict[int, tuple[str, str]] = {}
    log = folder / "log.txt"
    env = dict(os.environ, PYTHONFAULTHANDLER="1", OPENBLAS_NUM_THREADS="1")
    while todo:
        manifest = folder / "manifest.json"
        manifest.write_text(json.dumps(todo))
        log.write_text("")
        proc = subprocess.run([sys.executable, str(WORKER), str(manifest), str(log)],
                              env=env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        started = None
        for line in log.read_text().splitlines():
            tag, _, rest = line.partition(" ")
            if tag == "S":
                started = int(rest)
            elif tag == "R":
                cid, outcome, detail = (rest.split(" ", 2) + [""])[:3]
                results[int(cid)] = (outcome, detail)
                started = None
        if started is not None:  # the worker died inside this case
            how = (f"signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit {proc.returncode}")
            tail = " ".join(proc.stderr.strip().splitlines()[-3:])[:300]
            results[started] = ("crash", f"{how}: {tail}")
        elif proc.returncode not in (0, 3):
            raise RuntimeError(f"fuzz worker failed outside a case:\n{proc.stderr[-3000:]}")
        todo = [t for t in todo if t[0] not in results]
    return cases, results


def failed(case, results: dict[int, tuple[str, str]]) -> bool:
    """A finding: an exception other than ValueError, a crash, too much memory, or a known-bad
    file (the issue's reproductions) that loads."""
    outcome = results[case.id][0]
    return outcome in ("fail", "crash") or (case.expect == "rejected" and outcome == "loaded")


def summary(cases: list, results: dict[int, tuple[str, str]]) -> str:
    """A table: cases, rejected, loaded and failed per kind x category, then the failures."""
    counts: dict[tuple[str, str], collections.Counter] = collections.defaultdict(
        collections.Counter)
    for c in cases:
        counts[(c.kind, c.category)][results[c.id][0]] += 1
        counts[(c.kind, c.category)]["bad"] += failed(c, results)
    lines = [f"{'kind':<9}{'category':<10}{'cases':>6}{'rejected':>9}{'loaded':>7}{'failed':>7}"]
    total: collections.Counter = collections.Counter()
    for kind in KINDS:
        for cat in CATEGORIES:
            n = counts.get((kind, cat))
            if not n:
                continue
            cnt = n["rejected"] + n["loaded"] + n["fail"] + n["crash"]
            lines.append(f"{kind:<9}{cat:<10}{cnt:>6}{n['rejected']:>9}"
                         f"{n['loaded']:>7}{n['bad']:>7}")
            total.update(n)
    lines.append(f"{'all':<19}{len(cases):>6}{total['rejected']:>9}"
                 f"{total['loaded']:>7}{total['bad']:>7}")
    fails = [(c, results[c.id]) for c in cases if failed(c, results)]
    for c, (outcome, detail) in fails[:60]:
        lines.append(f"  #{c.id} {c.kind}/{c.category} {c.what[:70]}: {outcome} {detail[:160]}")
    if len(fails) > 60:
        lines.append(f"  ... and {len(fails) - 60} more")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    pytest.importorskip("cv2")  # the vocabulary seed is fitted with OpenCV's k-means
    cases, results = run_cases(tmp_path_factory.mktemp("fuzz"))
    table = summary(cases, results)
    print(table)
    assert len(results) == len(cases)
    return cases, results, table


def _check(fuzz_run, kinds: tuple[str, ...]) -> None:
    cases, results, table = fuzz_run
    mine = [c for c in cases if c.kind in kinds]
    assert all(results[c.id][0] == "loaded" for c in mine if c.category == "seed"), table
    bad = [f"#{c.id} {c.kind}/{c.category} {c.what}: {' '.join(results[c.id])}"
           for c in mine if failed(c, results)]
    assert not bad, "\n".join(bad[:40])


def test_index_files_are_rejected_cleanly(fuzz_run):
    _check(fuzz_run, ("sbs", "sparse"))
    cases, results, _ = fuzz_run
    # the fuzz reaches the loaders' own checks, not only the checksum
    crafted = [c for c in cases if c.kind in ("sbs", "sparse")
               and c.category in ("crafted", "combo")]
    assert sum(results[c.id][0] == "rejected" for c in crafted) > len(crafted) // 2


def test_npz_files_are_rejected_cleanly(fuzz_run):
    _check(fuzz_run, ("vocab", "phrases", "features"))


def test_label_cache_files_are_rejected_cleanly(fuzz_run):
    _check(fuzz_run, ("labels",))


def main() -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-seed", type=int, default=PER_SEED)
    ap.add_argument("--keep", metavar="DIR", help="write seeds and cases here (kept)")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                    help="loaders whose findings set the exit status (all run)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        cases, results = run_cases(folder, args.per_seed)
        print(summary(cases, results))
        return int(any(failed(c, results) for c in cases if c.kind in args.kinds))


if __name__ == "__main__":
    sys.exit(main())
