"""Weighted round robin whose weights count requests, not dispatches.

Stride scheduling: each target has a *pass* value; a pick takes the target with the
smallest pass and advances it by ``n_requests / weight``. Over any window the share of
requests a target receives converges to ``weight / sum(weights)``, also when a dispatch
carries a batch of several requests (MArk's pitfall: counting a batched dispatch as one).
A target added later starts at the current minimum pass, so it is not flooded.

Pure code: no I/O, no clock; the front end and the simulator use the same object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class WeightedRoundRobin:
    """Smooth, deterministic WRR over string ids with float weights (> 0)."""

    __slots__ = ("_order", "_pass", "_stride")

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self._pass: dict[str, float] = {}
        self._stride: dict[str, float] = {}
        self._order: list[str] = []
        if weights:
            self.set_weights(weights)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Replace the target set; targets kept keep their position."""
        for tid, w in weights.items():
            if not w > 0:
                raise ValueError(f"weight of {tid!r} must be > 0, got {w}")
        base = min((self._pass[t] for t in weights if t in self._pass), default=0.0)
        self._pass = {t: self._pass.get(t, base) for t in weights}
        self._stride = {t: 1.0 / float(w) for t, w in weights.items()}
        self._order = sorted(weights)

    @property
    def targets(self) -> list[str]:
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def pick(self, n_requests: int = 1, exclude: Iterable[str] = ()) -> str | None:
        """The next target for a dispatch of ``n_requests``; ``None`` if none is eligible."""
        excluded = set(exclude) if exclude else ()
        best: str | None = None
        best_pass = 0.0
        for tid in self._order:
            if tid in excluded:
                continue
            p = self._pass[tid]
            if best is None or p < best_pass:
                best, best_pass = tid, p
        if best is not None:
            self._pass[best] = best_pass + n_requests * self._stride[best]
        return best

    def schedule(self, n: int) -> list[str]:
        """The next ``n`` single-request picks (the simulator tiles one period of these)."""
        out = []
        for _ in range(n):
            t = self.pick()
            if t is None:
                break
            out.append(t)
        return out
