"""The fused augmentation kernel against its reference, and the Augmenter's geometry and
colour statistics: random crops and flips, the paper's PCA lighting, center and ten crops."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from alexnet_triton.data import Augmenter, DatasetInfo
from alexnet_triton.kernels import augment as augment_kernels
from alexnet_triton.kernels.reference import augment as augment_reference
from helpers import assert_close, tolerance


def _info(size: int, mean=None, eigval=(0.2, 0.02, 0.005), eigvec=None) -> DatasetInfo:
    if mean is None:
        mean = torch.zeros(3, size, size)
    if eigvec is None:
        eigvec = torch.eye(3)
    return DatasetInfo(Path("."), ("a", "b"), size, mean.float(), torch.as_tensor(eigval).float(),
                       eigvec.float(), 0, 0)


def _position_images(n: int, size: int) -> torch.Tensor:
    """uint8 [n, 3, size, size] whose values tell where they came from (size <= 16)."""
    assert size <= 16
    position = torch.arange(size * size, dtype=torch.int64).reshape(size, size)
    channels = torch.stack([position, 255 - position, (position * 7 + 3) % 256])
    per_image = torch.arange(n)[:, None, None, None] * 0  # same picture for every image
    return (channels[None] + per_image).to(torch.uint8).contiguous()


def _random_inputs(n: int, size: int, crop: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    mean = torch.rand(3, size, size, generator=g) * 255
    room = size - crop + 1
    top = torch.randint(0, room, (n,), generator=g, dtype=torch.int32)
    left = torch.randint(0, room, (n,), generator=g, dtype=torch.int32)
    flip = torch.randint(0, 2, (n,), generator=g, dtype=torch.int32)
    shift = torch.randn(n, 3, generator=g) * 20
    return [t.to(device) for t in (images, mean, top, left, flip, shift)]


def _augment(module, images, mean, top, left, flip, shift, crop):
    """module.augment on the per-plane records of (top, left, flip, shift)."""
    return module.augment(images, mean, augment_kernels.pack_params(top, left, flip, shift), crop)


# -- kernel == reference -------------------------------------------------------------------

@pytest.mark.parametrize("n, size, crop", [(3, 13, 9), (2, 72, 63), (1, 5, 5), (4, 31, 1), (5, 17, 16)])
def test_kernel_matches_reference(poisoned, device, n, size, crop):
    inputs = _random_inputs(n, size, crop, device, seed=n * 100 + size)
    out = _augment(augment_kernels, *inputs, crop)
    assert poisoned.allocations > 0
    expected = _augment(augment_reference, *[t.cpu() for t in inputs], crop)
    assert out.shape == (n, 3, crop, crop) and out.dtype == torch.float32
    assert_close(out.cpu(), expected, tolerance(torch.float32), "augment")


def _kernel_against_reference(images, mean, top, left, flip, shift, crop):
    out = _augment(augment_kernels, images, mean, top, left, flip, shift, crop)
    expected = _augment(augment_reference, images.cpu(), mean.cpu(), top.cpu(), left.cpu(),
                        flip.cpu(), shift.cpu(), crop)
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert_close(out.cpu(), expected, tolerance(torch.float32), f"augment crop {crop}")


def test_kernel_at_every_column_offset_and_both_flips(poisoned, device):
    """Every left offset, across 16-column boundaries (the kernel's aligned window starts at
    the boundary at or before it), each flipped and not, with the top at both edges."""
    size, crop = 48, 29
    room = size - crop + 1  # 20 offsets: 0..15 in the first aligned word, 16..19 in the next
    images, mean, _, _, _, shift = _random_inputs(2 * room, size, crop, device, seed=21)
    left = torch.arange(room, dtype=torch.int32).repeat_interleave(2)
    flip = torch.tensor([0, 1], dtype=torch.int32).repeat(room)
    top = torch.where(torch.arange(2 * room) % 4 < 2, 0, room - 1).to(torch.int32)
    _kernel_against_reference(images, mean, top.to(device), left.to(device), flip.to(device),
                              shift, crop)
    assert poisoned.allocations > 0


@pytest.mark.parametrize("n, size, crop", [(2, 256, 224), (2, 208, 200)])
def test_kernel_at_alexnet_sizes(poisoned, device, n, size, crop):
    """The paper's 224 crops of 256 images (the window is whole aligned rows) and a crop
    whose rows span several programs, the last one partial; offsets at both edges."""
    images, mean, top, left, flip, shift = _random_inputs(n, size, crop, device, seed=size)
    far = size - crop
    top = torch.tensor([0, far], dtype=torch.int32, device=device)
    left = torch.tensor([far, 0], dtype=torch.int32, device=device)
    for flipped in (0, 1):
        _kernel_against_reference(images, mean, top, left, torch.full_like(flip, flipped),
                                  shift, crop)
    assert poisoned.allocations > 0


def test_alexnet_tile_is_eight_aligned_rows(monkeypatch):
    """On the GPU a 224 crop takes 16 rows of a 256-column window per program: 2 x 16 bytes
    of uint8 image and 8 x 16 bytes of float32 mean and output per thread of 4 warps."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert augment_kernels._tile(224) == (1, 16, 256)
    planes, rows, window = augment_kernels._tile(5)
    assert window == 32 and rows == 8 and planes * rows * window == 4096


