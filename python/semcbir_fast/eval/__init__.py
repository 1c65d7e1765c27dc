"""Retrieval evaluation: MAP, P@k (SPEC.md section 5)."""

from .metrics import average_precision, mean_average_precision, precision_at_k

__all__ = ["average_precision", "mean_average_precision", "precision_at_k"]
