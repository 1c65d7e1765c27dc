"""Runs fuzz cases in a child process: ``python fuzz_worker.py MANIFEST LOG``.

``MANIFEST`` is a JSON list of ``[case id, kind, file]``; for each case the worker writes
``S <id>`` to ``LOG`` before it starts and ``R <id> <outcome> <detail>`` when it ends, so
that the parent can name the case that killed the process (a signal: ``SIGBUS``,
``SIGSEGV``, ...) and start a new worker after it. Outcomes:

- ``rejected``: the loader raised ``ValueError`` (``IndexFormatError`` is one); for the
  label cache, its loader returned None (its way to reject);
- ``loaded``: it loaded, and using it like a query does (encode a query with the loaded
  signature, search, reconstruct, describe) raised nothing;
- ``fail``: any other exception from the loader, any exception from the use step (a file
  that loads must work), or the process's peak memory grew by more than
  ``MEMORY_LIMIT`` (the worker then exits: the peak cannot be measured again).

The address space is limited too (``RLIMIT_AS``), so that a runaway allocation becomes a
``MemoryError`` (a ``fail``) instead of exhausting the machine.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

MEMORY_LIMIT = 256 << 20  # bytes of peak-RSS growth one case may cause
CASE_TIMEOUT_S = 30


def _peak() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _limit_address_space() -> None:
    try:
        import resource

        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        cap = vm + (2 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (OSError, ValueError, StopIteration, ImportError):  # pragma: no cover
        pass


def _load(cid: int, kind: str, path: str) -> object:
    if kind in ("sbs", "sparse"):
        from semcbir_fast.index import load_index

        # half the cases read the file, half map it
        return load_index(path, mmap=cid % 2 == 0)
    if kind == "vocab":
        from semcbir_fast.sbovp import Vocabulary

        return Vocabulary.load(path)
    if kind == "phrases":
        from semcbir_fast.sbovp import PhraseSignatures

        return PhraseSignatures.load(path)
    if kind == "features":
        from semcbir_fast.features import load_features

        return load_features(path)
    if kind == "labels":
        from semcbir_fast.eval.cache import load_label_cache

        return load_label_cache(Path(path))
    raise AssertionError(kind)


def _label_map(num_classes: int):
    import numpy as np

    m = np.zeros((32, 32), np.uint16 if num_classes > 256 else np.uint8)
    m[8:24, 4:20] = min(num_classes - 1, 3)
    m[20:, 16:] = min(num_classes - 1, 1)
    return m


def _use(kind: str, obj: object) -> None:
    """What a query does with a loaded object (must raise nothing)."""
    import numpy as np

    if kind == "sbs":
        import semcbir_fast as sf

        idx = obj
        lay = idx.layout
        q = sf.encode_sbs(_label_map(lay.num_classes)[None], num_classes=lay.num_classes,
                          levels=lay.levels, pyramid=lay.pyramid)
        _, ids = idx.search(q, 3)
        idx.range_search(q, 10)
        if len(idx):
            idx.reconstruct(int(idx.ids()[0]))
        if idx.has_keys:
            idx.keys_of(ids[0])
            idx.keys()
        idx.info()
        idx.describe()
    elif kind == "sparse":
        from semcbir_fast.features import Features
        from semcbir_fast.signatures import Inputs

        idx = obj
        sig = idx.signature
        rng = np.random.default_rng(0)
        binary = sig.feature_method in ("orb", "akaze")
        voc = getattr(sig, "vocabulary", None)
        if voc is not None:
            dim, binary = voc.descriptor_dim, voc.binary
        else:
            width = idx.columns // idx.num_classes if idx.columns >= 0 else 8
            dim = max(1, width // 8 if binary else width)
        desc = (rng.integers(0, 256, (6, dim), dtype=np.uint8) if binary
                else rng.normal(size=(6, dim)).astype(np.float32))
        feats = [Features(rng.uniform(0, 32, (6, 2)), desc, (32, 32), sig.feature_method)]
        enc = sig.encode(Inputs([_label_map(sig.num_classes)], feats))
        _, ids = idx.search(enc, 3)
        if len(idx):
            idx.reconstruct([0])
            idx.reconstruct_batch([len(idx) - 1])
        if idx.has_keys:
            idx.keys_of(ids[0])
        idx.info()
        idx.describe()
    elif kind == "vocab":
        v = obj
        rng = np.random.default_rng(0)
        x = (rng.integers(0, 256, (5, v.descriptor_dim), dtype=np.uint8) if v.binary
             else rng.normal(size=(5, v.descriptor_dim)).astype(np.float32))
        w = v.assign(x)
        assert w.shape == (5,) and ((w >= 0) & (w < v.n_words)).all()
    elif kind == "phrases":
        from semcbir_fast.sbovp import phrase_l2_topk

        p = obj
        if len(p):
            p[0]
            phrase_l2_topk(p, p, 2)
            if p.n_words <= 64:
                p.to_dense(0)
    elif kind == "features":
        from semcbir_fast.sbovp.vocabulary import descriptor_matrix

        feats = obj
        assert isinstance(feats, list)
        if feats:
            descriptor_matrix(feats)
    elif kind == "labels":
        assert obj is None or all(m.ndim == 2 for m in obj)


def main() -> int:
    manifest, log_path = sys.argv[1], sys.argv[2]
    faulthandler.enable()
    _limit_address_space()
    cases = json.loads(Path(manifest).read_text())
    import semcbir_fast.index
    import semcbir_fast.sbovp  # imported before the first measurement

    del semcbir_fast

    with open(log_path, "a", buffering=1) as log:
        base = _peak()
        for cid, kind, path in cases:
            log.write(f"S {cid}\n")
            log.flush()
            faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
            try:
                obj = _load(cid, kind, path)
            except ValueError as exc:
                outcome, detail = "rejected", str(exc)
            except BaseException as exc:  # noqa: BLE001 - every other type is a finding
                outcome, detail = "fail", f"load {type(exc).__name__}: {exc}"
            else:
                if kind == "labels" and obj is None:
                    outcome, detail = "rejected", "None"
                else:
                    try:
                        _use(kind, obj)
                        outcome, detail = "loaded", ""
                    except BaseException as exc:  # noqa: BLE001
                        outcome, detail = "fail", f"use {type(exc).__name__}: {exc}"
                del obj
            faulthandler.cancel_dump_traceback_later()
            grew = _peak() - base
            if grew > MEMORY_LIMIT:
                outcome, detail = "fail", f"memory: peak grew by {grew >> 20} MiB"
            detail = " ".join(detail.split())[:300]
            log.write(f"R {cid} {outcome} {detail}\n")
            log.flush()
            if grew > MEMORY_LIMIT:
                return 3  # the parent restarts a fresh worker after this case
    return 0


if __name__ == "__main__":
    sys.exit(main())
