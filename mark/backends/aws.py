"""The ``aws`` backend: each instance is an EC2 instance running Triton.

boto3 with the standard credential chain; region and ``endpoint_url`` from ``cfg.aws`` (so
moto or LocalStack can stand in); botocore's ``standard`` retry mode with short timeouts.
Every call runs in a worker thread, so none blocks the event loop.

- **Launch**: ``RunInstances`` from the launch template of the type
  (``aws.launch_templates[type]``, default ``<deployment>-<type with '.' as '-'>``), the
  template's default version, one instance of exactly the asked type, on demand or spot
  (``InstanceMarketOptions``: one-time, terminate on interruption), tagged
  ``mark:deployment``, ``mark:models``, ``mark:market`` (instance and volumes, in the same
  call, so an instance never exists untagged), a ``ClientToken`` (a retried call launches
  once), and user data = the template's script plus this launch's settings (models,
  batching, where and with which token to report a spot notice; see
  :mod:`mark.backends.aws_userdata`). The instance's URL is
  ``http://<PrivateIpAddress>:<aws.triton_port>``.
- **Capacity**: a launch refused for capacity (:data:`CAPACITY_CODES`) raises
  :class:`CapacityError` naming the type and market; the control loop then retries the next
  cheapest type (``launch_failed`` then ``launch_retry``).
- **Ready**: ``wait_ready`` polls ``DescribeInstances`` until the instance runs, then
  Triton's ``GET /v2/health/ready`` until 200; past the timeout the instance is terminated
  and ``ServiceUnavailable`` raised (the loop replaces it). ``spec.ready_after_s`` is not
  emulated: EC2 boots as long as it boots.
- **Tags fence everything**: every describe filters on ``tag:mark:deployment``; ``terminate``
  of an id this backend did not launch (and so did not tag) ends it only when it carries the
  tag, else ``NotFound``; ``close`` terminates only what this backend launched.
- **Spot notices**: each instance's agent (:mod:`mark.backends.aws_agent`) polls the
  metadata service and POSTs a notice to the receiver here (aiohttp,
  ``POST /notice`` on ``aws.notice_port``); with the launch's token it is accepted: the
  instance goes to NOTICE and ``on_notice(instance, reclaim_at)`` is told (the reclaim time
  on this backend's clock). ``notice(id)`` gives one by hand (the admin API): reclaimed, i.e.
  terminated, after ``notice_s`` unless the loop drained it first.
- **Deaths**: a monitor describes the live instances every ``monitor_s``; one that EC2 ended
  without being asked (reclaimed, crashed, stopped) is reported through ``on_exit``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import aiohttp
import boto3
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mark.backends.aws_userdata import LaunchSettings, launch_user_data
from mark.backends.base import ExitCallback, LaunchSpec, NoticeCallback, register_backend, spot_to_notice
from mark.core.clock import Clock, WallClock
from mark.core.config import AwsConfig, MarkConfig, ModelConfig
from mark.core.errors import ConfigError, NotFound, ServiceUnavailable
from mark.core.instances import Instance, InstanceState, Market

log = logging.getLogger(__name__)

TAG = "mark:deployment"
#: RunInstances error codes that mean "not this type now": try another type.
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
    "InsufficientReservedInstanceCapacity", "UnfulfillableCapacity",
    "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow", "InstanceLimitExceeded",
    "VcpuLimitExceeded", "Unsupported",
})
_ENDED = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
_NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")
_TEMPLATE_MISSING = ("InvalidLaunchTemplateName.NotFoundException",
                     "InvalidLaunchTemplateId.NotFound", "InvalidLaunchTemplateName.NotFound")
_TAG_VALUE_MAX = 256
_DESCRIBE_BATCH = 200  # instance ids per DescribeInstances call

#: ``url_of(instance_id, private_ip)``: the base URL of an instance's Triton.
UrlOf = Callable[[str, str | None], str]


class CapacityError(ServiceUnavailable):
    """EC2 has no capacity (or quota) for ``instance_type`` in ``market`` now (``code``)."""

    def __init__(self, instance_type: str, market: Market, code: str, message: str) -> None:
        super().__init__(f"no {market.value} capacity for {instance_type}: {code}: {message}")
        self.instance_type = instance_type
        self.market = market
        self.code = code


def template_name(aws: AwsConfig, instance_type: str) -> str:
    """The launch template of ``instance_type`` (configured, or the default name)."""
    return aws.launch_templates.get(
        instance_type, f"{aws.deployment}-{instance_type.replace('.', '-')}")


def _local_ip() -> str:
    """This host's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reclaim_epoch(when: str) -> float:
    """Epoch seconds of a notice's ISO 8601 ``time`` (``2015-01-05T18:02:00Z``)."""
    return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()


