"""What a deployment is made of: its names, its tag and the configuration its hosts run.

A :class:`Spec` is pure data, built once from the command line and the mark configuration;
every resource is named from the deployment's name (so it is found again) and tagged
``mark:deployment=<name>`` (so teardown removes it and nothing else).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.aws.iam import TAG_KEY
from mark.control.planning import model_profile, planning_catalogue
from mark.core.config import MarkConfig

REPO = Path(__file__).resolve().parents[2]
ROLE_PATH = "/mark/{name}/"
# what a host and an instance need of the source tree (no traces: they plan nothing)
_SOURCE_SUFFIXES = (".py", ".json", ".pbtxt", ".yaml", ".txt")


@dataclass(frozen=True)
class Spec:
    """One deployment: ``name`` in ``region`` of ``account``."""

    name: str
    region: str
    account: str
    cfg: MarkConfig
    bucket: str
    bucket_owned: bool  # created (and deleted) by the deployment, else a configured one
    ami: str
    host_type: str = "t3.medium"
    image_uri: str = ""
    one_host: bool = True  # else: front ends in an Auto Scaling group behind an ALB
    frontends: int = 2  # hosts in that group
    redis_node_type: str = "cache.t3.micro"  # its ElastiCache node type
    frontend_cidr: str = "0.0.0.0/0"
    types: tuple[str, ...] = field(default=())
    model_types: dict[str, tuple[str, ...]] = field(default_factory=dict)  # model -> its types

    @property
    def tags(self) -> dict[str, str]:
        return {TAG_KEY: self.name}

    def tag_list(self, **extra: str) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in {**self.tags, **extra}.items()]

    @property
    def path(self) -> str:
        return ROLE_PATH.format(name=self.name)

    @property
    def function_prefix(self) -> str:
        """Functions are ``<name>-<faas.function_prefix><model>``: unique per deployment."""
        return f"{self.name}-{self.cfg.faas.function_prefix}"

    def role(self, kind: str) -> str:
        return f"{self.name}-{kind}"

    def role_arn(self, kind: str) -> str:
        return f"arn:aws:iam::{self.account}:role{self.path}{self.role(kind)}"

    def launch_template(self, instance_type: str) -> str:
        return (self.cfg.aws.launch_templates.get(instance_type)
                or f"{self.name}-{instance_type.replace('.', '-')}")

    @property
    def prefix(self) -> str:
        """The deployment's S3 prefix (``<name>/``)."""
        return f"{self.name}/"

    def host_config(self, redis_url: str | None = None) -> dict[str, Any]:
        """The configuration the front-end host runs (``mark up --frontend-only`` and
        ``mark provisioner``): shared state in ``redis_url`` (None: the host's own Redis),
        the aws backend with this
        deployment's launch templates, functions on Lambda."""
        raw = self.cfg.model_dump(mode="json")
        raw["frontend"]["host"] = "0.0.0.0"
        raw["state"].update(backend="redis", url=redis_url or "redis://127.0.0.1:6379/0")
        raw["fleet"]["backend"] = "aws"
        raw["faas"].update(endpoint_url=None, region=self.region,
                           function_prefix=self.function_prefix)
        raw["aws"].update(deployment=self.name, region=self.region, endpoint_url=None,
                          launch_templates={t: self.launch_template(t) for t in self.types})
        raw["runtime_dir"] = "/var/lib/mark"
        for m in raw["models"]:
            m["repository"] = None  # instances get theirs from S3 (the uploaded repository)
        return raw

    def function_config(self) -> dict[str, Any]:
        """``MARK_CONFIG_JSON`` of the functions: the models (Lambda's 4 KB of variables)."""
        return {"models": [m.model_dump(mode="json", exclude_defaults=True)
                           for m in self.cfg.models]}


def allowed_types(cfg: MarkConfig) -> dict[str, tuple[str, ...]]:
    """The instance types each model may run on: its ``instance_types``, else
    ``control.types``, else every type both the catalogue and its profile know."""
    cat = planning_catalogue(cfg)
    out = {}
    for model in cfg.models:
        wanted = model.instance_types or cfg.control.types
        types = set(wanted) if wanted else set(cat.instances) & set(model_profile(model, cat).instances)
        out[model.name] = tuple(sorted(types))
    return out


def source_archive() -> bytes:
    """The mark package as a deterministic ``.tar.gz`` (sorted, zero mtimes), so the same
    tree uploads the same bytes and a second deploy finds nothing to update."""
    buf = io.BytesIO()
    sources = sorted(p for p in (REPO / "mark").rglob("*") if p.is_file()
                     and p.suffix in _SOURCE_SUFFIXES and "__pycache__" not in p.parts)
    files = [REPO / "pyproject.toml", REPO / "README.md", *sources]
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for p in files:
            data = p.read_bytes()
            info = tarfile.TarInfo(f"mark-src/{p.relative_to(REPO)}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    # gzip writes its own mtime into the header: zero it (bytes 4-8)
    return raw[:4] + b"\0\0\0\0" + raw[8:]


def digest(value: Any) -> str:
    """A short stable hash of a JSON-able value (what a resource was created from)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
