"""JPEG batches decoded on the GPU (nvJPEG through torchvision.io.decode_jpeg): only the
compressed bytes cross PCIe (~15 KB an image at 256 px, q90 4:2:0, against 196 KB of pixels),
and the host does no IDCT.

The loader hands over each batch's records in one pinned buffer (``Batches._records``);
``GpuDecoder.decoded`` decodes batch t+1 on a side stream while the caller trains on batch t
(the side stream's event orders the two; the images are recorded on the consuming stream,
so the caching allocator never hands their memory out early), and yields uint8
[B, 3, S, S] device tensors that the Augmenter takes as they are.

nvJPEG's IDCT and upsampling are not libjpeg-turbo's: its pixels differ from Pillow's by a
few levels (the GPU check measures the PSNR against Pillow's pixels, and its decode rate).
The store's baseline JPEGs (prepare writes nothing else) are nvJPEG's fast path; on A100,
H100 and H200 torchvision may use the hardware JPEG decoder for them.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch

from alexnet_triton.data.decoders import cpu_decoder
from alexnet_triton.data.reading import DECODE_CHOICES, Reading
from alexnet_triton.errors import DataError, error_reason


def torchvision_decode(device: torch.device) -> Callable[[List[torch.Tensor]], List[torch.Tensor]]:
    """torchvision's batched decode on ``device``: [1-D uint8 CPU tensors] -> [[3, H, W]]."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(records: List[torch.Tensor]) -> List[torch.Tensor]:
        return decode_jpeg(records, mode=ImageReadMode.RGB, device=device)
    return decode


def gpu_decode_unavailable(device) -> Optional[str]:
    """Why JPEGs cannot be decoded on ``device`` (None when they can): a probe decode of a
    tiny JPEG, so that --decode auto never picks a decoder that fails later."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"{device} is not a CUDA device"
    try:
        import io

        import numpy as np
        from PIL import Image
        probe = io.BytesIO()
        Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(probe, format="JPEG")
        data = torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8)
        (image,) = torchvision_decode(device)([data])
        if tuple(image.shape) != (3, 16, 16):
            return f"torchvision decoded a 16x16 JPEG to {tuple(image.shape)}"
    except Exception as error:  # noqa: BLE001 - no torchvision, no nvJPEG, an old driver
        return error_reason(error)
    return None


def resolve_decode(choice: str, device, source_format: str) -> bool:
    """--decode auto|cpu|gpu -> whether batches are decoded on the GPU. "gpu" where it
    cannot work is an error that says why; "auto" takes the GPU where a probe decode works
    and the data is a JPEG store."""
    if choice not in DECODE_CHOICES:
        raise ValueError(f"unknown --decode {choice!r} (choose from {', '.join(DECODE_CHOICES)})")
    if choice == "cpu":
        return False
    if source_format != "jpeg":
        if choice == "gpu":
            raise DataError(f"--decode gpu needs a JPEG store (prepared by python -m "
                            f"alexnet_triton.prepare); this data is a {source_format} source")
        return False
    reason = gpu_decode_unavailable(device)
    if reason is not None and choice == "gpu":
        raise DataError(f"--decode gpu: JPEGs cannot be decoded on {device}: {reason}")
    return reason is None


class GpuDecoder:
    """Decodes the loader's record batches on ``device``, one batch ahead, on a side stream."""

    def __init__(self, size: int, device, decode: Optional[Callable] = None) -> None:
        self.size, self.device = size, torch.device(device)
        self.decode = decode or torchvision_decode(self.device)

    @classmethod
    def for_source(cls, source, device) -> "GpuDecoder":
        if getattr(source, "format", None) != "jpeg":
            raise DataError("GPU decoding needs a JPEG store")
        return cls(source.pixel_shape[0], device)

    def _check(self, image: torch.Tensor) -> None:
        if tuple(image.shape) != (3, self.size, self.size):
            raise DataError(f"a stored image decoded to {tuple(image.shape)}, not the "
                            f"store's [3, {self.size}, {self.size}]")

    def decode_batch(self, buffer: torch.Tensor, offsets, indices, skipped: list):
        """One pinned buffer of concatenated JPEGs -> (uint8 [B', 3, S, S] on the device,
        the rows kept). A batch nvJPEG refuses is decoded record by record, and the records
        that fail are left out and listed in ``skipped``."""
        records = [buffer[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
        try:
            images = self.decode(records)
            for image in images:
                self._check(image)
            return torch.stack(images), list(range(len(records)))
        except Exception:  # noqa: BLE001 - find the damaged records one by one
            pass
        images, kept = [], []
        for row, record in enumerate(records):
            try:
                (image,) = self.decode([record])
                self._check(image)
            except Exception as error:  # noqa: BLE001 - whatever the decoder says
                skipped.append((int(indices[row]), error_reason(error)))
                continue
            images.append(image)
            kept.append(row)
        if not images:
            raise DataError(f"none of the {len(records)} images of a batch could be decoded "
                            f"(image {int(indices[0])}: {skipped[-1][1]}): the data is "
                            f"damaged; prepare the store again")
        return torch.stack(images), kept

    def decoded(self, record_batches, skipped: list):
        """(records, offsets, labels, indices) batches -> (images on the device, labels);
        records nvJPEG cannot decode are left out and listed in ``skipped``."""
        cuda = self.device.type == "cuda"
        side = torch.cuda.Stream(self.device) if cuda else None
        ahead = None
        for buffer, offsets, labels, indices in record_batches:
            if cuda:
                with torch.cuda.stream(side):
                    images, kept = self.decode_batch(buffer, offsets, indices, skipped)
                    ready = torch.cuda.Event()
                    ready.record(side)
            else:
                (images, kept), ready = self.decode_batch(buffer, offsets, indices, skipped), None
            if len(kept) < len(labels):
                labels = labels[kept]
            if ahead is not None:
                yield self._hand_over(*ahead)
            # The records' buffer stays referenced until its images are handed over.
            ahead = (images, labels, ready, buffer)
        if ahead is not None:
            yield self._hand_over(*ahead)

    def _hand_over(self, images: torch.Tensor, labels: torch.Tensor, ready, buffer):
        if ready is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(ready)
            images.record_stream(consumer)
        return images, labels


def resolve_reading(loader: str, cpu_decoder_name: str, decode: str, device,
                    data_format: str) -> Reading:
    """The flags -> a Reading; raises DataError for a decoder that cannot work here (a
    missing library asked for by name, --decode gpu without a GPU decoder or a JPEG store)."""
    cpu_decoder(cpu_decoder_name)
    return Reading(loader=loader, cpu_decoder=cpu_decoder_name,
                   gpu_decode=resolve_decode(decode, device, data_format))
