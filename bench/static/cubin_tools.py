"""Read a cubin with the CUDA binary tools that ship inside Triton's wheel (no CUDA install).

``cuobjdump -res-usage`` gives what ptxas allocated per thread and block (registers, local
memory, static shared memory); ``nvdisasm`` gives the SASS that bench/static/sass_parse.py reads.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path


def tool(name: str) -> str:
    """The path of cuobjdump or nvdisasm: Triton's knob (TRITON_CUOBJDUMP_PATH, ...) if it
    has one, else the copy in triton/backends/nvidia/bin, else one on PATH."""
    try:
        from triton import knobs
        return getattr(knobs.nvidia, name).path
    except Exception:  # noqa: BLE001 - older Triton, or no knob for it: look ourselves
        pass
    import triton
    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if os.path.exists(bundled):
        return bundled
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"no {name}: neither in Triton's wheel nor on PATH")
    return found


def resource_usage(cubin: str) -> dict:
    """{"registers", "spill_bytes", "stack_bytes", "local_bytes", "static_shared_bytes"}
    of the cubin's kernel, from ``cuobjdump -res-usage``:
    ``REG:255 STACK:488 SHARED:1024 LOCAL:0 CONSTANT[0]:624 ...``.

    ptxas puts register spills in the thread's stack frame (STACK; checked: "488 bytes
    stack frame, 492 bytes spill stores" from ptxas -v for the same kernel); LOCAL is other
    local memory. A Triton kernel has no local arrays and no calls that need a frame, so
    spill_bytes = STACK + LOCAL, per thread.
    """
    return parse_resource_usage(_cached_output("cuobjdump", ["-res-usage"], cubin))


def parse_resource_usage(text: str) -> dict:
    found = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", text)
    if not found:
        raise ValueError(f"no resource usage in cuobjdump's output:\n{text}")
    registers, stack, shared, local = map(int, found.groups())
    return {"registers": registers, "spill_bytes": stack + local, "stack_bytes": stack,
            "local_bytes": local, "static_shared_bytes": shared}


def disassemble(cubin: str) -> str:
    """The cubin's SASS as nvdisasm prints it, with labels for every branch target (-c:
    code only)."""
    return _cached_output("nvdisasm", ["-c"], cubin)


def cache_dir() -> Path:
    """Where the tools' outputs are kept: $ALEXNET_SASS_CACHE, else
    $XDG_CACHE_HOME/alexnet_triton/cubin-tools (~/.cache by default)."""
    if os.environ.get("ALEXNET_SASS_CACHE"):
        return Path(os.environ["ALEXNET_SASS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alexnet_triton" / "cubin-tools"


def _cached_output(name: str, flags: list[str], cubin: str) -> str:
    """The tool's stdout for the cubin, kept on disk under the hash of the cubin's bytes, the
    tool's file and the flags: a tool's output is a function of those, and running nvdisasm
    (about 0.6 s a cubin) was most of a warm `python -m bench.static`: 81 s -> 26 s."""
    path = tool(name)
    stat = os.stat(path)
    key = hashlib.sha256()
    key.update(Path(cubin).read_bytes())
    key.update(f"\0{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0"
               f"{' '.join(flags)}".encode())
    entry = cache_dir() / f"{name}-{key.hexdigest()}.txt.gz"
    try:
        return gzip.decompress(entry.read_bytes()).decode()
    except (OSError, EOFError):  # absent, or cut short by a full disk: run the tool again
        pass
    text = subprocess.run([path, *flags, cubin], check=True, capture_output=True,
                          text=True).stdout
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        partial = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        partial.write_bytes(gzip.compress(text.encode(), 6))  # SASS text shrinks ~7x
        os.replace(partial, entry)  # whole or absent for a concurrent reader
    except OSError:  # a read-only or full cache: the output is still right, only not kept
        pass
    return text
