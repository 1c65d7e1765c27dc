"""Numbers published in the papers, printed beside ours (``shared/seeds/000_*.txt``).

Paper 000 (Ouni et al., "Deep Learning Based Semantic Segmentation For Robust Image
Retrieval"), Table 3: MAP of the Semantic Binary Signature per number of blocks
(4^0, 4^1, 4^2, 4^3) with HRNet-W48 trained on Mseg or on Coco-stuff, query-in-ground-truth
mode. Table 7: "MAP for the top 20 retrieved images" on Wang (Corel-1K); its Fig. 12 and
paper 001 Table 5 call the same numbers the precision of the top 20, so we put our P@20
beside them. The "proposed method" there is SBoVP (not SBS).

Differences in the data: the papers' MSRC v1 has 241 images in 9 categories; the copy in
``shared/data/msrc_v1`` has 240 images in 8 groups of 30.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TABLE3_SBS_MAP", "TABLE7_TOP20", "reference_for"]

TABLE3_SBS_MAP: dict[str, dict[str, list[float]]] = {
    "msrc": {"Mseg": [0.79, 0.83, 0.81, 0.89], "Coco-stuff": [0.75, 0.81, 0.79, 0.83]},
    "msrc_v2": {"Mseg": [0.64, 0.71, 0.67, 0.73], "Coco-stuff": [0.61, 0.62, 0.61, 0.66]},
    "corel1k": {"Mseg": [0.77, 0.81, 0.80, 0.86], "Coco-stuff": [0.76, 0.78, 0.75, 0.82]},
    "linnaeus": {"Mseg": [0.71, 0.78, 0.73, 0.77], "Coco-stuff": [0.58, 0.66, 0.64, 0.68]},
    "corel10k": {"Mseg": [0.53, 0.56, 0.56, 0.57], "Coco-stuff": [0.48, 0.47, 0.46, 0.49]},
    "ghim10k": {"Mseg": [0.53, 0.53, 0.54, 0.55], "Coco-stuff": [0.47, 0.48, 0.46, 0.48]},
}

TABLE7_TOP20: dict[str, float] = {
    "ElAlami": 0.76,
    "Guo and Prasetyo": 0.77,
    "Zeng et al.": 0.80,
    "Jitesh Pradhan": 0.81,
    "paper 000 SBoVP (Mseg)": 0.94,
}


def reference_for(dataset: str) -> dict[str, Any]:
    """The published numbers for a data set name used by :mod:`semcbir_fast.eval`."""
    out: dict[str, Any] = {}
    if dataset in TABLE3_SBS_MAP:
        out["table3"] = TABLE3_SBS_MAP[dataset]
    if dataset == "corel1k":
        out["table7_top20"] = TABLE7_TOP20
    return out
