"""Test setup: Triton kernels run through the CPU interpreter unless told otherwise.

TRITON_INTERPRET must be set before anything imports triton (see ../shared/TRITON_ON_CPU.md);
`import torch` does not import it, so setting it here, first, is early enough. On a GPU
machine, run with TRITON_INTERPRET=0 to test the compiled kernels on CUDA tensors.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# The interpreter runs each tl.dot as a small numpy matmul; OpenBLAS syncing its threads
# costs more than the product itself (measured: a conv test file 86 s -> 36 s).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Under pytest-xdist every core runs a worker of its own: one torch thread each (and in
# the commands the tests start), or the workers' thread pools fight over the cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import Poison  # noqa: E402
from train_support import (make_quick_dataset, make_torchrun_run,  # noqa: E402
                           make_trained_run)


@pytest.fixture(autouse=True)
def ieee_float32():
    """float32 GEMMs in full float32 precision, whatever torch's defaults (cuDNN's are tf32).

    The launchers read torch's tf32 flags; with them on, a GPU computes float32 products
    from 10-bit mantissas, which the float32 tolerance does not allow. tf32 is tested as a
    precision of its own (helpers.use_precision turns the flags on; this restores them).
    The interpreter ignores the flags. (Not monkeypatch: pytest 9.2 deletes the attribute on
    undo, which torch's flag modules refuse.)
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def poisoned(monkeypatch):
    """Every torch.empty / torch.empty_like made during the test is filled with poison.

    Floating-point tensors get NaN and integer tensors -1, so an element a kernel fails to
    write shows up in the comparison. Tests check ``poisoned.allocations`` to prove that
    the kernel's outputs really went through here.
    """
    poison = Poison()
    monkeypatch.setattr(torch, "empty", poison.wrap(torch.empty))
    monkeypatch.setattr(torch, "empty_like", poison.wrap(torch.empty_like))
    return poison


@pytest.fixture
def device():
    """CUDA when the compiled kernels are under test, else the CPU (interpreter)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        pytest.skip("TRITON_INTERPRET=0 needs a CUDA device")
    return torch.device("cuda")


@pytest.fixture(scope="session")
def quick_dataset(tmp_path_factory):
    """The tiny prepared built-in dataset of train_support (30 train, 10 val images): made
    once per session, shared by the training and command-line tests (never written)."""
    return make_quick_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def quick_images(quick_dataset):
    """The image folder behind quick_dataset (val/<class>/00000.jpg, ...)."""
    return quick_dataset.parent / "images"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, quick_dataset):
    """One epoch of AlexNet on quick_dataset: a run directory, made once per session (tests
    that resume or damage it copy it first)."""
    return make_trained_run(tmp_path_factory.mktemp("trained") / "run", quick_dataset)


@pytest.fixture(scope="session")
def torchrun_run(tmp_path_factory, quick_dataset):
    """One epoch of 2 replicas under torchrun, each two columns (train_support.TORCHRUN_ARGS):
    (run directory, the finished torchrun process), made once per session (never written)."""
    run_dir = tmp_path_factory.mktemp("torchrun") / "run"
    return run_dir, make_torchrun_run(run_dir, quick_dataset)
