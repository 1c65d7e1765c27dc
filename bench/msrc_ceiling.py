"""How high can a content-based ranking go on MSRC v1? The cow / grass ceiling of groups 1 and 5.

MSRC v1's group 1 ("grass") holds cows on grass too: by the ground-truth label maps, 15 of
its 30 images show cows, on 11-39 % of the labelled pixels, much as every image of group 5 ("cows")
does. A ranking that looks at image content only cannot know which of these cow-on-grass
pictures the data set filed under "grass" and which under "cows".

This script scores an idealised retriever, computed from the ground truth alone (no model,
no signature of the library):

- the *pool*: images of groups 1 and 5 whose ground truth has ``cow`` on at least
  ``--cow-share`` of the labelled pixels;
- distance 0 to itself; 1 to an image of the same content class (the pool for a pool image,
  its own group otherwise: perfect everywhere but the pool); 2 to another image of
  groups 1 or 5 (grass scenes, second); 3 to the rest;
- ties in random order: the exact expected AP over all orderings of equal distances
  (:func:`semcbir_fast.eval.average_precision` with ``distances``), query in the database,
  full ranking, as ``semcbir eval`` does.

So it is perfect on groups 2-4 and 6-8 and on the cow-free images of group 1, and blind
only to the filing of the pool. Its MAP is what a content-only ranking reaches when it
gets everything else right: a ceiling against which the published 0.91 (SBoVP, paper 000
Table 6) and our numbers can be read. Run:

    PYTHONPATH=python python bench/msrc_ceiling.py [--cow-share 0.01] [--root DIR]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def content_distances(groups: np.ndarray, pool: np.ndarray, grass_groups: tuple[int, ...]
                      ) -> np.ndarray:
    """(n, n) distances of the idealised retriever (0 self, 1 same content, 2 grass, 3)."""
    n = groups.shape[0]
    content = np.where(pool, -1, groups)  # -1: the pool, one content class
    grass = np.isin(groups, grass_groups)
    d = np.full((n, n), 3.0)
    d[grass[:, None] & grass[None, :]] = 2.0
    d[content[:, None] == content[None, :]] = 1.0
    np.fill_diagonal(d, 0.0)
    return d


def main(argv: list[str] | None = None) -> int:
    from semcbir_fast.eval import average_precision
    from semcbir_fast.eval.datasets import msrc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="MSRC v1 folder (default: $SEMCBIR_DATA)")
    ap.add_argument("--cow-share", type=float, default=0.01,
                    help="least share of the labelled pixels that are cow for the pool (0.01)")
    args = ap.parse_args(argv)
    ds = msrc(args.root)
    if not ds.has_ground_truth:
        print("MSRC v1 ground-truth label maps not found", file=sys.stderr)
        return 1
    cow = ds.label_classes.index("cow")
    groups = ds.categories
    grass_groups = (1, 5)
    pool = np.zeros(len(ds), bool)
    for i in np.flatnonzero(np.isin(groups, grass_groups)):
        lab = ds.read_label_map(int(i))
        labelled = lab[lab != ds.ignore_index] if ds.ignore_index is not None else lab.ravel()
        pool[i] = labelled.size > 0 and (labelled == cow).mean() >= args.cow_share
    d = content_distances(groups, pool, grass_groups)
    order = np.argsort(d, axis=1, kind="stable")
    ranked = groups[order]
    dist = np.take_along_axis(d, order, axis=1)
    aps = average_precision(ranked, groups, distances=dist)
    for g in grass_groups:
        print(f"group {g}: {int((pool & (groups == g)).sum())} of {int((groups == g).sum())} "
              f"images in the cow pool (cow >= {args.cow_share:.0%} of the labelled pixels)")
    print("per-group AP: " + ", ".join(
        f"{g} {aps[groups == g].mean():.3f}" for g in np.unique(groups).tolist()))
    print(f"MAP of the idealised content ranking: {aps.mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
