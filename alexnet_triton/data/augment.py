"""The paper's data augmentation and test-time crops, on whole uint8 batches.

Training (section 4.1): a random crop_size x crop_size patch of each S x S image, flipped
horizontally with probability 1/2, plus the PCA colour shift sum_i alpha_i * lambda_i * p_i
(alpha_i ~ N(0, pca_sigma), once per image, p_i / lambda_i the eigenvectors / eigenvalues of
the training set's RGB covariance), minus the mean image; values in 0..255 units, float32.
All random numbers come from the caller's CPU torch.Generator, in a fixed order per batch
(top, left, flip, alpha), so a checkpointed generator state replays the same augmentation.

Evaluation: the center crop, or the paper's ten crops (four corners and the center, then the
same five flipped), mean-subtracted, no colour shift.

The work is one launch of the fused kernel (kernels/augment.py) on CUDA or under
TRITON_INTERPRET=1, and its PyTorch reference on the CPU otherwise.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from alexnet_triton.data.datasets import DatasetInfo

def _launcher(images: Tensor):
    from alexnet_triton.dispatch import pick
    from alexnet_triton.kernels import augment
    from alexnet_triton.kernels.reference import augment as reference
    return pick(images, augment, reference).augment


class Augmenter:
    """Turns uint8 [N, 3, S, S] batches into float32 network inputs [N, 3, crop, crop]."""

    def __init__(self, info: DatasetInfo, crop_size: int, pca_sigma: float = 0.1, device="cpu") -> None:
        size = info.image_size
        if not 1 <= crop_size <= size:
            raise ValueError(f"crop size must be in [1, {size}] for {size}x{size} images, got {crop_size}")
        if not pca_sigma >= 0:
            raise ValueError(f"pca_sigma must be >= 0, got {pca_sigma}")
        self.image_size, self.crop_size, self.pca_sigma = size, crop_size, float(pca_sigma)
        self.device = torch.device(device)
        self.mean = info.mean.to(self.device, torch.float32).contiguous()  # [3, S, S]
        # The colour basis scaled by the eigenvalues: shift = 255 * V (alpha * lambda).
        self.color_basis = (info.eigvec.double() * info.eigval.double()).float() * 255.0  # [3, 3]

    # -- the random draws, on the host ---------------------------------------------------

    def draw(self, n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(top, left, flip) int32 [n] and the RGB shift float32 [n, 3] (0..255 units)."""
        room = self.image_size - self.crop_size + 1
        top = torch.randint(0, room, (n,), generator=generator, dtype=torch.int32)
        left = torch.randint(0, room, (n,), generator=generator, dtype=torch.int32)
        flip = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int32)
        alpha = torch.randn(n, 3, generator=generator, dtype=torch.float32) * self.pca_sigma
        shift = alpha @ self.color_basis.T  # [n, 3]: sum_i alpha_i lambda_i p_i
        return top, left, flip, shift

    # -- the three uses ------------------------------------------------------------------

    def train(self, images_uint8: Tensor, generator: torch.Generator) -> Tensor:
        """Random crop + flip + PCA lighting + mean subtraction -> float32 [N, 3, crop, crop]."""
        images = self._images(images_uint8)
        top, left, flip, shift = self.draw(images.shape[0], generator)
        return self._launch(images, top, left, flip, shift)

    def center(self, images_uint8: Tensor) -> Tensor:
        """The center crop, mean subtracted -> float32 [N, 3, crop, crop]."""
        images = self._images(images_uint8)
        middle = (self.image_size - self.crop_size) // 2
        return self._fixed(images, middle, middle, False)

    def ten_crop(self, images_uint8: Tensor) -> Tensor:
        """[10, N, 3, crop, crop]: top-left, top-right, bottom-left, bottom-right, center, then
        the same five flipped horizontally (the paper's test-time averaging)."""
        images = self._images(images_uint8)
        far = self.image_size - self.crop_size
        middle = far // 2
        corners = [(0, 0), (0, far), (far, 0), (far, far), (middle, middle)]
        return torch.stack([self._fixed(images, top, left, flip)
                            for flip in (False, True) for top, left in corners])

    # -- plumbing ------------------------------------------------------------------------

    def _images(self, images: Tensor) -> Tensor:
        expected = (3, self.image_size, self.image_size)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"Augmenter expects uint8 [N, 3, {self.image_size}, {self.image_size}] "
                             f"images, got {images.dtype} {tuple(images.shape)}")
        return images.to(self.device, non_blocking=True)

    def _fixed(self, images: Tensor, top: int, left: int, flip: bool) -> Tensor:
        n = images.shape[0]
        full = lambda value: torch.full((n,), value, dtype=torch.int32)  # noqa: E731
        return self._launch(images, full(top), full(left), full(int(flip)),
                            torch.zeros(n, 3, dtype=torch.float32))

    def _launch(self, images: Tensor, top: Tensor, left: Tensor, flip: Tensor, shift: Tensor) -> Tensor:
        # One host-to-device copy of the kernel's per-plane records, int32 [n, 3, 4].
        from alexnet_triton.kernels.augment import pack_params
        params = pack_params(top, left, flip, shift).to(images.device, non_blocking=True)
        return _launcher(images)(images, self.mean, params, self.crop_size)
