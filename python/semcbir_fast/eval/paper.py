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

__all__ = ["HYBRID_MAP", "TABLE3_SBS_MAP", "TABLE5_SBOVP_MAP", "TABLE7_TOP20", "reference_for"]

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


#: Paper 000 Table 5: SBoVP MAP with HRNet-W48 (segmentation training set, descriptor).
TABLE5_SBOVP_MAP: dict[str, dict[str, float]] = {
    "msrc": {"Mseg SURF": 0.90, "Mseg KAZE": 0.91, "Coco-stuff SURF": 0.89,
             "Coco-stuff KAZE": 0.88},
    "msrc_v2": {"Mseg SURF": 0.71, "Mseg KAZE": 0.73, "Coco-stuff SURF": 0.74,
                "Coco-stuff KAZE": 0.75},
    "linnaeus": {"Mseg SURF": 0.79, "Mseg KAZE": 0.80, "Coco-stuff SURF": 0.77,
                 "Coco-stuff KAZE": 0.78},
    "corel1k": {"Mseg SURF": 0.89, "Mseg KAZE": 0.88, "Coco-stuff SURF": 0.87,
                "Coco-stuff KAZE": 0.85},
}

#: Paper 001 Tables 3 (Mseg) and 4 (Coco-stuff): hybrid signature MAP without / with the
#: semantic filter, per descriptor.
HYBRID_MAP: dict[str, dict[str, float]] = {
    "msrc": {"Mseg KAZE": 0.79, "Mseg SURF": 0.84, "Mseg HOG": 0.85,
             "Mseg KAZE + filter": 0.81, "Mseg SURF + filter": 0.86, "Mseg HOG + filter": 0.87,
             "Coco-stuff KAZE": 0.77, "Coco-stuff SURF": 0.82, "Coco-stuff HOG": 0.84,
             "Coco-stuff KAZE + filter": 0.80, "Coco-stuff SURF + filter": 0.85,
             "Coco-stuff HOG + filter": 0.86},
    "corel1k": {"Mseg KAZE": 0.73, "Mseg SURF": 0.74, "Mseg HOG": 0.71,
                "Mseg KAZE + filter": 0.84, "Mseg SURF + filter": 0.84,
                "Mseg HOG + filter": 0.83,
                "Coco-stuff KAZE": 0.71, "Coco-stuff SURF": 0.72, "Coco-stuff HOG": 0.69,
                "Coco-stuff KAZE + filter": 0.82, "Coco-stuff SURF + filter": 0.83,
                "Coco-stuff HOG + filter": 0.80},
}


def reference_for(dataset: str, signature: str = "sbs") -> dict[str, Any]:
    """The published numbers of ``signature`` (a registry name) on ``dataset``: what its
    class's ``published`` gives (``source``, ``rows``), plus ``table7_top20`` on Corel-1K."""
    from ..signatures import get_signature

    out = dict(get_signature(signature).published(dataset))
    if dataset == "corel1k":
        out["table7_top20"] = TABLE7_TOP20
    return out
