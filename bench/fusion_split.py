"""Choose the fused signature's components on one half of each data set, report the other.

The rule (fixed before any of these numbers was measured, docs/deep.md "Choosing the
components on a disjoint split"):

- each data set is split in two halves per category (the images of a category in file
  order, alternately to half A and half B); every evaluation is query-in-db with full
  ranking *inside one half* (the other half's images are not in its database);
- candidates (declared in advance): the components ``cnn sbs`` (the current default),
  ``regions sbs``, ``cnn sbovp``, ``cnn sbs sbovp``, ``regions sbs sbovp``, every other
  setting at the fused signature's defaults (z-normalised, equal weights, k-reciprocal
  with k1 = 20, k2 = 6, lambda = 0.3) and every component at its own defaults;
- selected: the candidate with the highest mean of half-A MAP over Corel-1K and MSRC v1
  (one default for both data sets, never one per data set); a tie within 0.002 goes to the
  candidate listed first (fewer components, the current default first);
- reported: every candidate's half-B MAP (labels never used by the choice) and full-set MAP.

The backbone rule (written here before any of its numbers was measured, a later session):
the same halves and protocol; candidates: the default components ``cnn sbs`` with the deep
component on ``efficientnet-lite0`` (the current default), ``efficientnet-lite1`` and
``efficientnet-lite2``, each at its own native input size (224, 240, 260), everything else
at its defaults; selected: the highest mean half-A MAP over the two data sets, a tie within
0.002 going to the candidate listed first (the smaller, cheaper network); reported: half B
and the full sets. Run with ``--components cnn+sbs --backbones efficientnet-lite0
efficientnet-lite1 efficientnet-lite2``.

The flip rule (written here before any of its numbers was measured, a third session): the
same halves and protocol; candidates: the default fused signature (``cnn sbs``, its deep
component on ``efficientnet-lite1``) without test-time flipping (the current default) and
with it (``flip``: every backbone feature map averaged over the image and its horizontal
mirror, the mirror's maps flipped back; twice the network time), everything else at its
defaults; selected: the highest mean half-A MAP over the two data sets, a tie within 0.002
going to the candidate listed first (no flip: half the network time); reported: half B and
the full sets. Run with ``--components cnn+sbs --backbones efficientnet-lite1 --flip no
yes``.

The adaptive-weights rule (written here before any of its numbers was measured, after the
flip rule kept flipping off): the same halves and protocol; candidates: the default fused
signature (``cnn sbs`` on ``efficientnet-lite1``, equal fixed weights; the current default)
and the same with query-adaptive weights (``fusion_weights="adaptive"``: a component's
weight for an image is the inverse of the area under its min-max normalised, sorted
similarity curve over the whole database (the query-adaptive late fusion of Zheng et al.,
CVPR 2015, without their reference curve: an L-shaped curve, a few close images and the
rest far, means a discriminative component), an image's weights scaled to sum to the
number of components; a pair's weight is the mean of its two images' weights, so that the
fused distance stays symmetric for the re-ranking), everything else at its defaults;
selected: the highest mean half-A MAP over the two data sets, a tie within 0.002 going to
the candidate listed first (fixed weights); reported: half B and the full sets. Run with
``--components cnn+sbs --backbones efficientnet-lite1 --fusion-weights fixed adaptive``.

The component rule again, under adaptive weights (written here before any of its numbers was
measured, after the adaptive-weights rule made them the default: the number of components
and their weighting interact, so the first rule is run once more under the new defaults,
unchanged otherwise): the five candidates of the component rule (``CANDIDATES``, the current
default ``cnn sbs`` first), every one at the fused defaults of now (``efficientnet-lite1``,
adaptive weights, no flip); the same halves, criterion (mean half-A MAP over the two data
sets) and tie rule (within 0.002 to the candidate listed first); reported: half B and the
full sets. Run with ``--backbones efficientnet-lite1 --fusion-weights adaptive``.

Label maps come from the segmentation model given (default the composite ``ade20k+voc``),
from the per-image label cache.

    PYTHONPATH=python python bench/fusion_split.py --dataset msrc corel1k --model ade20k+voc
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

CANDIDATES = [("cnn", "sbs"), ("regions", "sbs"), ("cnn", "sbovp"), ("cnn", "sbs", "sbovp"),
              ("regions", "sbs", "sbovp")]


def halves(categories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of half A and half B: within each category, alternately (file order)."""
    a, b = [], []
    for c in np.unique(categories):
        rows = np.flatnonzero(categories == c)
        a += rows[0::2].tolist()
        b += rows[1::2].tolist()
    return np.array(sorted(a)), np.array(sorted(b))


