"""Configuration as validated models. Every field has a default, so ``mark up`` needs no file.

Load with :func:`load_config` from YAML (or TOML by extension). Units are in field names.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mark.core.errors import ConfigError
from mark.core.profiles import load_profile, shipped_profiles
from mark.core.slo import DEFAULT_SLO_LATENCY_MS, DEFAULT_SLO_PERCENTILE, Slo

ModelKind = Literal["minilm", "identity", "profiled"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    name: str = Field("minilm", description="model name clients use in /v2/models/{name}")
    kind: ModelKind = Field("minilm", description="which bundled model implementation serves it")
    max_batch_size: int = Field(32, ge=0, le=1024, description="Triton max_batch_size; 0 = no batching")
    dynamic_batching: bool = Field(True, description="enable Triton's dynamic batcher")
    max_queue_delay_us: int = Field(
        0, ge=0, description="dynamic batcher max queue delay (µs); 0 still batches under load"
    )
    torch_threads: int = Field(2, ge=1, description="intra-op threads of the model (minilm)")
    profile: str | None = Field(
        None,
        description="service-time profile (a shipped name such as inception-v3, or a JSON file): "
        "what the control loop plans with; a `profiled` model also sleeps its times per batch "
        "on each instance type. Default: the shipped profile named like the kind (minilm)",
    )
    capacity_rps: float = Field(
        200.0, gt=0, description="requests/s one instance sustains under the SLO (WRR weight)"
    )
    slo_latency_ms: float = Field(DEFAULT_SLO_LATENCY_MS, gt=0, description="latency bound of the SLO (ms)")
    slo_percentile: float = Field(
        DEFAULT_SLO_PERCENTILE, gt=0, lt=100, description="share of requests that must meet it (%)"
    )
    repository: str | None = Field(
        None, description="a Triton model repository (a directory holding the model's folder "
        "named like it) to serve instead of the bundled kind's; the kind still gives its profile "
        "and metadata",
    )
    instance_types: list[str] | None = Field(
        None, min_length=1, description="instance types this model may run on (default: "
        "control.types, else every type the catalogue and the profile know)",
    )
    markets: list[Literal["on_demand", "spot"]] | None = Field(
        None, min_length=1, description="markets this model may buy in (default: on_demand, "
        "plus spot when control.spot)",
    )
    faas_memory_mb: int | None = Field(
        None, ge=128, le=10_240, description="this model's function memory (MB; default: "
        "faas.memory_mb, else the plan's)",
    )

    @property
    def slo(self) -> Slo:
        return Slo(self.slo_latency_ms, self.slo_percentile)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.dynamic_batching and self.max_batch_size == 0:
            raise ValueError(
                f"model {self.name!r}: dynamic_batching needs max_batch_size > 0 (got 0)"
            )
        if self.kind == "profiled":
            self._check_profiled()
        return self

    def _check_profiled(self) -> None:
        """A ``profiled`` model needs a profile; its batches cannot outgrow the profile's:
        an unset max_batch_size is clamped to the profile's largest batch, a set one above
        it is an error."""
        if self.profile is None:
            raise ValueError(
                f"model {self.name!r}: kind 'profiled' needs `profile`: a shipped profile "
                f"({', '.join(shipped_profiles())}) or a path to a profile JSON file"
            )
        try:
            top = max(t.max_batch for t in load_profile(self.profile).instances.values())
        except ConfigError as exc:
            raise ValueError(f"model {self.name!r}: profile: {exc.message}") from exc
        if self.max_batch_size > top:
            if "max_batch_size" in self.model_fields_set:
                raise ValueError(
                    f"model {self.name!r}: max_batch_size {self.max_batch_size} exceeds the "
                    f"largest batch of profile {self.profile!r} ({top}); set at most {top} or "
                    f"leave it unset (then {top})"
                )
            self.max_batch_size = top


class FleetConfig(_Strict):
    backend: str = Field("local", description="where instances come from: a registered backend "
                         "(local = tritonserver processes on loopback, fake = in memory)")
    instances: int = Field(2, ge=0, le=64, description="local Triton instances started by `mark up`")
    instance_type: str = Field("local", description="catalogue type name recorded for instances")
    weights: list[float] | None = Field(
        None, description="per-instance WRR weights (requests/s); default: the model capacity"
    )
    ready_timeout_s: float = Field(300.0, gt=0, description="how long an instance may take to load")
    health_interval_s: float = Field(1.0, gt=0, description="instance health polling period (s)")
    launch_delay_s: float = Field(
        5.0, ge=0,
        description="local/fake backends: an instance launched by the control loop is ready no "
        "sooner than this after its launch (the cloud's boot; Triton starts meanwhile and must "
        "be ready too) (s); the starting fleet is taken as already running",
    )
    spot_interruption_scale: float = Field(
        1.0, ge=0,
        description="local/fake backends: spot instances get interruption notices at the "
        "catalogue's rate times this (dimensionless; 0 = only on request)",
    )
    spot_notice_s: float | None = Field(
        None, gt=0,
        description="seconds from a spot interruption notice to the reclaim (default: the "
        "catalogue's, 120 s on AWS)",
    )

    @model_validator(mode="after")
    def _check(self) -> FleetConfig:
        if self.weights is not None:
            if len(self.weights) != self.instances:
                raise ValueError(
                    f"fleet.weights has {len(self.weights)} entries but fleet.instances is "
                    f"{self.instances}; give one weight per instance"
                )
            if any(w <= 0 for w in self.weights):
                raise ValueError(f"fleet.weights must all be > 0, got {self.weights}")
        return self


class FrontendConfig(_Strict):
    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8080, ge=0, le=65535, description="listen port (0 = any free port)")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0,
        description="larger request bodies get 413 (bytes); also bounds a compressed body once "
        "decompressed",
    )
    upstream_timeout_s: float = Field(
        30.0, gt=0,
        description="timeout of an upstream request other than inference: metadata, config, "
        "statistics (s); inference takes its deadline from the model's SLO (attempt_timeout_*)",
    )
    attempt_timeout_slo_factor: float = Field(
        10.0, gt=0,
        description="an inference request's deadline is its arrival plus the model's "
        "slo_latency_ms times this factor (dimensionless), clamped to [attempt_timeout_floor_s, "
        "attempt_timeout_ceiling_s]; every attempt (the retry included) gets what is left of it",
    )
    attempt_timeout_floor_s: float = Field(
        2.0, gt=0, description="shortest deadline of an inference request, after arrival (s)"
    )
    attempt_timeout_ceiling_s: float = Field(
        30.0, gt=0, description="longest deadline of an inference request, after arrival (s)"
    )
    connect_timeout_s: float = Field(2.0, gt=0, description="upstream connect timeout (s)")
    pool_size: int = Field(
        256, gt=0, description="idle upstream connections kept per instance (connections)"
    )
    max_connections_per_instance: int = Field(
        64, gt=0,
        description="hard cap on connections open to one instance, busy or idle (connections); "
        "requests beyond it wait, first come first served, within their deadline (else 504)",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="a request's head and body must arrive within this of "
        "its first byte, else 408 and the connection closes (s): a client sending a byte a "
        "second cannot hold a connection",
    )
    keep_alive_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="an idle keep-alive connection is closed after (s)",
    )
    response_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="least time a handler and its reply get before Sanic "
        "answers 503 itself (s); always at least the longest inference deadline plus 10 s",
    )
    listen_backlog: int = Field(
        1024, ge=1, le=65535, description="connections the kernel queues before the front end "
        "accepts them (connections): past it a burst of new connections loses handshakes",
    )
    spill_margin_ms: float = Field(
        60.0, ge=0, description="kept back from a type's wait budget when the front end "
        "predicts a request's completion at an instance (ms): the HTTP hops and Triton's own "
        "overhead per request, which the queueing model does not see",
    )
    timing_log_size: int = Field(100_000, gt=0, description="per-request timing records kept")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 503")
    api_keys: list[str] = Field(
        default_factory=list, description="keys accepted on the inference routes (header "
        "`authorization: Bearer <key>` or `x-api-key: <key>`); empty = the inference routes "
        "are open. Also MARK_API_KEYS (comma-separated)",
    )
    workers: int | Literal["auto"] = Field(
        "auto",
        description="front-end processes sharing the port; auto = the cores left to the front "
        "end: cpu count minus the cores local instances use (instances x torch threads), at least 1",
    )

    @model_validator(mode="after")
    def _check_workers(self) -> FrontendConfig:
        if isinstance(self.workers, int) and not 1 <= self.workers <= 64:
            raise ValueError(f"frontend.workers must be 1..64 or 'auto', got {self.workers}")
        if self.attempt_timeout_floor_s > self.attempt_timeout_ceiling_s:
            raise ValueError(
                f"frontend.attempt_timeout_floor_s ({self.attempt_timeout_floor_s}) must not "
                f"exceed frontend.attempt_timeout_ceiling_s ({self.attempt_timeout_ceiling_s})"
            )
        return self

    def effective_api_keys(self) -> frozenset[str]:
        """The inference keys in force: ``api_keys`` plus MARK_API_KEYS (comma-separated)."""
        env = [k.strip() for k in os.environ.get("MARK_API_KEYS", "").split(",") if k.strip()]
        return frozenset([*self.api_keys, *env])

    def request_budget_s(self, slo_latency_ms: float) -> float:
        """Seconds from arrival to the deadline of an inference request of this SLO."""
        budget = slo_latency_ms / 1000.0 * self.attempt_timeout_slo_factor
        return min(max(budget, self.attempt_timeout_floor_s), self.attempt_timeout_ceiling_s)


class ControlConfig(_Strict):
    enabled: bool = Field(
        True, description="run the control loop (autoscaling); false keeps the starting fleet"
    )
    policy: str = Field(
        "mark", description="provisioning policy: any name `mark simulate` accepts that does not "
        "need the future (mark, mark-no-faas, sagemaker, mark-released, ...)",
    )
    interval_s: float = Field(10.0, gt=0, description="seconds between two policy steps")
    spot: bool = Field(False, description="let the policy use spot instances")
    types: list[str] | None = Field(
        None, description="instance types the policy may launch (default: every type both the "
        "catalogue and the model's profile know)",
    )
    policy_options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword options of the policy (e.g. {hold_s: 60} for mark)",
    )
    history_s: int = Field(
        86_400, ge=600, description="seconds of per-second arrival counts kept for the policy"
    )
    min_instances: int | None = Field(
        None, ge=0, description="instances per model the loop keeps whatever the policy plans; "
        "null: 0 with FaaS on (a quiet model runs on functions alone), 1 without (requests "
        "would get 503)",
    )
    health_failures: int = Field(
        3, ge=1, description="consecutive failed health checks after which an instance is "
        "replaced",
    )
    decisions_kept: int = Field(
        10_000, ge=1, description="policy steps kept for GET /admin/decisions"
    )


class FunctionsConfig(_Strict):
    """The FaaS tier: a Lambda-compatible function per model (``mark faas`` locally)."""

    enabled: bool = Field(True, description="spill to functions and plan with the FaaS tier")
    host: str = Field("127.0.0.1", description="the local function runtime's listen address")
    port: int = Field(9000, ge=0, le=65535, description="its port (0 = any free port)")
    endpoint_url: str | None = Field(
        None, description="Lambda endpoint to invoke (default: the local runtime at host:port; "
        "AWS: null with region set)",
    )
    region: str = Field("us-east-1", description="AWS region of the functions")
    function_prefix: str = Field("mark-", description="function name = prefix + model name")
    concurrency: int = Field(16, ge=1, le=10_000,
                             description="concurrent invocations per function (sandboxes)")
    keep_alive_s: float = Field(300.0, gt=0, description="an idle sandbox expires after (s)")
    memory_mb: int | None = Field(
        None, ge=128, le=10_240, description="function memory (MB); null: from the plan"
    )
    timeout_s: float = Field(30.0, gt=0, le=900, description="a handler running longer is "
                             "killed and reported as Sandbox.Timedout (s)")


class AdminConfig(_Strict):
    token: str | None = Field(
        None, description="bearer token the /admin routes (and the dashboard's data) require; "
        "MARK_ADMIN_TOKEN in the environment overrides it. Unset: the admin routes answer "
        "only clients on loopback",
    )

    model_paths: list[str] = Field(
        default_factory=list, description="directories under which a model registered through "
        "the admin API may name its `repository` or `profile` file (a repository is code the "
        "server runs). Empty: such models take only shipped profiles and bundled kinds. Models "
        "in this file are not limited",
    )

    def effective_token(self) -> str | None:
        """The token in force: MARK_ADMIN_TOKEN, else ``token`` (None = loopback only)."""
        return os.environ.get("MARK_ADMIN_TOKEN") or self.token


class StateConfig(_Strict):
    """Where models, SLOs, the fleet, the serving plan and arrival counts are shared."""

    backend: Literal["memory", "redis"] = Field(
        "memory", description="memory = in this process (one host; worker processes follow "
        "through files in runtime_dir); redis = shared by every worker, host and the "
        "provisioner",
    )
    url: str = Field("redis://127.0.0.1:6379/0", description="the Redis URL (backend redis)")
    prefix: str = Field("mark:", description="key prefix, so deployments can share a Redis")
    leader_ttl_s: float = Field(
        10.0, gt=0, description="the provisioner's leader lock expires this long after its "
        "last renewal (s)",
    )
    timeout_s: float = Field(1.0, gt=0, description="timeout of one Redis call (s)")


class MetricsConfig(_Strict):
    enabled: bool = Field(True, description="serve GET /metrics (Prometheus text format)")
    window_s: float = Field(
        60.0, gt=0, description="sliding window of mark_slo_attainment_ratio and the "
        "dashboard's percentiles (s)",
    )


class LoggingConfig(_Strict):
    json_lines: bool = Field(False, description="log one JSON object per line")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")


class AwsConfig(_Strict):
    """Where the ``aws`` backend and ``mark deploy aws`` act (every boto3 client honours
    ``endpoint_url``, so moto or LocalStack can stand in)."""

    deployment: str = Field(
        "mark", pattern=r"^[a-z0-9][a-z0-9-]{0,30}$",
        description="the deployment's name: every resource is tagged mark:deployment=<name> "
        "and only tagged instances are ever described, drained or terminated",
    )
    region: str = Field("us-east-1", description="AWS region")
    endpoint_url: str | None = Field(None, description="endpoint override (moto, LocalStack)")
    launch_templates: dict[str, str] = Field(
        default_factory=dict, description="instance type -> launch template name (written by "
        "mark deploy aws; default: <deployment>-<type with '.' as '-'>)",
    )
    ready_timeout_s: float = Field(
        600.0, gt=0, description="an instance that has not passed Triton's health check this "
        "long after launch is terminated and replaced (s)",
    )
    spot_poll_s: float = Field(
        5.0, gt=0, description="how often an instance's agent polls the metadata service's "
        "spot/instance-action (s)",
    )
    triton_port: int = Field(8000, ge=1, le=65535, description="Triton's HTTP port on instances")
    notice_port: int = Field(
        9100, ge=1, le=65535, description="where the control plane hears the instances' agents "
        "report a spot notice (POST /notice)",
    )


class MarkConfig(_Strict):
    frontend: FrontendConfig = Field(default_factory=FrontendConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    faas: FunctionsConfig = Field(default_factory=FunctionsConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    aws: AwsConfig = Field(default_factory=AwsConfig)
    models: list[ModelConfig] = Field(default_factory=lambda: [ModelConfig()])
    runtime_dir: Path = Field(
        Path(".runtime"), description="where model repositories and logs of instances go"
    )

    @model_validator(mode="after")
    def _check(self) -> MarkConfig:
        names = [m.name for m in self.models]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"model names must be unique, repeated: {sorted(dup)}")
        if not self.models:
            raise ValueError("at least one model is needed")
        return self

    def frontend_workers(self, cpu_count: int | None = None) -> int:
        """The front-end worker count; ``auto`` leaves the local instances their cores."""
        if self.frontend.workers != "auto":
            return self.frontend.workers
        cores = cpu_count or os.cpu_count() or 1
        instance_cores = self.fleet.instances * max(m.torch_threads for m in self.models)
        return max(1, cores - instance_cores)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


def load_config(path: str | Path | None) -> MarkConfig:
    """Read a YAML/TOML file (``None`` = all defaults); errors name the file and field."""
    if path is None:
        return MarkConfig()
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {'TOML' if p.suffix == '.toml' else 'YAML'}: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return MarkConfig.model_validate(raw)
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{p}: invalid configuration: {msgs}") from exc
