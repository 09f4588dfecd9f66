"""The ``aws`` backend against moto in server mode on loopback (EC2), with the real control
loop, the real instance agent (the very source the user data carries) against a scripted
metadata endpoint, and scripted Triton health endpoints on loopback."""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import numpy as np
import pytest
from aiohttp import web
from botocore.awsrequest import AWSResponse

from frontend.fleet import Fleet
from mark.backends import AwsBackend, Backend, CapacityError, LaunchSpec, make_backend
from mark.backends.aws_agent import configure
from mark.backends.aws_userdata import (
    LAUNCH_ENV,
    LaunchSettings,
    launch_user_data,
    parse_launch_env,
    user_data_script,
)
from mark.control import ControlLoop, CostLedger, ModelControl
from mark.control.planning import build_policy, initial_serving, types_by_cost
from mark.core.catalogue import load_catalogue
from mark.core.clock import WallClock
from mark.core.config import AwsConfig, MarkConfig, ModelConfig
from mark.core.errors import NotFound, ServiceUnavailable
from mark.core.instances import Instance, InstanceState, Market
from mark.core.profiles import load_profile
from mark.core.slo import Slo
from mark.models.repository import config_pbtxt
from provisioner import PolicyContext
from tests.servers import moto_server

MODEL = "incep"
TYPES = ("c5.large", "c5.xlarge", "m5.large")
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto in server mode on a free loopback port, with test credentials in the env."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": REGION}.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        with moto_server() as url:
            yield url


def ec2_client(moto_url: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)


@functools.cache
def some_ami(moto_url: str) -> str:
    return str(ec2_client(moto_url).describe_images()["Images"][0]["ImageId"])  # slow in moto


def make_templates(moto_url: str, deployment: str, types: tuple[str, ...] = TYPES) -> str:
    """The launch templates deploy would write (its user-data script included)."""
    ec2 = ec2_client(moto_url)
    ami = some_ami(moto_url)
    script = user_data_script(deployment, "models-bucket", region=REGION, triton_port=8000)
    have = {t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]}
    for t in types:
        if f"{deployment}-{t.replace('.', '-')}" in have:
            continue
        ec2.create_launch_template(
            LaunchTemplateName=f"{deployment}-{t.replace('.', '-')}",
            LaunchTemplateData={"ImageId": ami, "InstanceType": t,
                                "UserData": base64.b64encode(script.encode()).decode()})
    return str(ami)


def describe(moto_url: str, iid: str) -> dict[str, Any]:
    res = ec2_client(moto_url).describe_instances(InstanceIds=[iid])["Reservations"]
    return dict(res[0]["Instances"][0])


def tags_of(desc: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in desc.get("Tags", [])}


def user_data_of(moto_url: str, iid: str) -> str:
    attr = ec2_client(moto_url).describe_instance_attribute(InstanceId=iid,
                                                            Attribute="userData")
    return base64.b64decode(attr["UserData"]["Value"]).decode()


