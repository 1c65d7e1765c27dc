"""Signature kinds: one :class:`Signature` protocol, one registry, one module per kind.

=========  ======================  ==========================================  ==========
name       class                   what it is                                  index
=========  ======================  ==========================================  ==========
``sbs``    :class:`SBSSignature`   paper 000 binary codes, Hamming             SBSIndex
``sbovp``  :class:`SBoVPSignature` paper 000 visual phrases, sparse L2         SparseSignatureIndex
``hybrid`` :class:`HybridSignature` paper 001 class-mean descriptors + filter  SparseSignatureIndex
``deephash`` :class:`DeepHashSignature` paper 002 learned hash codes (+ SBS)  BinaryIndex
=========  ======================  ==========================================  ==========

>>> from semcbir_fast.signatures import create_signature
>>> sig = create_signature("sbovp", "spec", num_classes=151)   # SPEC.md's plain form
"""

from __future__ import annotations

from ._local import LocalSignature
from .base import Inputs, Signature, option
from .cnn import CNNParams, CNNSignature, DenseSignature
from .deephash import DeepHashParams, DeepHashSignature
from .fused import FusedParams, FusedSignature
from .hybrid import HybridParams, HybridSignature
from .neural_codes import NeuralCodesParams, NeuralCodesSignature
from .regions import RegionsParams, RegionsSignature
from .registry import (
    DEFAULT_SIGNATURE,
    create_signature,
    get_signature,
    list_signatures,
    register_signature,
    unregister_signature,
)
from .sbovp import SBoVPParams, SBoVPSignature
from .sbs import SBSParams, SBSSignature

__all__ = [
    "DEFAULT_SIGNATURE",
    "CNNParams",
    "CNNSignature",
    "DeepHashParams",
    "DeepHashSignature",
    "DenseSignature",
    "FusedParams",
    "FusedSignature",
    "HybridParams",
    "HybridSignature",
    "Inputs",
    "LocalSignature",
    "NeuralCodesParams",
    "NeuralCodesSignature",
    "RegionsParams",
    "RegionsSignature",
    "SBSParams",
    "SBSSignature",
    "SBoVPParams",
    "SBoVPSignature",
    "Signature",
    "create_signature",
    "get_signature",
    "list_signatures",
    "option",
    "register_signature",
    "unregister_signature",
]
