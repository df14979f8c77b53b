"""What the command lines show while they work: progress bars, counted words, clean numbers.

A progress bar is drawn on stderr only when both stdout and stderr are terminals: output
sent to a log file (``> log``, ``2>&1 | tee``, a batch system) gets the summary lines and
never a bar's hundreds of carriage-return updates. A leaf module: it imports only tqdm,
and only when a bar is drawn.
"""
from __future__ import annotations

import sys
from typing import Optional


def interactive() -> bool:
    """Whether a person is watching: stdout and stderr are both terminals."""
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def progress_bar(total: int, description: str, unit: str, initial: int = 0,
                 enabled: bool = True, leave: bool = False):
    """A tqdm bar on stderr, or None (not wanted, not a terminal, or tqdm missing)."""
    if not enabled or not interactive():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # a missing bar must not stop the work
        return None
    return tqdm(total=total, initial=initial, desc=description, unit=unit, leave=leave,
                dynamic_ncols=True, file=sys.stderr)


def plural(count: int, word: str, words: Optional[str] = None) -> str:
    """'1 epoch', '2 epochs', '1 thread'."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def rounded(value, digits: int = 6):
    """Floats (in dicts and lists too) at ``digits`` significant digits, as metrics.csv
    writes them: 0.054 rather than 0.05400000000000005 in summary.json."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(rounded(item, digits) for item in value)
    return value