def test_kernel_reads_strided_images(poisoned, device):
    images, mean, top, left, flip, shift = _random_inputs(3, 20, 11, device, seed=7)
    strided = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # NHWC memory
    out = _augment(augment_kernels, strided, mean, top, left, flip, shift, 11)
    expected = _augment(augment_reference, images.cpu(), mean.cpu(), top.cpu(), left.cpu(),
                        flip.cpu(), shift.cpu(), 11)
    assert_close(out.cpu(), expected, tolerance(torch.float32), "augment strided")


def test_reference_is_the_formula():
    """The oracle itself, element by element from the docstring's formula."""
    images, mean, top, left, flip, shift = _random_inputs(2, 9, 6, "cpu", seed=3)
    out = _augment(augment_reference, images, mean, top, left, flip, shift, 6)
    for n in range(2):
        for c in range(3):
            for i in range(6):
                for j in range(6):
                    r = int(top[n]) + i
                    q = int(left[n]) + (5 - j if flip[n] else j)
                    want = float(images[n, c, r, q]) - float(mean[c, r, q]) + float(shift[n, c])
                    assert math.isclose(float(out[n, c, i, j]), want, rel_tol=1e-6, abs_tol=1e-4)


@pytest.mark.parametrize("module", [augment_kernels, augment_reference], ids=["triton", "reference"])
def test_offsets_outside_the_image_are_refused(module):
    images, mean, top, left, flip, shift = _random_inputs(2, 8, 5, "cpu")
    with pytest.raises(ValueError, match="offsets"):
        _augment(module, images, mean, top + 4, left, flip, shift, 5)


def test_kernel_checks_its_arguments():
    images, mean, top, left, flip, shift = _random_inputs(2, 8, 5, "cpu")
    params = augment_kernels.pack_params(top, left, flip, shift)
    with pytest.raises(ValueError, match="uint8"):
        augment_kernels.augment(images.float(), mean, params, 5)
    with pytest.raises(ValueError, match="top must be int32"):
        augment_kernels.pack_params(top.long(), left, flip, shift)
    with pytest.raises(ValueError, match="shift must be float32"):
        augment_kernels.pack_params(top, left, flip, shift[:, :2])
    with pytest.raises(ValueError, match="params must be int32"):
        augment_kernels.augment(images, mean, params.float(), 5)
    with pytest.raises(ValueError, match="params must be int32"):
        augment_kernels.augment(images, mean, params[:1], 5)
    with pytest.raises(ValueError, match="does not fit"):
        augment_kernels.augment(images, mean, params, 9)


