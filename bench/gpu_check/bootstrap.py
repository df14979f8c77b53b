"""Import alexnet_triton from this source checkout without installing it.

The GPU machine runs the check from a bare copy of the repository with the image's python3:
nothing is installed there, and ``kernels/`` (at the repository's top) only becomes
``alexnet_triton.kernels`` through the package's install mapping (pyproject.toml). This
module adds that one mapping to the import system when no install provides it, or when an
install maps it to another checkout: the code that runs is always this checkout's. Where the
package is installed from this checkout (CI's editable install) it does nothing.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "kernels"


class _KernelsFinder(importlib.abc.MetaPathFinder):
    """Finds ``alexnet_triton.kernels`` in ROOT/kernels (its submodules follow __path__)."""

    def find_spec(self, name, path, target=None):
        if name != "alexnet_triton.kernels":
            return None
        return importlib.util.spec_from_file_location(
            name, KERNELS / "__init__.py", submodule_search_locations=[str(KERNELS)])


def _inside(path: str | None, folder: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(folder)


def ensure_importable() -> None:
    """Make ``import alexnet_triton.kernels`` load this checkout's kernels/, or raise."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import alexnet_triton

    if not _inside(alexnet_triton.__file__, ROOT / "alexnet_triton"):
        raise ImportError(f"alexnet_triton is imported from {alexnet_triton.__file__}, not "
                          f"from this checkout ({ROOT}): run from the repository's root")
    if "alexnet_triton.kernels" in sys.modules:
        loaded = sys.modules["alexnet_triton.kernels"].__file__
        if not _inside(loaded, KERNELS):
            raise ImportError(f"alexnet_triton.kernels was already imported from {loaded}")
        return
    spec = importlib.util.find_spec("alexnet_triton.kernels")
    if spec is None or not _inside(spec.origin, KERNELS):
        sys.meta_path.insert(0, _KernelsFinder())
