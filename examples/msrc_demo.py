"""End-to-end demo on MSRC v1 ground-truth label maps ("oracle" segmentation).

Encodes the 240 pixel-labelled maps into Semantic Binary Signatures, searches every image
against all of them by Hamming distance, prints the top-5 of one query and the MAP / P@R
per number of blocks (paper 000, Table 3 layout).

Run: python examples/msrc_demo.py [--data DIR]   (default: $SEMCBIR_DATA or ../shared/data)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import semcbir_fast as sf
from semcbir_fast._paths import data_root
from semcbir_fast.eval import mean_average_precision, precision_at_k


def load_msrc(root: Path) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    files = sorted((root / "msrc_v1" / "labels").glob("*.png"))
    if not files:
        raise SystemExit(f"no MSRC v1 label maps under {root / 'msrc_v1' / 'labels'}: "
                         "set SEMCBIR_DATA or pass --data")
    maps = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files]
    cats = np.array([int(f.stem.split("_")[0]) for f in files])
    return [f.stem for f in files], maps, cats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--query", type=int, default=0, help="index of the query image to show")
    args = ap.parse_args()
    names, maps, cats = load_msrc(args.data or data_root())
    print(f"semcbir_fast {sf.__version__}: backend={sf.backend()} isa={sf.active_isa()}; "
          f"{len(maps)} MSRC v1 maps, 14 classes (0 = void)")
    print("blocks | MAP    | P@R   | encode ms/img")
    for levels in range(4):
        t0 = time.perf_counter()
        codes = sf.encode_sbs(maps, num_classes=14, levels=levels, ignore_index=0, threads=1)
        enc_ms = (time.perf_counter() - t0) * 1e3 / len(maps)
        dist, ids = sf.hamming_topk(codes, codes, k=len(maps))
        ranked = cats[ids]
        r = np.bincount(cats)[cats]
        p_at_r = np.mean([precision_at_k(ranked[i : i + 1], cats[i : i + 1], int(r[i]))[0]
                          for i in range(len(cats))])
        print(f"{4**levels:6d} | {mean_average_precision(ranked, cats):.4f} | {p_at_r:.3f} | "
              f"{enc_ms:.4f}")
    q = args.query
    print(f"\ntop-5 for query {names[q]} (category {cats[q]}), 64 blocks:")
    for rank, (d, i) in enumerate(zip(dist[q, :5], ids[q, :5]), 1):
        print(f"  {rank}. {names[i]:<12} category {cats[i]}  hamming {d}")


if __name__ == "__main__":
    main()
