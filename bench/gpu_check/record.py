"""A phase's results: named checks with a status, written to JSON after every change.

Each phase runs in its own process under a time box; rewriting the file after each check
means a phase stopped by its box still leaves what it had finished.
"""
from __future__ import annotations

import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable

PASS, FAIL, SKIP, ERROR, TIMEOUT = "pass", "fail", "skip", "error", "timeout"


def _plain(value: Any) -> Any:
    """JSON without NaN or Infinity tokens (strict readers reject them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Atomically: a reader (or a kill) never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(_plain(data), indent=1))
    os.replace(temporary, path)


class PhaseRecord:
    """The checks of one phase, saved to ``path`` as they are added."""

    def __init__(self, phase: str, path: Path) -> None:
        self.path = Path(path)
        self.data: dict = {"phase": phase, "started": time.time(), "checks": [], "info": {}}
        self.save()

    def save(self) -> None:
        self.data["seconds"] = round(time.time() - self.data["started"], 2)
        write_json(self.path, self.data)

    def info(self, **fields: Any) -> None:
        """Facts that are not checks (versions, compile counts)."""
        self.data["info"].update(fields)
        self.save()

    def check(self, name: str, status: str, **fields: Any) -> dict:
        entry = {"name": name, "status": status, **fields}
        self.data["checks"].append(entry)
        self.save()
        return entry

    def measure(self, name: str, value: float, limit: float, **fields: Any) -> dict:
        """A number against its limit: pass when value <= limit (NaN and inf fail)."""
        ok = math.isfinite(value) and value <= limit
        return self.check(name, PASS if ok else FAIL, value=value, limit=limit, **fields)

    def guarded(self, name: str, run: Callable[[], Any]) -> Any:
        """Run one check's work; an exception becomes an error entry, not a dead phase."""
        start = time.perf_counter()
        try:
            return run()
        except Exception as error:  # noqa: BLE001 - each check reports its own failure
            self.check(name, ERROR, error=f"{type(error).__name__}: {error}",
                       traceback=traceback.format_exc()[-3000:],
                       seconds=round(time.perf_counter() - start, 2))
            return None


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