def test_params_are_one_16_byte_record_per_plane(device):
    """Plane (n, c) reads (top[n], left[n], flip[n], shift[n, c]'s float32 bits): 16 bytes,
    contiguous, so the kernel takes each in one aligned load; unpack_params inverts it."""
    _, _, top, left, flip, shift = _random_inputs(5, 9, 4, device, seed=12)
    params = augment_kernels.pack_params(top, left, flip, shift)
    assert params.shape == (5, 3, 4) and params.dtype == torch.int32 and params.is_contiguous()
    assert params.device == top.device and params.data_ptr() % 16 == 0
    for n in range(5):
        for c in range(3):
            assert params[n, c, :3].tolist() == [int(top[n]), int(left[n]), int(flip[n])]
            assert params[n, c, 3:].view(torch.float32).item() == shift[n, c].item()
    for got, want in zip(augment_kernels.unpack_params(params), (top, left, flip, shift)):
        assert got.dtype == want.dtype and torch.equal(got, want)


# -- the Augmenter: geometry ------------------------------------------------------------------

def _crop(image: torch.Tensor, top: int, left: int, crop: int, flip: bool) -> torch.Tensor:
    patch = image[:, top:top + crop, left:left + crop].float()
    return patch.flip(-1) if flip else patch


def test_train_crops_and_flips_where_the_generator_says():
    size, crop, n = 12, 7, 64
    images = _position_images(n, size)
    augmenter = Augmenter(_info(size), crop, pca_sigma=0.0)
    out = augmenter.train(images, torch.Generator().manual_seed(5))
    top, left, flip, shift = augmenter.draw(n, torch.Generator().manual_seed(5))
    assert out.shape == (n, 3, crop, crop) and out.dtype == torch.float32
    assert torch.equal(shift, torch.zeros(n, 3))
    for k in range(n):
        assert torch.equal(out[k], _crop(images[k], int(top[k]), int(left[k]), crop, bool(flip[k])))
    # Every offset and both flip states occur: the draws span the whole range.
    assert set(top.tolist()) == set(range(size - crop + 1)) == set(left.tolist())
    assert set(flip.tolist()) == {0, 1}


def test_train_replays_from_a_generator_state():
    size, crop = 16, 11
    images = _position_images(8, size)
    augmenter = Augmenter(_info(size, mean=torch.rand(3, size, size) * 255), crop)
    g = torch.Generator().manual_seed(1)
    augmenter.train(images, g)  # one batch in: the state a checkpoint would save
    state = g.get_state()
    second = augmenter.train(images, g)
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(augmenter.train(images, g2), second)
    assert not torch.equal(augmenter.train(images, g), second)


def test_mean_is_subtracted_at_the_source_pixel():
    size, crop = 14, 9
    mean = torch.rand(3, size, size) * 255
    images = _position_images(4, size)
    augmenter = Augmenter(_info(size, mean=mean), crop, pca_sigma=0.0)
    out = augmenter.train(images, torch.Generator().manual_seed(2))
    top, left, flip, _ = augmenter.draw(4, torch.Generator().manual_seed(2))
    for k in range(4):
        want = (_crop(images[k], int(top[k]), int(left[k]), crop, bool(flip[k]))
                - _crop(mean, int(top[k]), int(left[k]), crop, bool(flip[k])))
        assert_close(out[k], want, tolerance(torch.float32), f"image {k}")


@pytest.mark.parametrize("size, crop", [(12, 7), (13, 7), (9, 9)])
def test_center_crop(size, crop):
    mean = torch.rand(3, size, size) * 255
    images = _position_images(3, size)
    out = Augmenter(_info(size, mean=mean), crop).center(images)
    middle = (size - crop) // 2
    want = _crop(images[0], middle, middle, crop, False) - _crop(mean, middle, middle, crop, False)
    for k in range(3):
        assert_close(out[k], want, tolerance(torch.float32), "center")


