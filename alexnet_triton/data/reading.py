"""How the loaders read batches: the choices of the trainer's, evaluate's and neighbours'
--loader, --decode and --cpu-decoder (resolved against the device and the data by
``gpu_decode.resolve_reading``).

Imports no torch, so that the command lines' --help answers at once.
"""
from __future__ import annotations

from dataclasses import dataclass

from alexnet_triton.data.decoders import CPU_DECODERS, cpu_decoder

LOADERS = ("threads", "processes")
DECODE_CHOICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Reading:
    """How a loader reads its batches (alexnet_triton/data/loaders.py)."""
    loader: str = "threads"      # "threads" | "processes"
    cpu_decoder: str = "auto"    # "auto" | "simplejpeg" | "pillow" (decoders.cpu_decoder)
    gpu_decode: bool = False     # JPEG bytes to the device, decoded there (gpu_decode.py)
    prefetch: int = 2            # batches read ahead of the one in use

    def __post_init__(self) -> None:
        if self.loader not in LOADERS:
            raise ValueError(f"unknown loader {self.loader!r} (choose from {', '.join(LOADERS)})")
        if self.cpu_decoder not in CPU_DECODERS:
            raise ValueError(f"unknown CPU JPEG decoder {self.cpu_decoder!r} (choose from "
                             f"{', '.join(CPU_DECODERS)})")
        if self.prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {self.prefetch}")

    def describe(self, workers: int, data_format: str) -> str:
        """The run header's words for it: what decodes, where, with how many workers."""
        if data_format == "raw":
            how = "raw store (no decoding)"
        elif self.gpu_decode:  # the host only gathers each batch's bytes
            return "JPEG decoded on the GPU (nvJPEG, a batch ahead on a side stream)"
        elif data_format == "jpeg":
            how = f"JPEG decoded on the CPU by {cpu_decoder(self.cpu_decoder).name}"
        else:  # a raw folder's files, any size and format: Pillow decodes and rescales
            how = "image files decoded and rescaled on the CPU by Pillow"
        if not workers:
            return f"{how} in the training thread (--workers 0)"
        kind = self.loader if workers > 1 else {"threads": "thread", "processes": "process"}[self.loader]
        return f"{how}, {workers} loader {kind}"
