"""Global image descriptors from CNN feature maps (pure functions, NumPy or torch).

- :mod:`~semcbir_fast.deep.pooling`: GAP, GeM, CroW aggregation and L2 normalisation;
- :mod:`~semcbir_fast.deep.whitening`: PCA whitening learned on a set of descriptors;
- :mod:`~semcbir_fast.deep.neural_codes`: paper 003's ``h(x)``, ``eta~(x)``, ``eta(x)``
  (fully connected codes plus the significant activations of every block).

The feature maps come from :class:`semcbir_fast.models.backbone.Backbone` (or any
network); every function takes ``(N, C, H, W)`` maps and returns ``(N, D)`` descriptors
of the same kind (NumPy in, NumPy out). torch is needed (``pip install semcbir_fast[cnn]``);
``import semcbir_fast`` does not import this package.
"""

from __future__ import annotations

from .neural_codes import (
    NeuralCodes,
    block_weights,
    correspondence_stride,
    eta_tilde,
    last_block_weights,
    neural_codes,
    significance_counts,
)
from .pooling import crow, crow_channel_weights, crow_spatial_weights, gap, gem, l2_normalize
from .whitening import PCAWhitening, fit_pca, fit_pca_whitening

__all__ = [
    "NeuralCodes",
    "PCAWhitening",
    "block_weights",
    "correspondence_stride",
    "crow",
    "crow_channel_weights",
    "crow_spatial_weights",
    "eta_tilde",
    "fit_pca",
    "fit_pca_whitening",
    "gap",
    "gem",
    "l2_normalize",
    "last_block_weights",
    "neural_codes",
    "significance_counts",
]