@pytest.mark.parametrize("size, crop", [(12, 7), (11, 8)])
def test_ten_crop_geometry(size, crop):
    images = _position_images(2, size)
    out = Augmenter(_info(size), crop).ten_crop(images)
    assert out.shape == (10, 2, 3, crop, crop)
    far, middle = size - crop, (size - crop) // 2
    corners = [(0, 0), (0, far), (far, 0), (far, far), (middle, middle)]
    for flip in (False, True):
        for k, (top, left) in enumerate(corners):
            want = _crop(images[0], top, left, crop, flip)
            view = out[k + 5 * flip]
            assert torch.equal(view[0], want) and torch.equal(view[1], want), (k, flip)
    # Exact pixels: the top-right crop's first row ends at the image's last column, and
    # its flip starts there.
    assert out[1, 0, 0, 0, -1] == images[0, 0, 0, size - 1]
    assert out[6, 0, 0, 0, 0] == images[0, 0, 0, size - 1]
    assert out[3, 0, 0, -1, -1] == images[0, 0, size - 1, size - 1]


# -- the Augmenter: PCA colour noise ----------------------------------------------------------

def test_pca_shift_statistics():
    """shift = 255 * V diag(lambda) alpha with alpha ~ N(0, sigma^2 I): its covariance is
    sigma^2 * 255^2 * V diag(lambda^2) V^T. Whitening by that formula must give the identity."""
    n, size, sigma = 20000, 4, 0.1
    g = torch.Generator().manual_seed(11)
    eigvec, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    eigval = torch.tensor([0.25, 0.03, 0.004], dtype=torch.float64)
    info = _info(size, eigval=eigval, eigvec=eigvec)
    images = torch.full((n, 3, size, size), 100, dtype=torch.uint8)
    out = Augmenter(info, size, pca_sigma=sigma).train(images, g)
    shift = out[:, :, 0, 0].double() - 100  # [n, 3]
    # One shift per image: the same for every pixel (flips and crops move no colour).
    assert torch.allclose(out.double() - 100, shift[:, :, None, None].expand_as(out), atol=1e-3)
    expected = sigma ** 2 * 255 ** 2 * eigvec @ torch.diag(eigval ** 2) @ eigvec.T
    sample = torch.cov(shift.T)
    whiten = torch.diag(1 / (sigma * 255 * eigval)) @ eigvec.T  # alpha = whiten @ shift
    alpha = shift @ whiten.T
    bound = 5 / math.sqrt(n)  # five standard errors of a unit-variance sample moment
    assert (alpha.mean(0).abs() < bound).all(), alpha.mean(0)
    assert (torch.cov(alpha.T) - torch.eye(3, dtype=torch.float64)).abs().max() < 5 * math.sqrt(2 / n)
    assert torch.allclose(sample, expected, rtol=0.05, atol=0.05 * float(expected.abs().max()))


def test_pca_sigma_zero_adds_no_colour():
    size = 10
    images = torch.randint(0, 256, (6, 3, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    out = Augmenter(_info(size), size, pca_sigma=0.0).train(images, torch.Generator().manual_seed(0))
    top, left, flip, _ = Augmenter(_info(size), size).draw(6, torch.Generator().manual_seed(0))
    for k in range(6):
        assert torch.equal(out[k], _crop(images[k], 0, 0, size, bool(flip[k])))


def test_augmenter_refuses_bad_input():
    info = _info(12)
    with pytest.raises(ValueError, match="crop size"):
        Augmenter(info, 13)
    with pytest.raises(ValueError, match="pca_sigma"):
        Augmenter(info, 8, pca_sigma=-1)
    augmenter = Augmenter(info, 8)
    with pytest.raises(ValueError, match="uint8"):
        augmenter.center(torch.zeros(2, 3, 12, 12))
    with pytest.raises(ValueError, match="uint8"):
        augmenter.center(torch.zeros(2, 3, 10, 10, dtype=torch.uint8))
