"""The agent on each EC2 instance of the ``aws`` backend (Python standard library only).

The instance's user data (see :mod:`mark.backends.aws_userdata`) carries this file's source
and runs it twice:

``configure``
    before Triton starts: writes this launch's Triton batching (``--max-batch-size``,
    ``--max-queue-delay-us``) into the ``config.pbtxt`` of each model under ``--repo``
    (``max_batch_size`` replaced, any ``dynamic_batching { ... }`` block replaced by one with
    the delay; a model whose ``max_batch_size`` is 0 is left alone).

``watch``
    polls the instance metadata service (IMDSv2: ``PUT latest/api/token`` first, the token
    sent as ``X-aws-ec2-metadata-token``) for ``latest/meta-data/spot/instance-action``
    every ``--poll-s`` seconds: 404 = no notice; 200 ``{"action", "time"}`` = the spot
    instance will be reclaimed at ``time`` (ISO 8601, UTC). The notice is POSTed once to the
    control plane's ``--notice-url`` as JSON ``{"instance_id", "action", "time", "token"}``
    (retried each poll until the control plane answers 2xx, or a 4xx refuses it for good);
    then the agent exits. ``--token`` is this launch's secret, which the control plane
    checks. The instance id comes from ``latest/meta-data/instance-id`` unless given.

Both the metadata base URL and the notice URL are arguments, so a test runs this very file
against a scripted metadata endpoint on loopback.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("mark-agent")

METADATA_URL = "http://169.254.169.254"
TOKEN_TTL_S = 21600  # IMDSv2's maximum


class Metadata:
    """The instance metadata service at ``base_url``, through IMDSv2 session tokens."""

    def __init__(self, base_url: str = METADATA_URL, timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token: str | None = None

    def _fetch_token(self) -> str:
        req = urllib.request.Request(
            f"{self.base_url}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            return str(resp.read().decode().strip())

    def get(self, path: str) -> tuple[int, str]:
        """``(status, body)`` of ``GET latest/meta-data/<path>``; a refused (401) token is
        renewed once."""
        for attempt in range(2):
            if self._token is None:
                self._token = self._fetch_token()
            req = urllib.request.Request(f"{self.base_url}/latest/meta-data/{path}",
                                         headers={"X-aws-ec2-metadata-token": self._token})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return int(resp.status), resp.read().decode()
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0:
                    self._token = None
                    continue
                return int(exc.code), exc.read().decode(errors="replace")
        raise AssertionError("unreachable")

    def instance_id(self) -> str:
        status, body = self.get("instance-id")
        if status != 200:
            raise RuntimeError(f"metadata instance-id answered {status}: {body[:200]}")
        return body.strip()

    def spot_action(self) -> dict[str, Any] | None:
        """The pending interruption ``{"action", "time"}``, or None (404: none)."""
        status, body = self.get("spot/instance-action")
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"metadata spot/instance-action answered {status}: {body[:200]}")
        notice = json.loads(body)
        if not isinstance(notice, dict) or "time" not in notice:
            raise RuntimeError(f"metadata spot/instance-action: unexpected body {body[:200]!r}")
        return notice


def post_notice(notice_url: str, body: dict[str, Any], timeout_s: float = 5.0) -> int:
    """POST the notice; the HTTP status (``0`` when the control plane could not be reached)."""
    req = urllib.request.Request(notice_url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        log.warning("notice to %s failed: %s", notice_url, exc)
        return 0


def watch(metadata_url: str, notice_url: str, token: str = "", instance_id: str | None = None,
          poll_s: float = 5.0, max_polls: int | None = None) -> dict[str, Any] | None:
    """Poll for a spot interruption notice and report it (see the module docstring).

    Returns the body reported (None when ``max_polls`` ran out first, or when the control
    plane refused it with a 4xx)."""
    md = Metadata(metadata_url)
    polls = 0
    body: dict[str, Any] | None = None
    while max_polls is None or polls < max_polls:
        polls += 1
        try:
            if instance_id is None:
                instance_id = md.instance_id()
            if body is None:
                notice = md.spot_action()
                if notice is not None:
                    body = {"instance_id": instance_id, "action": notice.get("action", ""),
                            "time": notice["time"], "token": token}
                    log.warning("spot interruption notice: %s at %s", body["action"],
                                body["time"])
            if body is not None:
                status = post_notice(notice_url, body)
                if 200 <= status < 300:
                    return body
                if 400 <= status < 500:
                    log.error("control plane refused the notice (%d)", status)
                    return None
        except (OSError, RuntimeError, ValueError) as exc:  # metadata down: keep polling
            log.warning("poll failed: %s", exc)
        time.sleep(poll_s)
    return None


_MBS = re.compile(r"^max_batch_size\s*:\s*\d+\s*$", re.MULTILINE)


def _drop_block(text: str, name: str) -> str:
    """``text`` without the top-level ``name { ... }`` block (nested braces allowed)."""
    m = re.search(rf"^{name}\s*{{", text, re.MULTILINE)
    if m is None:
        return text
    depth, i = 0, m.end() - 1
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
        if depth == 0:
            break
    return text[:m.start()] + text[i:].lstrip("\n")


def batching_config(text: str, max_batch_size: int | None, max_queue_delay_us: int | None
                    ) -> str:
    """A ``config.pbtxt`` with this launch's batching (see ``configure``)."""
    if max_batch_size is not None:
        if _MBS.search(text):
            text = _MBS.sub(f"max_batch_size: {max_batch_size}", text, count=1)
        else:
            text = f"max_batch_size: {max_batch_size}\n" + text
    m = _MBS.search(text)
    if m is None or int(text[m.start():m.end()].split(":")[1]) == 0:
        return text
    if max_queue_delay_us is not None:
        text = _drop_block(text, "dynamic_batching").rstrip("\n") + "\n"
        text += f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
    return text


def configure(repo: Path, models: list[str], max_batch_size: int | None,
              max_queue_delay_us: int | None) -> list[str]:
    """Apply the batching to ``models`` (all under ``repo`` when empty); returns their names."""
    names = models or sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    for name in names:
        cfg = repo / name / "config.pbtxt"
        if not cfg.is_file():
            raise FileNotFoundError(f"model {name!r} has no {cfg}")
        cfg.write_text(batching_config(cfg.read_text(), max_batch_size, max_queue_delay_us))
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mark-agent", description="the instance agent of mark's aws backend")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch", help="report a spot interruption notice to the control plane")
    w.add_argument("--metadata-url", default=METADATA_URL)
    w.add_argument("--notice-url", required=True)
    w.add_argument("--token", default="")
    w.add_argument("--instance-id", default=None)
    w.add_argument("--poll-s", type=float, default=5.0)
    w.add_argument("--max-polls", type=int, default=None)
    c = sub.add_parser("configure", help="write this launch's batching into the models")
    c.add_argument("--repo", type=Path, required=True)
    c.add_argument("--models", default="", help="comma-separated (default: all)")
    c.add_argument("--max-batch-size", type=int, default=None)
    c.add_argument("--max-queue-delay-us", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s mark-agent %(message)s")
    if args.cmd == "configure":
        names = configure(args.repo, [m for m in args.models.split(",") if m],
                          args.max_batch_size, args.max_queue_delay_us)
        print(" ".join(names))
        return 0
    reported = watch(args.metadata_url, args.notice_url, args.token, args.instance_id,
                     args.poll_s, args.max_polls)
    return 0 if reported is not None else 1


if __name__ == "__main__":
    sys.exit(main())
