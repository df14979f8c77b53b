"""The command lines' tests (evaluate, predict) read the session's trained run."""
import pytest

from train_support import use_reference_kernels


@pytest.fixture
def run_dir(trained_run, monkeypatch):
    """conftest.trained_run's run directory, read through the reference kernels."""
    use_reference_kernels(monkeypatch)
    return trained_run
