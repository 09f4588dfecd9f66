"""The public faces stay in sync with what they export."""

from __future__ import annotations

import mark.sim
import provisioner


def test_provisioner_all_resolves() -> None:
    assert len(set(provisioner.__all__)) == len(provisioner.__all__)
    for name in provisioner.__all__:
        assert getattr(provisioner, name) is not None, name


def test_sim_exports_simulate() -> None:
    assert callable(mark.sim.simulate)
    assert mark.sim.SimResult.__name__ == "SimResult"


def test_every_registered_policy_satisfies_the_protocol() -> None:
    import numpy as np

    from mark.core.catalogue import load_catalogue
    from mark.core.profiles import load_profile

    ctx = provisioner.PolicyContext(load_catalogue(), load_profile("minilm"),
                                    trace_counts=np.full(600, 100))
    for name in provisioner.POLICIES:
        pol = provisioner.make_policy(name, ctx)
        assert isinstance(pol, provisioner.ProvisioningPolicy), name
        assert pol.interval_s > 0
        snap = provisioner.Snapshot(0.0, np.full(600, 100), (), ctx.slo)
        dec, _ = pol.decide(snap, pol.initial_state())
        assert isinstance(dec, provisioner.Decision)
