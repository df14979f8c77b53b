"""Which implementation an op runs on a tensor: the Triton kernel or its PyTorch reference.

One rule for the autograd ops (``functional``) and the augmentation alike: CUDA tensors run
the compiled Triton kernels; CPU tensors run them through Triton's interpreter when
``TRITON_INTERPRET=1``, else the plain PyTorch references (``kernels/reference/``).
"""
from __future__ import annotations

from types import ModuleType

from torch import Tensor
from torch._subclasses.fake_tensor import is_fake

from alexnet_triton import kernels


def uses_triton(x: Tensor) -> bool:
    """Whether an op on ``x`` runs the Triton kernels (compiled or interpreted)."""
    # Under torch.compile on CPU the op body also runs on fake tensors, which carry no
    # data for the interpreter; the reference computes the same shapes for tracing.
    return x.is_cuda or (x.device.type == "cpu" and kernels.interpreting() and not is_fake(x))


def on_triton_device(x: Tensor) -> bool:
    """Whether ops on ``x``'s device run the Triton kernels: uses_triton without the fake
    tensor test, for a caller deciding before it calls an op (torch.compile traces it)."""
    return x.is_cuda or (x.device.type == "cpu" and kernels.interpreting())


def pick(x: Tensor, triton_module: ModuleType, reference_module: ModuleType) -> ModuleType:
    """``triton_module`` or ``reference_module``, as ``uses_triton(x)`` says."""
    return triton_module if uses_triton(x) else reference_module
