"""Spill with two front-end processes: they share each instance's queue model, so the
instance is admitted what it can finish in time, not twice that (the soak's burst-onset 504s)."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import pytest

from frontend.queue_cells import INFLIGHT, QueueCells, cell_name
from frontend.spill import InstanceQueue, SpillParams
from mark.cluster import ClusterThread
from mark.core.config import FrontendConfig
from tests.test_spill_frontend import MODEL, SLO_S, attainment, cluster_of, config, step_load

PARAMS = SpillParams.of([0.0, 0.2, 0.3], 2, 0.0, 0.5)


def test_two_processes_predict_from_each_others_requests(tmp_path: Path) -> None:
    owner = QueueCells(tmp_path / "q", slot=0, processes=2, owner=True)
    worker = QueueCells(tmp_path / "q", slot=1, processes=2)  # its own mapping of the files
    a = InstanceQueue(PARAMS, cell=owner.cell("i-1"), slot=0)
    b = InstanceQueue(PARAMS, cell=worker.cell("i-1"), slot=1)
    assert b.predict_s(0.0)[0] == pytest.approx(0.2)
    assert a.admit(0.0) and a.admit(0.01)  # a batch of 2 leaves at once, seen by the other
    assert b.predict_s(0.02)[0] == pytest.approx(0.3 - 0.02 + 0.2)
    a.sent(0.0)
    b.sent(0.01)
    b.sent(0.02)
    assert a.in_flight() == b.in_flight() == 3
    a.answered(0.3)
    assert b.in_flight() == 2
    assert not b.stalled(1.29) and b.stalled(1.31)  # the other's answer counts: heard at 0.3
    # a restarted worker maps the cell afresh: its slot (what the dead one had out) is zeroed
    again = QueueCells(tmp_path / "q", slot=1, processes=2)
    assert InstanceQueue(PARAMS, cell=again.cell("i-1"), slot=1).in_flight() == 0
    assert a.in_flight() == 0
    # another instance's cell is its own
    assert InstanceQueue(PARAMS, cell=worker.cell("i-2"), slot=1).predict_s(0.02)[0] == \
        pytest.approx(0.2)


def test_cells_are_removed_with_their_instance_and_the_front_end(tmp_path: Path) -> None:
    d = tmp_path / "q"
    d.mkdir()
    (d / "stale").write_bytes(b"x" * 64)  # an earlier run's
    owner = QueueCells(d, slot=0, processes=3, owner=True)
    assert not (d / "stale").exists()
    owner.cell("i-1")
    weird = "arn:aws:ec2/../i-2"
    QueueCells(d, slot=2, processes=3).cell(weird)
    assert sorted(p.name for p in d.iterdir()) == sorted(["i-1", cell_name(weird)])
    assert cell_name(weird).startswith("h-") and "/" not in cell_name(weird)
    assert len(owner.cell(weird)) == INFLIGHT + 3
    owner.drop("i-1")
    assert not (d / "i-1").exists()
    owner.close()
    assert not d.exists()


def test_an_unusable_directory_falls_back_to_this_process(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "q"
    blocker.write_text("a file where the directory should be")
    cells = QueueCells(blocker, slot=1, processes=2)
    with caplog.at_level(logging.ERROR):
        cell = cells.cell("i-1")
    assert isinstance(cell, ctypes.Array) and len(cell) == INFLIGHT + 2
    assert "cannot share the spill state of instance i-1" in caplog.text


def test_with_two_front_end_processes_the_excess_spills_and_the_slo_holds(
        tmp_path: Path) -> None:
    """3x the instance's capacity through two processes, each getting about half: alone,
    each would admit up to the instance's capacity (2x in all) and the SLO would break."""
    cfg = config(tmp_path).model_copy(update={"frontend": FrontendConfig(port=0, workers=2)})
    with cluster_of(cfg) as c:
        assert isinstance(c, ClusterThread) and c.cluster.workers == 2
        before = sum(c.cluster.front.arrivals.seconds(MODEL).values())
        on = step_load(c, 3.0, 25.0)
        here = sum(c.cluster.front.arrivals.seconds(MODEL).values()) - before
        # both served (the kernel spreads connections by hash: 34 of 251 went to one once)
        assert 0.05 * on.sent < here < 0.95 * on.sent, (here, on.sent)
        assert on.lost == 0 and sum(on.errors.values()) == 0, on.to_json()
        assert on.spilled > 0.15 * on.sent, on.to_json()
        # two front-end processes, Triton, the function runtime and the load on two cores:
        # on a loaded CI host 10 of 251 missed (0.96); with the cells unshared 170 missed
        assert attainment(on) >= 0.93, (on.to_json(), on.missed(SLO_S))
        assert [p.name for p in c.cluster.queues_dir.iterdir()] == [
            cell_name(i) for i in c.cluster.fleet.instances]
    assert not c.cluster.queues_dir.exists()
