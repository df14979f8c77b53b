"""Read a cubin with the CUDA binary tools that ship inside Triton's wheel (no CUDA install).

``cuobjdump -res-usage`` gives what ptxas allocated per thread and block (registers, local
memory, static shared memory); ``nvdisasm`` gives the SASS that bench/static/sass_parse.py reads.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess


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
    text = subprocess.run([tool("cuobjdump"), "-res-usage", cubin], check=True,
                          capture_output=True, text=True).stdout
    return parse_resource_usage(text)


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
    return subprocess.run([tool("nvdisasm"), "-c", cubin], check=True,
                          capture_output=True, text=True).stdout
