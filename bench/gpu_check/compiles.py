"""Counts Triton's compilations in this process: cache hits against fresh compiles.

On the GPU the precompile phase fills Triton's cache first; a later phase that still
compiles much shows that its kernels were not the ones precompiled (another shape, dtype
or specialization) and where its time went.
"""
from __future__ import annotations

from collections import Counter


class CompileCounter:
    def __init__(self) -> None:
        self.hits = 0
        self.fresh: Counter = Counter()
        self._previous = None

    def __call__(self, *, src, metadata, metadata_group, times=None, cache_hit=False, **_):
        if self._previous is not None:
            self._previous(src=src, metadata=metadata, metadata_group=metadata_group,
                           times=times, cache_hit=cache_hit)
        if cache_hit:
            self.hits += 1
            return
        name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
        self.fresh[name] += 1

    def install(self) -> "CompileCounter":
        from triton import knobs

        self._previous = knobs.compilation.listener
        knobs.compilation.listener = self
        return self

    def summary(self) -> dict:
        return {"cache_hits": self.hits, "fresh_compiles": sum(self.fresh.values()),
                "fresh_by_kernel": dict(self.fresh.most_common())}
