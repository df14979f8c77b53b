"""The Triton kernels of alexnet_triton, one op per module.

Each module holds its ``@triton.jit`` kernels and then the launchers that check their
arguments and pick the grid. ``reference/`` holds a plain PyTorch version of every
launcher under the same name; ``alexnet_triton.functional`` dispatches between the two.
"""
import contextlib
import os

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def launchable(kernel):
    """``kernel`` ready for ``[grid](...)``, traceable by torch.compile (wrap_triton).

    Under the interpreter the kernel is launched as it is: torch.compile never traces it
    there (fake CPU tensors take the reference path), and torch 2.11's wrap_triton refuses
    the interpreter's InterpretedFunction (2.13 passes it through unwrapped).
    """
    return kernel if interpreting() else wrap_triton(kernel)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a kernel over `dtype` data accumulates in: float64 for float64, else float32.

    The one statement of the rule: the kernels take it as ``accumulator``'s Triton dtype, the
    references of ``reference/`` compute in it.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def accumulator(dtype: torch.dtype) -> tl.dtype:
    """``accumulation_dtype(dtype)`` as a Triton dtype: a kernel's ACC constexpr."""
    return tl.float64 if accumulation_dtype(dtype) == torch.float64 else tl.float32


@triton.jit
def through_registers(x, STAGE: tl.constexpr):
    """x itself (float32), made to pass through registers when STAGE: a tf32 GEMM operand
    that is contiguous along M or N, not K, on the GPU.

    tf32 wgmma reads its shared-memory operands only K-major. Loaded straight to shared
    memory, an M- or N-contiguous tile is transposed by 4-byte copies; an element-wise step
    sends it through registers instead, loaded 16 bytes at a time and stored transposed. The
    step is a PTX move, which ptxas propagates away: no instruction, and no load mask carried
    to the pipeline stage that uses it (a tl.where on the load's mask costs both). The
    interpreter cannot run PTX (STAGE False there).
    """
    if STAGE:
        x = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                      is_pure=True, pack=1)
    return x


def check_int32_offsets(op: str, **tensors: Tensor) -> None:
    """Refuse tensors the kernels cannot address: they compute offsets in int32 (cheaper
    address arithmetic), so every tensor they index must hold fewer than 2**31 elements."""
    for name, tensor in tensors.items():
        if tensor.numel() >= 2**31:
            raise ValueError(f"{op}: {name} {tuple(tensor.shape)} has {tensor.numel()} elements; "
                             f"the kernels' int32 offsets address fewer than 2**31")


def nvidia_capability() -> int | None:
    """The compute capability (major * 10 + minor: 80 for an A100, 90 for an H100) of the
    NVIDIA target Triton compiles for now: its active driver's target (the current CUDA
    device, or the GPU that bench/static/sm90_driver.py's compile-only driver plays). None
    under the interpreter and for other backends. The launchers choose every code path that
    needs an architecture's instructions (TMA, packed bf16 compares) from it, so that no
    kernel holds a PTX instruction its target lacks (tests/ops/test_gpu_compile.py compiles
    them for sm_80 to sm_120a)."""
    if interpreting():
        return None
    target = triton.runtime.driver.active.get_current_target()
    return int(target.arch) if target.backend == "cuda" else None


# Shared memory per block on Hopper (and B200): the kernels' tiles are chosen against it.
HOPPER_SHARED_MEMORY = 232448


def less_shared_memory_than_hopper() -> bool:
    """Whether the device Triton compiles for gives a block less shared memory than Hopper
    (an A100, L4, RTX 4090 or 5090), where the kernels' small tiles are candidates too."""
    shared = shared_memory_per_block()
    return shared is not None and shared < HOPPER_SHARED_MEMORY


def shared_memory_per_block() -> int | None:
    """The shared memory one block may use on the device Triton compiles for now (227 KiB on
    an H100 or B200, 163 KiB on an A100, 99 KiB on an L4, RTX 4090 or RTX 5090): its active
    driver's figure, which bench/static/sm90_driver.py's compile-only driver plays too. None
    under the interpreter."""
    if interpreting():
        return None
    driver = triton.runtime.driver.active
    return driver.utils.get_device_properties(driver.get_current_device())["max_shared_mem"]


