"""Benchmark setup: collect bench_*.py, pick the device, record what the numbers ran on.

Benchmarks time compiled Triton kernels on CUDA tensors, so the interpreter stays off here
(tests/conftest.py turns it on for the test suite; this directory is not under tests/).
With TRITON_INTERPRET=1 set by hand the Triton benchmarks skip: interpreted timings mean
nothing.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "0")

import platform  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from bench.gpu_check import autotune, bootstrap  # noqa: E402

# The GPU check runs these from a bare checkout (nothing installed), with its bounded
# autotuning and shared choice cache (ALEXNET_AUTOTUNE_CACHE; see bench/gpu_check).
bootstrap.ensure_importable()
autotune.install_from_environment()

INTERPRETED = os.environ["TRITON_INTERPRET"] == "1"


def pytest_collect_file(file_path, parent):
    # python_files (test_*.py) stays the test suite's; the benchmark files are bench_*.py
    # and only this directory's conftest collects them (pytest itself collects a file named
    # on the command line).
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def gpu_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device: the GPU benchmarks need one"
    if INTERPRETED:
        return "TRITON_INTERPRET=1: interpreted kernels are not benchmarked"
    return None


@pytest.fixture(scope="session")
def cuda() -> torch.device:
    """The GPU the benchmarks run on; skips the benchmark where there is none."""
    reason = gpu_skip_reason()
    if reason:
        pytest.skip(reason)
    # What a user who cares about conv speed sets; the triton kernels autotune too.
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", torch.cuda.current_device())


@pytest.fixture(autouse=True)
def _release_memory():
    """Each benchmark starts with the memory of the previous one returned."""
    yield
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def pytest_benchmark_update_machine_info(config, machine_info):
    import triton

    machine_info["torch"] = torch.__version__
    machine_info["triton"] = triton.__version__
    machine_info["python"] = platform.python_version()
    machine_info["cpu_threads"] = torch.get_num_threads()
    machine_info["triton_interpret"] = INTERPRETED
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(torch.cuda.current_device())
        machine_info["gpu"] = properties.name
        machine_info["gpu_memory_bytes"] = properties.total_memory
        machine_info["gpu_count"] = torch.cuda.device_count()
        machine_info["cuda"] = torch.version.cuda
        machine_info["cudnn"] = torch.backends.cudnn.version()
        # fp32 results depend on these: cuDNN's convs use TF32 by default, matmuls do not;
        # the Triton kernels follow the same two flags.
        machine_info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        machine_info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        machine_info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
