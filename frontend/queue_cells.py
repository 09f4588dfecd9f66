"""Where each instance's spill-model state lives, so that a host's front-end processes share it.

With ``frontend.workers`` > 1 the kernel spreads connections over several processes. Each
one alone sees only its share of an instance's requests: it would predict that instance's
queue short by the others' and admit requests the instance cannot finish in time (the soak
saw this at a 4.5x burst onset as 504s). So the state the spill model keeps per instance
lives in a *cell* that every front-end process of the host maps:

====  ===========================================================================
slot  what it holds (8-byte floats)
====  ===========================================================================
0     ``busy_s``: the dispatched batches finish then (``time.perf_counter``)
1     ``first_s``: arrival of the open batch's first request
2     ``count``: requests in the open batch
3     ``heard_s``: when the instance last answered, or went from idle to busy
4+k   requests process ``k`` has out at the instance (each process writes only its own)
====  ===========================================================================

``time.perf_counter`` is the system-wide monotonic clock on Linux, so the times mean the same
in every process. A cell is a small file in ``directory`` (one per instance, named for it)
mapped into memory; the control-plane process (``owner``) clears the directory when it starts,
and removes an instance's file when the instance leaves the fleet and the directory when it
stops. A process that maps a cell for the first time zeroes its own in-flight slot: a
restarted worker starts with nothing out, whatever the one before it left.

Updates are not locked: two processes admitting a request to the same instance within the same
microsecond may each miss the other's (one request's worth of prediction, corrected by the
in-flight counts, which are never lost because each process writes only its own slot). A lock
would put a blocking call on every request's path for a race this rare.

Without a directory (one front-end process, or a front end built in a test) the cells are
plain memory of this process.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import mmap
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger("mark.frontend")

BUSY, FIRST, COUNT, HEARD, INFLIGHT = 0, 1, 2, 3, 4  # in-flight slots start at INFLIGHT
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,100}")

Cell = ctypes.Array[ctypes.c_double]  # an instance's state (floats; see the module docstring)


def new_cell(processes: int = 1) -> Cell:
    """A cell in this process's memory."""
    return (ctypes.c_double * (INFLIGHT + max(1, processes)))()


def cell_name(instance_id: str) -> str:
    """The file name of ``instance_id``'s cell: the id itself where it is a safe file name,
    else a digest of it."""
    if _SAFE.fullmatch(instance_id) and not instance_id.startswith("."):
        return instance_id
    return "h-" + hashlib.sha256(instance_id.encode()).hexdigest()[:32]


class QueueCells:
    """The cells of this process: ``slot`` is its in-flight slot (0 for the control plane,
    1.. for worker processes), ``processes`` how many slots a cell has."""

    def __init__(self, directory: Path | None = None, slot: int = 0, processes: int = 1,
                 owner: bool = False) -> None:
        if not 0 <= slot < max(1, processes):
            raise ValueError(f"slot {slot} is outside 0..{processes - 1}")
        self.directory = directory
        self.slot = slot
        self.size = INFLIGHT + max(1, processes)
        self.owner = owner
        self._cells: dict[str, Cell] = {}
        if directory is not None and owner:
            self.clear()

    @property
    def shared(self) -> bool:
        return self.directory is not None

    def clear(self) -> None:
        """Remove every cell of an earlier run (the owner, before any worker starts)."""
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for p in self.directory.iterdir():
            p.unlink(missing_ok=True)

    def cell(self, instance_id: str) -> Cell:
        """``instance_id``'s cell (floats; see the module docstring), mapped on first use."""
        cell = self._cells.get(instance_id)
        if cell is None:
            cell = self._cells[instance_id] = self._map(instance_id)
        return cell

    def _map(self, instance_id: str) -> Cell:
        if self.directory is None:
            return new_cell(self.size - INFLIGHT)
        nbytes = 8 * self.size
        path = self.directory / cell_name(instance_id)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < nbytes:  # new: zeros (growing never clears data)
                    os.ftruncate(fd, nbytes)
                mem = mmap.mmap(fd, nbytes)
            finally:
                os.close(fd)
        except OSError as exc:  # serve on, predicting from this process's requests alone
            log.error("cannot share the spill state of instance %s (%s): %s; this process "
                      "predicts its queue from its own requests only", instance_id, path, exc)
            return new_cell(self.size - INFLIGHT)
        cell = (ctypes.c_double * self.size).from_buffer(mem)
        cell[INFLIGHT + self.slot] = 0.0  # this process has nothing out there yet
        return cell

    def drop(self, instance_id: str) -> None:
        """``instance_id`` left the fleet: forget its cell (the owner removes the file).
        Requests still out there keep their reference until they finish."""
        self._cells.pop(instance_id, None)
        if self.owner and self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / cell_name(instance_id)).unlink()

    def close(self) -> None:
        """Forget every cell; the owner removes the directory."""
        self._cells.clear()
        if self.owner and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