class Health:
    """Scripted Triton health endpoints on loopback: ``/<instance id>/v2/health/ready``
    answers ``status[id]`` (default 200)."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> Health:
        async def ready(request: web.Request) -> web.Response:
            return web.Response(status=self.status.get(request.match_info["iid"], 200))

        app = web.Application()
        app.router.add_get("/{iid}/v2/health/ready", ready)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    def url_of(self, iid: str, _ip: str | None) -> str:
        return f"{self.base}/{iid}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def backend(moto_url: str, deployment: str, health: Health | None = None, **kw: Any
            ) -> AwsBackend:
    aws = AwsConfig(deployment=deployment, region=REGION, endpoint_url=moto_url)
    return AwsBackend(aws, [ModelConfig(name=MODEL, kind="profiled", profile="inception-v3")],
                      notice_host="127.0.0.1", notice_port=0, poll_s=0.05, monitor_s=0,
                      url_of=health.url_of if health else None, **kw)


# ---- launches, tags, markets -------------------------------------------------------------

def test_on_demand_and_spot_launches_carry_the_tag_and_their_market(moto_url: str) -> None:
    make_templates(moto_url, "tags")

    async def run() -> tuple[list[Instance], list[dict[str, Any]]]:
        be = backend(moto_url, "tags")
        sent: list[dict[str, Any]] = []
        be.ec2.meta.events.register("provide-client-params.ec2.RunInstances",
                                    lambda params, **_: sent.append(dict(params)))
        try:
            od = await be.launch(LaunchSpec("c5.large", Market.ON_DEMAND, (MODEL,), 8, 500))
            sp = await be.launch(LaunchSpec("m5.large", Market.SPOT, (MODEL,)))
            assert od.state == sp.state == InstanceState.PENDING
            return [od, sp], sent
        finally:
            await be.close()

    (od, sp), sent = asyncio.run(run())
    d_od, d_sp = describe(moto_url, od.id), describe(moto_url, sp.id)
    assert (d_od["InstanceType"], d_sp["InstanceType"]) == ("c5.large", "m5.large")
    for d, market in ((d_od, "on_demand"), (d_sp, "spot")):
        tags = tags_of(d)
        assert tags["mark:deployment"] == "tags" and tags["mark:market"] == market
        assert tags["mark:models"] == MODEL
    assert "InstanceLifecycle" not in d_od and d_sp["InstanceLifecycle"] == "spot"
    assert "InstanceMarketOptions" not in sent[0]
    assert sent[1]["InstanceMarketOptions"] == {
        "MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time",
                                              "InstanceInterruptionBehavior": "terminate"}}
    assert sent[0]["LaunchTemplate"]["LaunchTemplateName"] == "tags-c5-large"
    assert od.url == f"http://{d_od['PrivateIpAddress']}:8000" and od.market == Market.ON_DEMAND
    assert sp.market == Market.SPOT
    # the user data: this launch's settings, then the template's script that reads them
    ud = user_data_of(moto_url, od.id)
    assert ud.startswith("#!/bin/bash\n# mark: this launch's settings")
    env = parse_launch_env(ud.split("<<'MARK_LAUNCH_EOF'\n")[1].split("MARK_LAUNCH_EOF")[0])
    assert env["MARK_MODELS"] == MODEL and env["MARK_MAX_BATCH_SIZE"] == "8"
    assert env["MARK_MAX_QUEUE_DELAY_US"] == "500" and env["MARK_MARKET"] == "on_demand"
    assert env["MARK_NOTICE_URL"].endswith("/notice") and len(env["MARK_NOTICE_TOKEN"]) > 20
    assert ud.index(LAUNCH_ENV + " <<") < ud.index(f". {LAUNCH_ENV}")
    assert "s3://$MARK_BUCKET/$MARK_DEPLOYMENT/models" in ud
    assert env["MARK_NOTICE_TOKEN"] != parse_launch_env(
        user_data_of(moto_url, sp.id).split("<<'MARK_LAUNCH_EOF'\n")[1])["MARK_NOTICE_TOKEN"]
    # close ended what it launched
    assert describe(moto_url, od.id)["State"]["Name"] in ("shutting-down", "terminated")


def test_terminate_and_close_touch_only_tagged_instances(moto_url: str) -> None:
    ami = make_templates(moto_url, "fence")
    ec2 = ec2_client(moto_url)

    def run_raw(tags: dict[str, str] | None) -> str:
        kw: dict[str, Any] = {}
        if tags:
            kw["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [
                {"Key": k, "Value": v} for k, v in tags.items()]}]
        return str(ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                                     InstanceType="t3.micro", **kw)["Instances"][0]["InstanceId"])

    untagged = run_raw(None)
    other = run_raw({"mark:deployment": "someone-else"})
    adopted = run_raw({"mark:deployment": "fence"})  # ours by tag, from an earlier run

    async def run() -> tuple[str, str]:
        be = backend(moto_url, "fence")
        try:
            a = await be.launch(LaunchSpec("c5.large", Market.ON_DEMAND, (MODEL,)))
            b = await be.launch(LaunchSpec("c5.large", Market.SPOT, (MODEL,)))
            for iid in (untagged, other, "i-0123456789abcdef0"):
                with pytest.raises(NotFound, match=iid):
                    await be.terminate(iid)
            await be.terminate(adopted)
            await be.terminate(a.id)
            await be.terminate(a.id)  # already ended: a no-op
            assert a.state == InstanceState.TERMINATED
            return a.id, b.id
        finally:
            await be.close()

    a, b = asyncio.run(run())
    state = {i: describe(moto_url, i)["State"]["Name"] for i in (untagged, other, adopted, a, b)}
    assert state[untagged] == "running" and state[other] == "running"
    assert all(state[i] in ("shutting-down", "terminated") for i in (adopted, a, b))


def test_the_registry_builds_it_from_the_configuration(moto_url: str) -> None:
    cfg = MarkConfig(aws=AwsConfig(deployment="reg", endpoint_url=moto_url, region=REGION))
    be = make_backend("aws", cfg)
    assert isinstance(be, AwsBackend) and isinstance(be, Backend) and be.name == "aws"
    assert be.ec2.meta.endpoint_url == moto_url and be.ec2.meta.region_name == REGION
    assert be.ec2.meta.config.retries["mode"] == "standard"


# ---- capacity errors ----------------------------------------------------------------------

def refuse_launches_of(be: AwsBackend, instance_type: str, code: str) -> list[str]:
    """Make EC2 answer ``code`` to RunInstances of ``instance_type`` (a botocore event handler
    on the backend's client, before the request is sent); returns the refused types."""
    refused: list[str] = []

    def handler(params: dict[str, Any], **_: Any) -> Any:
        if params["body"].get("InstanceType") != instance_type:
            return None
        refused.append(instance_type)
        err = {"Error": {"Code": code, "Message": f"We currently do not have sufficient "
                         f"{instance_type} capacity in the Availability Zone you requested."},
               "ResponseMetadata": {"HTTPStatusCode": 500}}
        return AWSResponse("https://ec2.amazonaws.com/", 500, {}, None), err

    be.ec2.meta.events.register("before-call.ec2.RunInstances", handler)
    return refused


@pytest.mark.parametrize("code", ["InsufficientInstanceCapacity", "MaxSpotInstanceCountExceeded",
                                  "SpotMaxPriceTooLow"])
def test_a_capacity_refusal_is_a_capacity_error_naming_the_type(moto_url: str, code: str
                                                                ) -> None:
    make_templates(moto_url, "capx")

    async def run() -> None:
        be = backend(moto_url, "capx")
        refuse_launches_of(be, "c5.xlarge", code)
        try:
            with pytest.raises(CapacityError, match=r"c5\.xlarge") as err:
                await be.launch(LaunchSpec("c5.xlarge", Market.SPOT, (MODEL,)))
            assert err.value.code == code and err.value.instance_type == "c5.xlarge"
            assert not be.instances
        finally:
            await be.close()

    asyncio.run(run())


def catalogue_ctx(spot: bool) -> PolicyContext:
    cat = load_catalogue()
    cat = replace(cat, instances={n: replace(t, launch_delay_s=30.0)
                                  for n, t in cat.instances.items()})
    return PolicyContext(cat, load_profile("inception-v3"), Slo(500, 98), spot, TYPES)


class SteadyCounts:
    """``rate`` requests in every second, whenever the loop looks (it runs on the wall clock)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate

    async def refresh(self) -> None:
        return None

    def complete_until(self) -> float | None:
        return None

    def take(self, model: str, start: int, end: int) -> np.ndarray:
        return np.full(max(end - start, 0), self.rate, dtype=np.int64)


def make_loop(be: AwsBackend, ctx: PolicyContext, rate: int = 40) -> ControlLoop:
    pol = build_policy("mark", ctx, 10.0, {})
    mc = ModelControl(MODEL, pol, ctx, initial_serving(pol, ctx))
    loop = ControlLoop({MODEL: mc}, be, Fleet([MODEL]), CostLedger(ctx.catalogue), WallClock(),
                       SteadyCounts(rate), warm_start={MODEL: np.full(600, rate, dtype=np.int64)},
                       ready_timeout_s=10.0, drain_timeout_s=1.0)
    be.on_notice = loop.on_notice
    be.on_exit = loop.on_exit
    return loop


def test_a_capacity_error_falls_back_to_the_next_type_through_the_control_loop(
        moto_url: str) -> None:
    make_templates(moto_url, "cap")
    ctx = catalogue_ctx(spot=False)

    async def run() -> tuple[ControlLoop, list[str], str, str]:
        health = await Health().start()
        be = backend(moto_url, "cap", health)
        loop = make_loop(be, ctx)
        first, second = types_by_cost(ctx, loop.models[MODEL].plan, Market.ON_DEMAND)[:2]
        refused = refuse_launches_of(be, first, "InsufficientInstanceCapacity")
        try:
            await loop.start(run=False)  # the warm-start step launches the starting fleet
            await asyncio.wait_for(loop.settle(), 30)
            return loop, refused, first, second
        finally:
            await loop.stop()
            await be.close()
            await health.stop()

    loop, refused, first, second = asyncio.run(run())
    assert refused, f"the plan launched no {first}"
    events = [e for d in loop.decisions for e in d["events"]] + loop.models[MODEL].events
    kinds = [e["event"] for e in events]
    failed = [e for e in events if e["event"] == "launch_failed"]
    retried = [e for e in events if e["event"] == "launch_retry"]
    assert failed and all(e["instance_type"] == first for e in failed)
    assert "CapacityError" in failed[0]["reason"] and "InsufficientInstanceCapacity" in \
        failed[0]["reason"]
    assert retried and all(e["replaces"] == first and e["instance_type"] == second
                           for e in retried)
    assert kinds.index("launch_failed") < kinds.index("launch_retry")
    ready = [e for e in events if e["event"] == "ready"]
    assert ready and all(e["instance_type"] == second for e in ready)
    # EC2 has only instances of the next type (tagged), none of the refused one
    tagged = ec2_client(moto_url).describe_instances(
        Filters=[{"Name": "tag:mark:deployment", "Values": ["cap"]}])["Reservations"]
    types = {i["InstanceType"] for r in tagged for i in r["Instances"]}
    assert types == {second}


# ---- readiness ----------------------------------------------------------------------------

def test_an_instance_that_never_passes_the_health_check_fails_within_its_timeout(
        moto_url: str) -> None:
    make_templates(moto_url, "ready")

    async def run() -> tuple[Instance, Instance, float]:
        health = await Health().start()
        be = backend(moto_url, "ready", health)
        try:
            good = await be.launch(LaunchSpec("c5.large", Market.ON_DEMAND, (MODEL,)))
            bad = await be.launch(LaunchSpec("c5.large", Market.ON_DEMAND, (MODEL,)))
            health.status[bad.id] = 503
            assert (await be.wait_ready(good.id, 5.0)).state == InstanceState.READY
            t0 = time.monotonic()
            with pytest.raises(ServiceUnavailable, match=f"{bad.id}.*not ready within 1 s"):
                await be.wait_ready(bad.id, 1.0)
            return good, bad, time.monotonic() - t0
        finally:
            await be.close()
            await health.stop()

    good, bad, took = asyncio.run(run())
    assert 1.0 <= took < 2.0
    assert bad.state == InstanceState.TERMINATED
    assert describe(moto_url, bad.id)["State"]["Name"] in ("shutting-down", "terminated")
    assert good.ready_at_s is not None


# ---- spot notices -------------------------------------------------------------------------

class Metadata:
    """A scripted instance metadata service (IMDSv2): ``spot/instance-action`` answers 404
    ``quiet`` times, then the notice."""

    def __init__(self, instance_id: str, quiet: int = 3, in_s: float = 120.0) -> None:
        self.instance_id = instance_id
        self.quiet = quiet
        self.in_s = in_s
        self.polls = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Metadata:
        token = "imds-token-1"

        async def put_token(request: web.Request) -> web.Response:
            assert request.headers["X-aws-ec2-metadata-token-ttl-seconds"]
            return web.Response(text=token)

        def authorised(request: web.Request) -> bool:
            return request.headers.get("X-aws-ec2-metadata-token") == token

        async def instance_id(request: web.Request) -> web.Response:
            if not authorised(request):
                return web.Response(status=401)
            return web.Response(text=self.instance_id)

        async def action(request: web.Request) -> web.Response:
            if not authorised(request):
                return web.Response(status=401)
            self.polls += 1
            if self.polls <= self.quiet:
                return web.Response(status=404)
            at = datetime.now(UTC) + timedelta(seconds=self.in_s)
            return web.json_response({"action": "terminate",
                                      "time": at.strftime("%Y-%m-%dT%H:%M:%SZ")})

        app = web.Application()
        app.router.add_put("/latest/api/token", put_token)
        app.router.add_get("/latest/meta-data/instance-id", instance_id)
        app.router.add_get("/latest/meta-data/spot/instance-action", action)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def agent_from_user_data(user_data: str, into: Path) -> tuple[Path, dict[str, str]]:
    """The agent's source the user data carries, written to a file; and the launch's env."""
    src = re.search(r"<<'MARK_AGENT_EOF'\n(.*?)\nMARK_AGENT_EOF\n", user_data, re.DOTALL)
    assert src is not None
    path = into / "agent.py"
    path.write_text(src.group(1) + "\n")
    env = parse_launch_env(user_data.split("<<'MARK_LAUNCH_EOF'\n")[1].split("MARK_LAUNCH_EOF")[0])
    return path, env


async def run_agent(agent: Path, metadata: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", str(agent), "watch", "--metadata-url", metadata,
        "--notice-url", env["MARK_NOTICE_URL"], "--token", env["MARK_NOTICE_TOKEN"],
        "--poll-s", "0.05", "--max-polls", "200",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return int(proc.returncode or 0), out.decode()


def test_a_spot_notice_from_the_metadata_service_drains_and_replaces(moto_url: str,
                                                                     tmp_path: Path) -> None:
    make_templates(moto_url, "spot")
    ctx = catalogue_ctx(spot=True)

    async def run() -> dict[str, Any]:
        health = await Health().start()
        be = backend(moto_url, "spot", health)
        loop = make_loop(be, ctx)
        md: Metadata | None = None
        try:
            await loop.start(run=False)
            await asyncio.wait_for(loop.settle(), 30)
            spot = [i for i in loop.fleet.instances.values() if i.market == Market.SPOT]
            assert spot, "the plan used spot"
            victim = spot[0]
            assert victim.state == InstanceState.READY
            md = await Metadata(victim.id).start()
            agent, env = agent_from_user_data(user_data_of(moto_url, victim.id), tmp_path)
            before = set(be.instances)
            t_notice = be.clock.now()
            rc, out = await run_agent(agent, md.url, env)
            assert rc == 0, out
            assert md.polls == 4  # three quiet polls, then the notice, reported once
            assert victim.state == InstanceState.NOTICE
            # the step the notice wakes, once the policy has seen whole seconds of counts
            await asyncio.sleep(max(0.0, 2.0 - loop.now_s()))
            await loop.step()
            await asyncio.wait_for(loop.settle(), 30)
            return {"victim": victim, "new": [be.instances[i] for i in set(be.instances) - before],
                    "t_notice": t_notice, "reclaim": victim.extra["reclaim_at_s"],
                    "fleet": dict(loop.fleet.instances), "loop": loop}
        finally:
            if md is not None:
                await md.stop()
            await loop.stop()
            await be.close()
            await health.stop()

    r = asyncio.run(run())
    victim, loop = r["victim"], r["loop"]
    assert 115 < r["reclaim"] - r["t_notice"] < 122  # the notice's time, on the backend clock
    assert r["new"] and not any(i.instance_type == victim.instance_type and i.market == Market.SPOT
                                for i in r["new"])
    assert any(i.ready_at_s is not None for i in r["new"])  # the replacement became ready ...
    assert victim.id not in r["fleet"]  # ... and then the noticed one was drained
    events = [e for d in loop.decisions for e in d["events"]] + loop.models[MODEL].events
    kinds = [(e["event"], e.get("instance")) for e in events]
    assert ("notice", victim.id) in kinds and ("terminated", victim.id) in kinds
    assert describe(moto_url, victim.id)["State"]["Name"] in ("shutting-down", "terminated")


def test_the_notice_receiver_refuses_what_is_not_a_notice_of_its_spot_instances(
        moto_url: str) -> None:
    make_templates(moto_url, "recv")

    async def run() -> None:
        seen: list[tuple[str, float]] = []
        be = backend(moto_url, "recv", on_notice=lambda i, at: seen.append((i.id, at)))
        try:
            sp = await be.launch(LaunchSpec("c5.large", Market.SPOT, (MODEL,)))
            od = await be.launch(LaunchSpec("c5.large", Market.ON_DEMAND, (MODEL,)))
            url = be.notice_url
            assert url is not None
            when = (datetime.now(UTC) + timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%SZ")

            def body(inst: Instance, token: str | None = None) -> dict[str, str]:
                return {"instance_id": inst.id, "time": when, "action": "terminate",
                        "token": inst.extra["notice_token"] if token is None else token}

            async with aiohttp.ClientSession() as http:
                async def post(payload: Any) -> int:
                    async with http.post(url, json=payload) as resp:
                        return resp.status

                assert await post({"instance_id": sp.id}) == 400
                assert await post(body(sp, "guessed")) == 403
                assert await post({**body(sp), "instance_id": "i-0000000000000000"}) == 404
                assert await post(body(od)) == 409
                assert not seen and sp.state == InstanceState.PENDING
                assert await post(body(sp)) == 202
                assert await post(body(sp)) == 202  # a repeat is not a second notice
            assert [i for i, _ in seen] == [sp.id] and sp.state == InstanceState.NOTICE
            assert 85 < seen[0][1] - be.clock.now() < 91
            # by hand (the admin API): on-demand refused, spot answered with its reclaim
            with pytest.raises(NotFound):
                await be.notice("i-0000000000000000")
            assert await be.notice(sp.id) == seen[0][1]
        finally:
            await be.close()

    asyncio.run(run())


def test_a_notice_given_by_hand_reclaims_the_instance_at_its_time(moto_url: str) -> None:
    make_templates(moto_url, "hand")

    async def run() -> tuple[Instance, list[int]]:
        exits: list[int] = []
        be = backend(moto_url, "hand", notice_s=0.3, on_exit=lambda i, c: exits.append(c))
        try:
            sp = await be.launch(LaunchSpec("c5.large", Market.SPOT, (MODEL,)))
            await be.notice(sp.id)
            assert sp.state == InstanceState.NOTICE
            await asyncio.sleep(0.6)
            return sp, exits
        finally:
            await be.close()

    sp, exits = asyncio.run(run())
    assert exits == [-9] and sp.state == InstanceState.TERMINATED
    assert describe(moto_url, sp.id)["State"]["Name"] in ("shutting-down", "terminated")


def test_a_death_ec2_reports_is_told_through_on_exit(moto_url: str) -> None:
    make_templates(moto_url, "death")

    async def run() -> tuple[list[str], Instance]:
        exits: list[str] = []
        be = backend(moto_url, "death", on_exit=lambda i, c: exits.append(i.id))
        be.monitor_s = 0.1
        try:
            inst = await be.launch(LaunchSpec("c5.large", Market.SPOT, (MODEL,)))
            await asyncio.to_thread(ec2_client(moto_url).terminate_instances,
                                    InstanceIds=[inst.id])  # EC2 ends it, not us
            for _ in range(50):
                if exits:
                    break
                await asyncio.sleep(0.1)
            return exits, inst
        finally:
            await be.close()

    exits, inst = asyncio.run(run())
    assert exits == [inst.id] and inst.state == InstanceState.TERMINATED


# ---- user data and the agent's configure --------------------------------------------------

def test_the_user_data_scripts_are_valid_shell_and_carry_the_launch(tmp_path: Path) -> None:
    script = user_data_script("demo", "bucket-1", region="eu-west-1", triton_port=8123)
    settings = LaunchSettings(("a", "b"), "g5.xlarge", "spot", 16, 250,
                              "http://10.0.0.5:9100/notice", "tok'en")
    merged = launch_user_data(script, settings)
    for name, text in (("template.sh", script), ("launch.sh", merged)):
        path = tmp_path / name
        path.write_text(text)
        subprocess.run(["bash", "-n", str(path)], check=True)
    assert "--http-port=\"$MARK_TRITON_PORT\"" in script and "MARK_TRITON_PORT=8123" in script
    assert "MARK_BUCKET=bucket-1" in script and "python3 /opt/mark/agent.py watch" in script
    env = parse_launch_env(merged.split("<<'MARK_LAUNCH_EOF'\n")[1].split("MARK_LAUNCH_EOF")[0])
    assert env["MARK_MODELS"] == "a,b" and env["MARK_NOTICE_TOKEN"] == "tok'en"
    # the settings block runs as shell: its heredoc writes exactly the assignments
    block = merged.split("# mark instance bootstrap")[0].replace(LAUNCH_ENV, str(tmp_path / "e"))
    block = block.replace("install -d -m 0755 /etc/mark", "true")
    subprocess.run(["bash", "-c", block], check=True)
    sourced = subprocess.run(["bash", "-c", f". {tmp_path / 'e'}; echo \"$MARK_NOTICE_TOKEN "
                              "$MARK_MAX_BATCH_SIZE\""], check=True, capture_output=True,
                             text=True).stdout
    assert sourced.strip() == "tok'en 16"
    assert launch_user_data(None, settings).startswith("#!/bin/bash\n")


def test_the_agent_writes_the_launch_batching_into_the_models(tmp_path: Path) -> None:
    model = ModelConfig(name="m", kind="identity", max_batch_size=32, max_queue_delay_us=0)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text(config_pbtxt(model))
    assert configure(tmp_path, [], 4, 700) == ["m"]
    text = (tmp_path / "m" / "config.pbtxt").read_text()
    assert "max_batch_size: 4\n" in text and "max_batch_size: 32" not in text
    assert text.count("dynamic_batching") == 1
    assert "dynamic_batching { max_queue_delay_microseconds: 700 }" in text
    assert 'name: "m"' in text and "instance_group" in text