def config_key(config) -> tuple:
    """An autotune config by its tile, warps and stages: torch's triton_kernel_wrap hands
    pruners copies, with the heuristics' values (EVEN_M, ...) among their kwargs."""
    return (*(config.kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")), config.num_warps,
            config.num_stages)


def _least_padding(configs: list, size: int, block: str, tail=None) -> list:
    """The configs whose ``block`` pads ``size`` (a GEMM dimension) the least, and of those
    the widest: fewer tiles read each operand fewer times, and the loop's fixed cost
    spreads over more MMA work (64 columns where 128 would pad as little: the loop issued
    1.0-1.01x its MMAs at conv3's input gradient, against 0.66). ``tail(size, blocks)``:
    the columns a kernel adds to each tile of a config's blocks (conv2d_relu's forward
    TAIL_N)."""
    def width(config):
        return config.kwargs[block] + (tail(size, config.kwargs) if tail else 0)

    def padded(config):
        return triton.cdiv(size, width(config)) * width(config)
    least = min(padded(c) for c in configs)
    widest = max(width(c) for c in configs if padded(c) == least)
    return [c for c in configs if padded(c) == least and width(c) == widest]


def autotune_pruner(op: str, lists: dict, operand: str, width: str | None = None,
                    flag: str | None = None, depth: str | None = None,
                    small: list | None = None, tail=None):
    """An autotuner's early_config_prune: of the configs that are still candidates (the GPU
    check restricts them), those of ``lists`` for ``operand``'s element size (and the
    constexpr ``flag``'s value, where the lists are keyed by both), of those the ones whose
    BLOCK_N pads the runtime argument ``width`` least, and of those the ones whose BLOCK_K
    pads ``depth`` (a reduction block's length) least; and on a GPU with less shared memory
    per block than Hopper's, the ``small`` configs of a 16- or 32-bit operand besides
    (``tail(arguments)``: _least_padding's ``tail`` at the launch's arguments, constexprs
    too, for ``width``). A GPU's autotuner times only these; ``op`` names the launcher in
    the error where none is left."""
    keys = {key: {config_key(c) for c in configs} for key, configs in lists.items()}
    small = small or []

    def prune(configs, named_args, **kwargs):
        size = named_args[operand].element_size()
        key = size if flag is None else (size, bool(kwargs[flag]))
        kept = [c for c in configs if config_key(c) in keys.get(key, ())]
        if not kept:
            raise ValueError(f"{op}: no autotune config for {size}-byte operands "
                             f"among {len(configs)} candidates")
        if width:
            kept = _least_padding(kept, named_args[width], "BLOCK_N",
                                  tail({**named_args, **kwargs}) if tail else None)
        if depth:
            kept = _least_padding(kept, named_args[depth], "BLOCK_K")
        if small and size < 8 and less_shared_memory_than_hopper():
            # in ``small``'s order, the smallest last (where a compile-only check takes the
            # first and the last)
            have = {config_key(c) for c in kept}
            for key in (config_key(c) for c in small):
                kept += [c for c in configs if config_key(c) == key and key not in have]
        return kept
    return prune


def tensor_descriptors_available() -> bool:
    """Whether this Triton and the target it compiles for read tiles through TMA tensor
    descriptors (``tl.make_tensor_descriptor``, built on the device: Triton 3.6 and 3.9
    both have it). True under the interpreter, which emulates them, and for an NVIDIA
    target of compute capability 9.0 (Hopper) or newer; otherwise the kernels take their
    plain-load path."""
    if not hasattr(tl, "make_tensor_descriptor"):
        return False
    if interpreting():
        return True
    return (nvidia_capability() or 0) >= 90


def tma_compatible(tensor: Tensor, shape: tuple, strides: tuple) -> bool:
    """Whether a descriptor over ``tensor``'s memory seen as ``shape`` with ``strides``
    (in elements, the last one 1) meets TMA's rules: a 16-byte aligned base and every
    other stride a multiple of 16 bytes (a descriptor that breaks them faults on the GPU,
    and the interpreter does not check)."""
    size = tensor.element_size()
    try:
        base = tensor.data_ptr()
    except RuntimeError:  # a FakeTensor while torch.compile traces: its allocation's base is
        base = tensor.storage_offset() * size  # aligned, so its offset decides
    return (len(shape) == len(strides) and strides[-1] == 1 and base % 16 == 0
            and all(stride * size % 16 == 0 for stride in strides[:-1]))


@contextlib.contextmanager
def descriptor_scratch(device: torch.device):
    """The global memory a kernel that builds tensor descriptors on the device needs
    (Triton asks its allocator for 128 bytes per program at launch): a torch allocation on
    ``device`` for the launches inside, and the caller's allocator back afterwards (Triton
    keeps it in a context variable; a Triton without one keeps ours). Under the
    interpreter nothing is allocated."""
    if interpreting():
        yield
        return

    def scratch(size: int, alignment: int, stream):
        return torch.empty(size, dtype=torch.int8, device=device)

    from triton.runtime import _allocation
    variable = getattr(_allocation, "_allocator", None)
    if variable is None:
        triton.set_allocator(scratch)
        yield
        return
    token = variable.set(scratch)
    try:
        yield
    finally:
        variable.reset(token)
