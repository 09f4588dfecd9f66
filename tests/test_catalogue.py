"""The catalogue and profile loaders: shipped data complete and sane, bad files refused."""

from __future__ import annotations

import json

import pytest

from mark.core.catalogue import load_catalogue, parse_catalogue
from mark.core.errors import ConfigError
from mark.core.profiles import load_profile, parse_profile, shipped_profiles

REQUIRED = ["c5.large", "c5.xlarge", "c5.2xlarge", "c5.4xlarge", "m5.large", "t3.medium",
            "p2.xlarge", "p3.2xlarge", "g4dn.xlarge"]


def test_shipped_catalogue_has_the_types_and_sources() -> None:
    cat = load_catalogue()
    for t in REQUIRED:
        it = cat.instance(t)
        assert it.on_demand_usd_per_h > 0 and it.vcpu >= 2 and it.launch_delay_s > 0
        assert 0 < it.price_usd_per_h("spot") < it.price_usd_per_h("on_demand")
        assert it.spot.notice_s == 120.0
    assert cat.instance("c5.large").on_demand_usd_per_h == pytest.approx(0.085)
    assert cat.instance("p3.2xlarge").is_gpu and not cat.instance("c5.large").is_gpu
    assert cat.billing_minimum_s == 60 and cat.billing_granularity_s == 1
    lam = cat.lambda_
    assert lam.payload_limit_bytes == 6 * 1024 * 1024
    assert lam.vcpu(1769) == pytest.approx(1.0) and lam.vcpu(10240) == pytest.approx(6.0)
    assert lam.vcpu(3008) > lam.vcpu(1024)
    for key in ("on_demand", "billing", "spot", "lambda", "sagemaker"):
        assert key in cat.sources
    assert cat.sagemaker_premium == pytest.approx(0.269 / 0.192, rel=0.01)


def test_unknown_type_and_market_list_what_is_accepted() -> None:
    cat = load_catalogue()
    with pytest.raises(ConfigError, match=r"c5\.large"):
        cat.instance("c9.huge")
    with pytest.raises(ConfigError, match="on_demand"):
        cat.instance("c5.large").price_usd_per_h("reserved")


def test_bad_catalogue_is_refused(tmp_path) -> None:
    raw = json.loads(load_catalogue.__globals__["DEFAULT_CATALOGUE"].read_text())
    raw["instances"]["c5.large"]["on_demand_usd_per_h"] = -1
    with pytest.raises(ConfigError, match="on_demand_usd_per_h"):
        parse_catalogue(raw)
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_catalogue(p)
    with pytest.raises(ConfigError, match="not found"):
        load_catalogue(tmp_path / "missing.json")


def test_spot_interruption_rate_matches_monthly_probability() -> None:
    import math

    sp = load_catalogue().instance("c5.large").spot
    month_s = 730 * 3600
    assert 1 - math.exp(-sp.interruption_rate_per_s * month_s) == pytest.approx(
        sp.interruptions_per_month)


def test_shipped_profiles_cover_the_catalogue_and_interpolate() -> None:
    assert {"minilm", "inception-v3", "inception-resnet-v2", "opennmt-ende"} <= set(
        shipped_profiles())
    cat = load_catalogue()
    p = load_profile("minilm")
    for t in REQUIRED:
        assert t in p.instances and t in cat.instances
    assert p.service_s("c5.large", 1) == pytest.approx(0.015)
    assert p.service_s("c5.large", 8) == pytest.approx(0.042)
    assert p.service_s("c5.large", 32) == pytest.approx(0.120)
    assert 0.042 < p.service_s("c5.large", 16) < 0.120
    # bigger CPU boxes are faster per batch, slower per dollar (Amdahl)
    assert p.service_s("c5.xlarge", 8) < p.service_s("c5.large", 8)
    assert p.lambda_ is not None
    assert p.lambda_.service_s(10240, 1) < p.lambda_.service_s(1024, 1)
    inc = load_profile("inception-v3")
    assert inc.service_s("c5.large", 1) == pytest.approx(0.210)
    assert inc.lambda_ is not None and inc.lambda_.service_s(3008, 1) == pytest.approx(0.380)
    with pytest.raises(ConfigError, match="outside"):
        p.service_s("c5.large", 33)


def test_bad_profiles_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="shipped"):
        load_profile("no-such-model")
    with pytest.raises(ConfigError, match="batch size 1"):
        parse_profile({"model": "m", "instances": {"c5.large": {"batch_ms": {"2": 3}}}})
    with pytest.raises(ConfigError, match="must not fall"):
        parse_profile({"model": "m", "instances": {"c5.large": {"batch_ms": {"1": 5, "2": 3}}}})
    with pytest.raises(ConfigError, match="no entry"):
        load_profile("minilm").of("x1.32xlarge")
    p = load_profile("minilm")
    again = parse_profile(json.loads(json.dumps(p.to_json())))
    assert again.service_s("g4dn.xlarge", 16) == pytest.approx(p.service_s("g4dn.xlarge", 16))


def test_profile_from_measurements_round_trips() -> None:
    from mark.core.profiles import profile_from_measurements

    p = profile_from_measurements("minilm", "local", {1: 15.0, 8: 42.0, 32: 120.0})
    assert p.service_s("local", 4) == pytest.approx((15 + 27 * 3 / 7) / 1000)
    assert parse_profile(p.to_json()).of("local").max_batch == 32