def share_descriptors() -> None:
    """Compute each kind of backbone descriptor once, for the first (full) image list, and
    give a half its rows of it. Every descriptor is a per-image function (eval-mode network,
    one image's label map for its regions), so a row does not depend on the batch."""
    import os

    from semcbir_fast.deep import extract

    inner = extract.extract_cached
    done: dict[tuple[str, str, bool], tuple[dict[str, int], dict]] = {}

    def cached(paths, what, reducer, *, backbone="efficientnet-lite0", **kw):
        files = [os.path.abspath(os.fspath(p)) for p in paths]
        key = (what, backbone, bool(kw.get("flip", False)))
        if key in done and all(f in done[key][0] for f in files):
            pos, out = done[key]
            rows = np.array([pos[f] for f in files], dtype=np.int64)
            return {k: v[rows] for k, v in out.items()}
        out = inner(paths, what, reducer, backbone=backbone, **kw)
        if what != "regions-crop":  # crop results are not one row per image
            done[key] = ({f: i for i, f in enumerate(files)}, out)
        return out

    extract.extract_cached = cached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", nargs="+", default=["msrc", "corel1k"])
    ap.add_argument("--model", default="ade20k+voc")
    ap.add_argument("--components", nargs="+", default=None,
                    help="evaluate only these candidates, as 'cnn+sbs' (default all)")
    ap.add_argument("--parts", nargs="+", default=["full", "A", "B"],
                    help="the first one computes the descriptors of every image")
    ap.add_argument("--backbones", nargs="+", default=None, metavar="NAME",
                    help="the backbone rule (docstring): evaluate every candidate with the "
                         "deep components on each of these backbones (default: each "
                         "component's own default)")
    ap.add_argument("--flip", nargs="+", default=None, choices=["no", "yes"],
                    help="the flip rule (docstring): evaluate every candidate without / with "
                         "test-time flipping (default: the fused default)")
    ap.add_argument("--fusion-weights", nargs="+", default=None, choices=["fixed", "adaptive"],
                    help="the adaptive-weights rule (docstring): evaluate every candidate with "
                         "these fusion weights (default: the fused default)")
    ap.add_argument("--out", default=None, help="append one JSON line per result here")
    args = ap.parse_args()

    from semcbir_fast.eval.cache import features_cached, segment_cached
    from semcbir_fast.eval.datasets import load_dataset
    from semcbir_fast.eval.evaluate import evaluate
    from semcbir_fast.signatures import Inputs, create_signature

    share_descriptors()
    cands = CANDIDATES if not args.components else [
        tuple(c.split("+")) for c in args.components]
    for name in args.dataset:
        ds = load_dataset(name)
        paths = [str(p) for p in ds.images]
        maps, minfo = segment_cached(paths, model=args.model, progress=False)
        cats = np.asarray(ds.categories)
        a, b = halves(cats)
        parts = {"A": a, "B": b, "full": np.arange(len(ds))}
        feats_all = None
        m = minfo["num_classes"]

        def make(comps, backbone, flip, fw, m=m):
            return create_signature("fused", num_classes=m, components=comps,
                                    **({"backbone": backbone} if backbone else {}),
                                    **({"flip": flip == "yes"} if flip else {}),
                                    **({"fusion_weights": fw} if fw else {}))

        for comps, backbone, flip, fw in itertools.product(
                cands, args.backbones or [None], args.flip or [None],
                args.fusion_weights or [None]):
            sig0 = make(comps, backbone, flip, fw)
            if sig0.feature_method and feats_all is None:
                feats_all = features_cached(paths, sig0.feature_method, progress=False)
            for part in args.parts:
                rows = parts[part]
                sig = make(comps, backbone, flip, fw)
                t0 = time.perf_counter()
                inp = Inputs([maps[i] for i in rows],
                             None if not sig.feature_method else [feats_all[i] for i in rows],
                             [paths[i] for i in rows])
                res = evaluate(ds.subset(rows), sig, inp)
                r = res.results[0]
                line = {"dataset": name, "model": args.model, "components": "+".join(comps),
                        **({"backbone": backbone} if backbone else {}),
                        **({"flip": flip} if flip else {}),
                        **({"fusion_weights": fw} if fw else {}),
                        "part": part, "images": len(rows), "map": round(float(r.map), 4),
                        "seconds": round(time.perf_counter() - t0, 1)}
                print(json.dumps(line), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
