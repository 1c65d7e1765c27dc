"""Numbers published in the papers, printed beside ours (``shared/seeds/000_*.txt``).

Paper 000 (Ouni et al., "Deep Learning Based Semantic Segmentation For Robust Image
Retrieval"), Table 3: MAP of the Semantic Binary Signature per number of blocks
(4^0, 4^1, 4^2, 4^3) with HRNet-W48 trained on Mseg or on Coco-stuff, query-in-ground-truth
mode. Table 7: "MAP for the top 20 retrieved images" on Wang (Corel-1K); its Fig. 12 and
paper 001 Table 5 call the same numbers the precision of the top 20, so we put our P@20
beside them. The "proposed method" there is SBoVP (not SBS).

Papers 003 (neural codes, Table I: colour-histogram distances of the top-5 results on
IMAGENET1M) and 004 (significant regions, Table 1: precision of the top 10 on Caltech
101 / 256; Table 2: MAP on Oxford 5k / Paris 6k) evaluate on other collections than ours;
their tables are kept here for the protocol reproductions of docs/results_deep.md.

Differences in the data: the papers' MSRC v1 has 241 images in 9 categories; the copy in
``shared/data/msrc_v1`` has 240 images in 8 groups of 30.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HYBRID_MAP", "PAPER003_TABLE1_AVERAGE", "PAPER003_TABLE1_HIST_L1",
           "PAPER004_TABLE1_P10", "PAPER004_TABLE2_MAP", "TABLE3_SBS_MAP", "TABLE5_SBOVP_MAP",
           "TABLE6_MAP", "TABLE7_TOP20", "reference_for"]

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


# ----------------------------------------------------------------------------- paper 003
#: Paper 003 (Staszewski et al., "A new approach to descriptors generation for image
#: retrieval by analyzing activations of deep neural network layers", IEEE TNNLS 2021),
#: Table I: for each of 10 random ImageNet (IMAGENET1M) queries, the mean over its top-5
#: results (L1 / dims distance of the descriptors) of the L1 distance between the RGB
#: colour histograms (25 bins per channel, 75 values) of result and query, divided by the
#: number of dimensions; lower is better. VGG16; IM(x) = the data set's own descriptors.
PAPER003_TABLE1_HIST_L1: dict[str, list[float]] = {
    "IM(x) (IMAGENET1M)": [0.384553, 0.204664, 0.317033, 0.245463, 0.215236, 0.296376,
                           0.281501, 0.268336, 0.183141, 0.107072],
    "h(x) (FC)": [0.428392, 0.185021, 0.388040, 0.225865, 0.208572, 0.223383, 0.269391,
                  0.282212, 0.227355, 0.103178],
    "eta~(x) (Conv.)": [0.305474, 0.172917, 0.282870, 0.183860, 0.231766, 0.263808,
                        0.247089, 0.238866, 0.192234, 0.055905],
    "eta(x) (FC + Conv.)": [0.235454, 0.191784, 0.188446, 0.198270, 0.215622, 0.192215,
                            0.210368, 0.221514, 0.155330, 0.083886],
}
#: The "Average" row of paper 003 Table I.
PAPER003_TABLE1_AVERAGE: dict[str, float] = {
    "IM(x) (IMAGENET1M)": 0.250337,
    "h(x) (FC)": 0.254141,
    "eta~(x) (Conv.)": 0.217479,
    "eta(x) (FC + Conv.)": 0.189289,
}

# ----------------------------------------------------------------------------- paper 004
#: Paper 004 (Xu et al., "Image retrieval research based on significant regions",
#: ChinaCom 2018), Table 1: "MAP" of 5 % random queries on Caltech 101 / 256, which the
#: text defines as the precision of the top 10 (its eq. 3, AP@k = sum_{i<=k} Rel(i) / k).
PAPER004_TABLE1_P10: dict[str, dict[str, float]] = {
    "caltech101": {"BoW": 0.223, "Global CNN feature": 0.791, "Ours": 0.807,
                   "Ours + QE": 0.801},
    "caltech256": {"BoW": 0.268, "Global CNN feature": 0.649, "Ours": 0.674,
                   "Ours + QE": 0.701},
}
#: Paper 004 Table 2: MAP of instance retrieval on Oxford 5k / Paris 6k (None: not given).
PAPER004_TABLE2_MAP: dict[str, dict[str, float | None]] = {
    "oxford5k": {"Tr. Embedding": 0.560, "Neural Codes": 0.435, "Razavian et al.": 0.533,
                 "Sum pooling": 0.589, "R-MAC": 0.669, "SPoC": 0.561, "CroW": 0.657,
                 "Ours": 0.682, "Ours + QE": 0.703},
    "paris6k": {"Tr. Embedding": None, "Neural Codes": None, "Razavian et al.": 0.670,
                "Sum pooling": None, "R-MAC": 0.830, "SPoC": 0.729, "CroW": 0.7347,
                "Ours": 0.737, "Ours + QE": 0.751},
}

# ----------------------------------------------------------------------------- paper 000
#: Paper 000 Table 6: MAP of methods from the state of the art and of paper 000's best
#: ("Ours(best)") on MSRC v1 and Wang (Corel-1K); None where the paper gives "-".
TABLE6_MAP: dict[str, dict[str, float | None]] = {
    "msrc": {"BoVW": 0.48, "n-BoVW": 0.58, "VLAD": 0.78, "N-Gram": None, "AlexNet": 0.81,
             "VGGNet": 0.76, "ResNet": 0.83, "SaCoCo": None, "Ruigang": None, "Ayan": None,
             "Chu": None, "Ours(best)": 0.91},
    "corel1k": {"BoVW": 0.48, "n-BoVW": 0.60, "VLAD": 0.74, "N-Gram": 0.37, "AlexNet": 0.68,
                "VGGNet": 0.76, "ResNet": 0.82, "SaCoCo": 0.54, "Ruigang": None, "Ayan": 0.79,
                "Chu": 0.80, "Ours(best)": 0.89},
}
