"""Data for training AlexNet: image folders, the prepared store, the built-in dataset, the
loaders and the paper's augmentation.

- ``open_dataset(path)``: a prepared store (``python -m alexnet_triton.prepare``) or a raw
  ImageFolder (train/<class>/..., val/<class>/...) -> ``DatasetInfo``.
- ``builtin_dataset()``: a generated 10-class shapes-and-textures dataset, no download.
- ``train_loader`` / ``eval_loader``: uint8 [N, 3, S, S] batches, decoded in worker processes,
  in an order fixed by (seed, epoch), sharded by rank.
- ``Augmenter``: random crop, flip, PCA colour noise and mean subtraction in one fused kernel
  on the GPU; center crop and ten crops for evaluation.
- ``load_image(path, size)``: one image file as the store holds it (for prediction).
"""
from alexnet_triton.data.augment import Augmenter
from alexnet_triton.data.builtin import builtin_dataset
from alexnet_triton.data.datasets import DatasetInfo, open_dataset
from alexnet_triton.data.folder import DataError
from alexnet_triton.data.images import load_image
from alexnet_triton.data.loaders import eval_loader, train_loader

__all__ = ["DatasetInfo", "open_dataset", "builtin_dataset", "train_loader", "eval_loader",
           "Augmenter", "DataError", "load_image"]
