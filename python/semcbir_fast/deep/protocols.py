"""The evaluation protocols of papers 003 and 004, for any signature on our data sets.

- :func:`histogram_protocol` -- paper 003 Table I: for a few query images (10 in the paper,
  each from a different class, chosen at random), the top 5 results of a descriptor; the
  score of a query is the mean over those 5 of the L1 distance between the RGB colour
  histograms of result and query (25 bins per channel over 0..255, so 75 values), divided
  by the number of values (75). Lower = results closer in colour. The paper does not say
  how a histogram is normalised; its values (0.06-0.43) fit histograms scaled to a maximum
  of 1 per channel (``norm="max"``, the default here; with ``norm="sum"`` (each channel
  sums to 1) the same images would score below 0.08). The query is not among its own
  results (the paper's queries are a separate set).
- :func:`precision_protocol` -- paper 004 Table 1: 5 % of the images drawn at random (fixed
  seed) as queries, precision of the top 10 (the paper's eq. 3, which it reports as "MAP");
  each query is left out of its own ranking.

Both run a signature exactly as :func:`semcbir_fast.eval.evaluate` does (fit on the
evaluated images when it has learned state, encode, the signature's own index, its
``search``). ``python -m semcbir_fast.deep.protocols --help`` runs them from the shell.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["histogram_protocol", "precision_protocol", "rgb_histograms"]


def rgb_histograms(paths: Sequence[str], *, bins: int = 25, norm: str = "max") -> np.ndarray:
    """``(n, 3 * bins)`` float64 RGB histograms (R, G, B bins over 0..255), each channel
    divided by its largest bin (``norm="max"``) or by its total (``"sum"``)."""
    from ..imageio import read_image

    if norm not in ("max", "sum"):
        raise ValueError(f"norm must be 'max' or 'sum', got {norm!r}")
    out = np.zeros((len(paths), 3 * bins))
    for i, p in enumerate(paths):
        img = read_image(p)
        for c in range(3):
            h = np.bincount((img[..., c].reshape(-1).astype(np.int64) * bins) // 256,
                            minlength=bins).astype(np.float64)
            d = h.max() if norm == "max" else h.sum()
            out[i, c * bins:(c + 1) * bins] = h / d if d > 0 else h
    return out


def _ranked(signature: Any, inputs: Any, queries: np.ndarray, k: int,
            threads: int) -> np.ndarray:
    """The first ``k`` database rows of each query (itself left out)."""
    if not signature.fitted:
        signature.fit(inputs, threads=threads)
    enc = signature.encode(inputs, threads=threads)
    index = signature.new_index()
    index.add(enc)
    _, ids, *_ = index.search(enc[queries], min(k + 1, len(enc)), threads=threads,
                              return_penalised=True)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    for r, q in enumerate(queries.tolist()):
        row = [i for i in ids[r].tolist() if i != q and i >= 0][:k]
        out[r, :len(row)] = row
    return out


def _one_per_category(categories: np.ndarray, seed: int, n: int | None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cats = np.unique(categories)
    if n is not None:
        cats = rng.permutation(cats)[:n]
    return np.array([rng.choice(np.nonzero(categories == c)[0]) for c in sorted(cats)])


def histogram_protocol(dataset: Any, signature: Any, inputs: Any, *, queries: Any = None,
                       n_queries: int | None = 10, seed: int = 0, k: int = 5,
                       norm: str = "max", threads: int = 0) -> dict[str, Any]:
    """Paper 003 Table I for ``signature`` on ``dataset`` (see the module docstring).

    ``queries``: image rows; default one random image of each of ``n_queries`` random
    categories (all categories when there are fewer; ``seed`` fixes the draw); ``"all"``:
    every image. Returns ``{"queries", "per_query", "mean", "mean_all_images" (None unless
    queries == "all"), "k", "norm"}``.
    """
    cats = np.asarray(dataset.categories)
    if isinstance(queries, str) and queries == "all":
        q = np.arange(len(cats))
    elif queries is None:
        q = _one_per_category(cats, seed, n_queries)
    else:
        q = np.asarray(queries, dtype=np.int64)
    hist = rgb_histograms([str(p) for p in dataset.images], norm=norm)
    top = _ranked(signature, inputs, q, k, threads)
    per = []
    for r, qi in enumerate(q.tolist()):
        res = top[r][top[r] >= 0]
        per.append(float(np.abs(hist[res] - hist[qi]).sum(axis=1).mean() / hist.shape[1]))
    return {"queries": q.tolist(), "per_query": per, "mean": float(np.mean(per)), "k": k,
            "norm": norm, "same_category_at_k": float((cats[top] == cats[q][:, None]).mean())}


def precision_protocol(dataset: Any, signature: Any, inputs: Any, *, fraction: float = 0.05,
                       seed: int = 0, k: int = 10, threads: int = 0) -> dict[str, Any]:
    """Paper 004 Table 1 for ``signature`` on ``dataset``: P@k of ``fraction`` of the images
    drawn at random with ``seed`` (each left out of its own ranking). Returns
    ``{"queries", "p_at_k", "k", "fraction", "seed"}``."""
    cats = np.asarray(dataset.categories)
    n = len(cats)
    m = max(1, round(fraction * n))
    q = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    top = _ranked(signature, inputs, q, k, threads)
    hit = (cats[np.where(top >= 0, top, 0)] == cats[q][:, None]) & (top >= 0)
    return {"queries": q.tolist(), "p_at_k": float(hit.mean()), "k": k, "fraction": fraction,
            "seed": seed}


# ----------------------------------------------------------------------------- command line
def _inputs(args: argparse.Namespace) -> tuple[Any, Any, int, int | None]:
    from ..eval.datasets import load_dataset
    from ..signatures import Inputs

    ds = load_dataset(args.dataset, args.root)
    if args.oracle:
        maps = [ds.read_label_map(i) for i in range(len(ds))]
        m, ign = len(ds.label_classes), ds.ignore_index
    else:
        from ..eval.cache import segment_cached

        maps, info = segment_cached([str(p) for p in ds.images], model=args.model,
                                    progress=False)
        m, ign = info["num_classes"], None
    feats = None
    return ds, Inputs(list(maps), feats, [str(p) for p in ds.images]), m, ign


def main(argv: Sequence[str] | None = None) -> int:
    from ..signatures import create_signature

    ap = argparse.ArgumentParser(prog="python -m semcbir_fast.deep.protocols",
                                 description="paper 003 Table I / paper 004 Table 1 protocols")
    ap.add_argument("protocol", choices=["hist", "p10"])
    ap.add_argument("--dataset", required=True, choices=["corel1k", "msrc"])
    ap.add_argument("--root", default=None)
    ap.add_argument("--oracle", action="store_true", help="ground-truth label maps (msrc)")
    ap.add_argument("--model", default="ade20k-mnv2")
    ap.add_argument("--signature", required=True)
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON",
                    help="signature parameters, e.g. part='\"eta\"' rerank_top=100")
    ap.add_argument("--seed", type=int, nargs="+", default=[0])
    ap.add_argument("--queries", default=None, help="'all': every image a query (hist)")
    ap.add_argument("--norm", default="max", choices=["max", "sum"])
    args = ap.parse_args(argv)
    ds, inputs, m, ign = _inputs(args)
    params = {}
    for item in args.set:
        key, _, val = item.partition("=")
        try:
            params[key] = json.loads(val)
        except json.JSONDecodeError:
            params[key] = val
    method = create_signature(args.signature, num_classes=m, ignore_index=ign,
                              **params).feature_method
    if method:  # local features (sbovp, hybrid, or a fusion holding one)
        from ..eval.cache import features_cached

        inputs.features = features_cached(inputs.paths, method)
    rows = []
    for seed in args.seed:
        sig = create_signature(args.signature, num_classes=m, ignore_index=ign, **params)
        if args.protocol == "hist":
            r = histogram_protocol(ds, sig, inputs, seed=seed, norm=args.norm,
                                   queries=args.queries)
        else:
            r = precision_protocol(ds, sig, inputs, seed=seed)
        r["signature"] = sig.describe()
        rows.append(r)
    json.dump(rows if len(rows) > 1 else rows[0], sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
