"""Retrieval evaluation (SPEC.md section 5): data sets, metrics, evaluation runs.

- :mod:`~semcbir_fast.eval.metrics`: MAP, P@k, P@R, per-category AP, precision-recall
  curve, with an optional tie-aware variant;
- :mod:`~semcbir_fast.eval.datasets`: Corel-1K, MSRC (with ground-truth label maps for
  "oracle" segmentation) and folder-per-category layouts, disjoint splits;
- :mod:`~semcbir_fast.eval.evaluate`: :func:`evaluate_sbs` scores SBS per number of blocks,
  :func:`evaluate_signature` SBoVP and the hybrid signature;
- :mod:`~semcbir_fast.eval.cache`: label maps computed by a model, cached on disk;
- :mod:`~semcbir_fast.eval.paper`: the published numbers, for comparison;
- :mod:`~semcbir_fast.eval.summary`: one Markdown table of several signatures on several
  data sets (paper 000 Table 6 layout, ``semcbir eval --signature all``).

Only NumPy is imported here; OpenCV and torch load when a function needs them.
"""

from .datasets import Dataset, corel1k, find_images, folders, load_dataset, msrc, split_disjoint
from .evaluate import EvalResult, LevelResult, SignatureResult, evaluate_sbs, evaluate_signature
from .metrics import (
    average_precision,
    mean_average_precision,
    per_category_ap,
    precision_at_k,
    precision_at_r,
    precision_recall_curve,
    relevance,
)

__all__ = [
    "Dataset",
    "EvalResult",
    "LevelResult",
    "SignatureResult",
    "average_precision",
    "corel1k",
    "evaluate_sbs",
    "evaluate_signature",
    "find_images",
    "folders",
    "load_dataset",
    "mean_average_precision",
    "msrc",
    "per_category_ap",
    "precision_at_k",
    "precision_at_r",
    "precision_recall_curve",
    "relevance",
    "split_disjoint",
]
