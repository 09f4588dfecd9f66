"""boto3 clients for one region and endpoint (moto, LocalStack), and small helpers over them."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.exceptions import ClientError

T = TypeVar("T")


@dataclass(frozen=True)
class Clients:
    ec2: Any
    iam: Any
    s3: Any
    lambda_: Any
    sts: Any
    ssm: Any
    elasticache: Any
    elbv2: Any
    autoscaling: Any

    @classmethod
    def connect(cls, region: str, endpoint_url: str | None = None) -> Clients:
        """Clients through the standard credential chain."""
        session = boto3.session.Session(region_name=region)

        def make(service: str) -> Any:
            return session.client(service, endpoint_url=endpoint_url)

        return cls(*(make(s) for s in ("ec2", "iam", "s3", "lambda", "sts", "ssm", "elasticache",
                                       "elbv2", "autoscaling")))


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def tag_dict(tags: list[dict[str, str]] | dict[str, str] | None) -> dict[str, str]:
    """``[{"Key","Value"}]`` (EC2, IAM, S3) or ``{k: v}`` (Lambda) as one dict."""
    if not tags:
        return {}
    if isinstance(tags, dict):
        return dict(tags)
    return {t["Key"]: t["Value"] for t in tags}


def policy_document(raw: Any) -> Any:
    """An IAM document as boto3 hands it back: a dict, or URL-encoded JSON text."""
    if isinstance(raw, str):
        return json.loads(urllib.parse.unquote(raw))
    return raw


def retry_eventual(fn: Callable[[], T], codes: tuple[str, ...], timeout_s: float = 90.0,
                   sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` again while AWS answers one of ``codes``: IAM is eventually consistent, so
    a role or instance profile made a moment ago may not be usable for a few seconds."""
    waited = 0.0
    while True:
        try:
            return fn()
        except ClientError as exc:
            if error_code(exc) not in codes or waited >= timeout_s:
                raise
        sleep(3.0)
        waited += 3.0
