"""Segmentation models (PyTorch, TorchScript-exportable)."""