class AwsBackend:
    """EC2 instances of deployment ``aws.deployment`` (see the module docstring).

    ``models``: what launches may ask for (``serve_models`` updates it). ``notice_port``
    (None: ``aws.notice_port``; 0: any free port) and ``notice_host`` are where the receiver
    listens; ``notice_url`` is what instances are told to call (None: this host's address on
    its default route and the bound port). ``url_of`` overrides an instance's Triton URL
    (tests point it at loopback). ``poll_s``: readiness polling; ``monitor_s``: how often live
    instances are described (0: never); ``notice_s``: reclaim delay of a hand-given notice.
    """

    name = "aws"

    def __init__(
        self,
        aws: AwsConfig,
        models: Sequence[ModelConfig] = (),
        *,
        clock: Clock | None = None,
        on_exit: ExitCallback | None = None,
        on_notice: NoticeCallback | None = None,
        notice_host: str = "0.0.0.0",
        notice_port: int | None = None,
        notice_url: str | None = None,
        url_of: UrlOf | None = None,
        poll_s: float = 5.0,
        monitor_s: float = 15.0,
        notice_s: float = 120.0,
        session: boto3.session.Session | None = None,
    ) -> None:
        self.aws = aws
        self.models = [m.name for m in models]
        self.clock = clock or WallClock()
        self.on_exit = on_exit
        self.on_notice = on_notice
        self.notice_host = notice_host
        self.notice_port = aws.notice_port if notice_port is None else notice_port
        self.notice_url = notice_url
        self.url_of: UrlOf = url_of or (lambda _id, ip: f"http://{ip}:{aws.triton_port}")
        self.poll_s = poll_s
        self.monitor_s = monitor_s
        self.notice_s = notice_s
        self.ready_timeout_s = aws.ready_timeout_s
        session = session or boto3.session.Session(region_name=aws.region)
        self.ec2 = session.client(
            "ec2", region_name=aws.region, endpoint_url=aws.endpoint_url,
            config=Config(connect_timeout=5, read_timeout=30,
                          retries={"mode": "standard", "max_attempts": 3}))
        self.instances: dict[str, Instance] = {}
        self._ending: set[str] = set()  # terminations we asked for (not deaths)
        self._reclaims: dict[str, asyncio.Task[None]] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._receiver_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    # ---- plumbing -------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        return self._session

    def _filters(self) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{TAG}", "Values": [self.aws.deployment]}]

    def _describe_sync(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The tagged instances among ``ids``, by id (an unknown id is simply absent)."""
        ids = list(ids)
        if not ids:
            return {}
        if len(ids) > _DESCRIBE_BATCH:
            return {k: v for n in range(0, len(ids), _DESCRIBE_BATCH)
                    for k, v in self._describe_sync(ids[n:n + _DESCRIBE_BATCH]).items()}
        try:
            pages = self.ec2.get_paginator("describe_instances").paginate(
                InstanceIds=ids, Filters=self._filters())
            return {i["InstanceId"]: i for page in pages
                    for r in page["Reservations"] for i in r["Instances"]}
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                raise
            if len(ids) == 1:
                return {}
        # one id of several is unknown: EC2 refuses the whole call; ask one by one
        out: dict[str, dict[str, Any]] = {}
        for iid in ids:
            out.update(self._describe_sync([iid]))
        return out

    async def _describe(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(self._describe_sync, ids)

    def _get(self, instance_id: str) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise NotFound(f"unknown instance {instance_id!r}; known: {sorted(self.instances)}")
        return inst

    def serve_models(self, models: Sequence[ModelConfig]) -> None:
        self.models = [m.name for m in models]

    # ---- the notice receiver ----------------------------------------------------------------
    async def start(self) -> str:
        """Start the notice receiver (launches start it too); returns the notice URL."""
        async with self._receiver_lock:
            if self._runner is None:
                app = web.Application()
                app.router.add_post("/notice", self._handle_notice)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                site = web.TCPSite(runner, self.notice_host, self.notice_port)
                try:
                    await site.start()
                except OSError as exc:
                    await runner.cleanup()
                    raise ServiceUnavailable(
                        f"cannot listen for spot notices on {self.notice_host}:"
                        f"{self.notice_port}: {exc}") from exc
                self._runner = runner
                port = int(runner.addresses[0][1])
                self.notice_port = port
                if self.notice_url is None:
                    host = self.notice_host if self.notice_host not in ("0.0.0.0", "::", "") \
                        else _local_ip()
                    self.notice_url = f"http://{host}:{port}/notice"
                log.info("aws backend: spot notices at %s", self.notice_url)
            if self._monitor is None and self.monitor_s > 0:
                self._monitor = asyncio.create_task(self._watch_deaths())
        assert self.notice_url is not None
        return self.notice_url

    async def _handle_notice(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            iid, when = str(body["instance_id"]), str(body["time"])
            token = str(body.get("token", ""))
            reclaim_epoch = _reclaim_epoch(when)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"malformed notice: {exc}"}, status=400)
        inst = self.instances.get(iid)
        if inst is None or inst.state == InstanceState.TERMINATED:
            return web.json_response({"error": f"no live instance {iid!r} here"}, status=404)
        if not hmac.compare_digest(token.encode(), str(inst.extra["notice_token"]).encode()):
            return web.json_response({"error": f"wrong token for {iid}"}, status=403)
        if inst.market != Market.SPOT:
            return web.json_response({"error": f"{iid} is {inst.market.value}"}, status=409)
        at = self._accept_notice(inst, self.clock.now() + (reclaim_epoch - time.time()),
                                 str(body.get("action", "")))
        return web.json_response({"instance_id": iid, "reclaim_at_s": at}, status=202)

    def _accept_notice(self, inst: Instance, at: float, action: str) -> float:
        if "reclaim_at_s" in inst.extra:
            return float(inst.extra["reclaim_at_s"])
        inst.extra["reclaim_at_s"] = at
        if inst.state not in (InstanceState.TERMINATED, InstanceState.DRAINING):
            inst.state = InstanceState.NOTICE  # a draining one stays out of routing
        log.warning("instance %s: spot interruption notice (%s); reclaimed at %.1f", inst.id,
                    action or "terminate", at)
        if self.on_notice is not None:
            self.on_notice(inst, at)
        return at

    # ---- launch -----------------------------------------------------------------------------
    def _run_sync(self, spec: LaunchSpec, market: Market, settings: LaunchSettings
                  ) -> dict[str, Any]:
        name = template_name(self.aws, spec.instance_type)
        try:
            versions = self.ec2.describe_launch_template_versions(
                LaunchTemplateName=name, Versions=["$Default"])["LaunchTemplateVersions"]
        except ClientError as exc:
            if _code(exc) in _TEMPLATE_MISSING:
                raise ConfigError(
                    f"no launch template {name!r} for {spec.instance_type} in "
                    f"{self.aws.region} (mark deploy aws --name {self.aws.deployment} writes "
                    "it; or set aws.launch_templates)") from exc
            raise
        version = versions[0]
        encoded = version.get("LaunchTemplateData", {}).get("UserData")
        script = base64.b64decode(encoded).decode() if encoded else None
        user_data = launch_user_data(script, settings, f"launch template {name!r}")
        tags = [
            {"Key": TAG, "Value": self.aws.deployment},
            {"Key": "mark:models", "Value": ",".join(settings.models)[:_TAG_VALUE_MAX]},
            {"Key": "mark:market", "Value": market.value},
            {"Key": "Name", "Value": f"{self.aws.deployment}-{spec.instance_type}"},
        ]
        args: dict[str, Any] = dict(
            MinCount=1, MaxCount=1, InstanceType=spec.instance_type,
            LaunchTemplate={"LaunchTemplateName": name,
                            "Version": str(version["VersionNumber"])},
            UserData=user_data, ClientToken=uuid.uuid4().hex,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                               {"ResourceType": "volume", "Tags": tags[:3]}],
        )
        if market == Market.SPOT:
            args["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time",
                                "InstanceInterruptionBehavior": "terminate"}}
        try:
            return dict(self.ec2.run_instances(**args)["Instances"][0])
        except ClientError as exc:
            code = _code(exc)
            msg = exc.response.get("Error", {}).get("Message", "")
            if code in CAPACITY_CODES:
                raise CapacityError(spec.instance_type, market, code, msg) from exc
            raise ServiceUnavailable(f"launch of {spec.instance_type} ({market.value}) from "
                                     f"{name!r} failed: {code}: {msg}") from exc

    async def launch(self, spec: LaunchSpec) -> Instance:
        """Run one instance of ``spec`` (PENDING). ``CapacityError`` when EC2 has no
        capacity for the type; ``ConfigError`` for unknown models or a missing template."""
        market = Market(spec.market)
        unknown = [m for m in spec.models if self.models and m not in self.models]
        if unknown:
            raise ConfigError(f"launch asks for unknown models {unknown}; this backend serves "
                              f"{sorted(self.models)}")
        notice_url = await self.start()
        settings = LaunchSettings(
            models=tuple(spec.models or self.models), instance_type=spec.instance_type,
            market=market.value, max_batch_size=spec.max_batch_size,
            max_queue_delay_us=spec.max_queue_delay_us, notice_url=notice_url,
            notice_token=secrets.token_urlsafe(24))
        try:
            desc = await asyncio.to_thread(self._run_sync, spec, market, settings)
        except BotoCoreError as exc:  # no credentials, endpoint unreachable, ...
            raise ServiceUnavailable(f"launch of {spec.instance_type}: {exc}") from exc
        iid = str(desc["InstanceId"])
        ip = desc.get("PrivateIpAddress")
        inst = Instance(
            id=iid, instance_type=spec.instance_type, market=market,
            state=InstanceState.PENDING, launched_at_s=self.clock.now(),
            url=self.url_of(iid, ip) if ip else "", models=settings.models,
            extra={"ec2_id": iid, "private_ip": ip, "notice_token": settings.notice_token,
                   "spec": spec},
        )
        self.instances[iid] = inst
        log.info("launched %s (%s, %s) for %s", iid, spec.instance_type, market.value,
                 ",".join(settings.models))
        return inst

    # ---- ready ------------------------------------------------------------------------------
    async def _triton_ready(self, inst: Instance) -> bool:
        if not inst.url:
            return False
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
            async with self._http().get(f"{inst.url}/v2/health/ready") as resp:
                return resp.status == 200
        return False

    async def wait_ready(self, instance_id: str, timeout_s: float) -> Instance:
        """READY once EC2 says running and Triton says ready; ``ServiceUnavailable`` (and the
        instance terminated) when not within ``timeout_s``, or when it ends first."""
        inst = self._get(instance_id)
        deadline = self.clock.now() + timeout_s
        ec2_state = "pending"
        while True:
            if inst.state == InstanceState.TERMINATED:
                raise ServiceUnavailable(f"instance {instance_id} ended before it was ready")
            if ec2_state != "running":
                try:
                    desc = (await self._describe([instance_id])).get(instance_id)
                except (ClientError, BotoCoreError) as exc:  # transient: keep polling
                    log.warning("describing %s failed: %s", instance_id, exc)
                    desc = None
                if desc is not None:  # absent: not visible yet (EC2 is eventually consistent)
                    ec2_state = desc["State"]["Name"]
                    if desc.get("PrivateIpAddress"):
                        inst.extra["private_ip"] = desc["PrivateIpAddress"]
                        inst.url = self.url_of(instance_id, desc["PrivateIpAddress"])
                    if ec2_state in _ENDED:
                        self._mark_ended(inst)
                        why = desc.get("StateReason", {}).get("Message", ec2_state)
                        raise ServiceUnavailable(f"instance {instance_id} ended before it was "
                                                 f"ready ({why})")
            if ec2_state == "running" and await self._triton_ready(inst):
                break
            if self.clock.now() >= deadline:
                await self.terminate(instance_id)
                raise ServiceUnavailable(
                    f"instance {instance_id} ({inst.instance_type}) not ready within "
                    f"{timeout_s:g} s (EC2 state {ec2_state}; Triton at {inst.url or '?'} "
                    "not ready); terminated")
            await self.clock.sleep_until(min(deadline, self.clock.now() + self.poll_s))
        if inst.state == InstanceState.PENDING:
            inst.state = InstanceState.READY
        inst.ready_at_s = self.clock.now()
        log.info("instance %s ready after %.1f s", instance_id,
                 inst.ready_at_s - inst.launched_at_s)
        return inst

    # ---- notices ----------------------------------------------------------------------------
    async def notice(self, instance_id: str) -> float:
        inst = spot_to_notice(self.instances, instance_id)
        if "reclaim_at_s" in inst.extra:
            return float(inst.extra["reclaim_at_s"])
        at = self._accept_notice(inst, self.clock.now() + self.notice_s, "terminate (by hand)")
        self._reclaims[instance_id] = asyncio.create_task(self._reclaim(inst, at))
        return at

    async def _reclaim(self, inst: Instance, at: float) -> None:
        """A hand-given notice's reclaim: EC2 would end it now; so do we."""
        await self.clock.sleep_until(at)
        if inst.state == InstanceState.TERMINATED:
            return
        log.warning("instance %s: reclaimed (notice given by hand)", inst.id)
        await self._terminate_ec2([inst.id])
        self._mark_ended(inst)
        if self.on_exit is not None:
            self.on_exit(inst, -9)

    # ---- ending -----------------------------------------------------------------------------
    def _mark_ended(self, inst: Instance) -> None:
        if inst.state != InstanceState.TERMINATED:
            inst.state, inst.ended_at_s = InstanceState.TERMINATED, self.clock.now()
        task = self._reclaims.pop(inst.id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _terminate_ec2(self, ids: Sequence[str]) -> None:
        def call() -> None:
            try:
                self.ec2.terminate_instances(InstanceIds=list(ids))
            except ClientError as exc:
                if _code(exc) not in _NOT_FOUND:
                    raise
        try:
            await asyncio.to_thread(call)
        except (ClientError, BotoCoreError) as exc:
            raise ServiceUnavailable(f"terminating {list(ids)} failed: {exc}") from exc

    async def terminate(self, instance_id: str) -> None:
        """End ``instance_id``: one this backend launched (a no-op once ended), or one that
        carries the deployment's tag; ``NotFound`` naming the id for any other."""
        inst = self.instances.get(instance_id)
        if inst is not None and inst.state == InstanceState.TERMINATED:
            return
        if inst is None:  # not launched here: only a tagged one
            desc = (await self._describe([instance_id])).get(instance_id)
            if desc is None:
                raise NotFound(f"no instance {instance_id!r} tagged {TAG}={self.aws.deployment}"
                               "; only the deployment's instances are terminated")
            if desc["State"]["Name"] in ("shutting-down", "terminated"):
                return
        self._ending.add(instance_id)
        try:
            await self._terminate_ec2([instance_id])
        finally:
            self._ending.discard(instance_id)
        if inst is not None:
            self._mark_ended(inst)
        log.info("terminated %s", instance_id)

    async def _watch_deaths(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now() + self.monitor_s)
            live = [i for i, x in self.instances.items()
                    if x.state != InstanceState.TERMINATED and i not in self._ending]
            if not live:
                continue
            try:
                seen = await self._describe(live)
            except (ClientError, BotoCoreError) as exc:
                log.warning("describing the fleet failed: %s", exc)
                continue
            for iid in live:
                desc = seen.get(iid)
                inst = self.instances[iid]
                if desc is None or desc["State"]["Name"] not in _ENDED:
                    continue  # absent: a fresh launch not visible yet
                if inst.state == InstanceState.TERMINATED or iid in self._ending:
                    continue
                self._mark_ended(inst)
                why = desc.get("StateReason", {}).get("Message", desc["State"]["Name"])
                log.warning("instance %s ended on its own: %s", iid, why)
                if self.on_exit is not None:
                    self.on_exit(inst, -9 if "reclaim_at_s" in inst.extra else 1)

    async def close(self) -> None:
        """Terminate every live instance this backend launched (all carry the tag), stop the
        receiver and the monitor."""
        tasks = [t for t in (self._monitor, *self._reclaims.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._monitor, self._reclaims = None, {}
        live = [i for i, x in self.instances.items() if x.state != InstanceState.TERMINATED]
        if live:
            try:
                await self._terminate_ec2(live)
            except ServiceUnavailable:
                log.exception("close: terminating %s failed", live)
            else:
                for iid in live:
                    self._mark_ended(self.instances[iid])
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()


@register_backend("aws")
def _aws(cfg: MarkConfig, on_exit: ExitCallback | None,
         on_notice: NoticeCallback | None) -> AwsBackend:
    return AwsBackend(cfg.aws, cfg.models, on_exit=on_exit, on_notice=on_notice,
                      notice_s=cfg.fleet.spot_notice_s or 120.0)
