"""``mark faas --gunicorn``: the same runtime served by gunicorn's aiohttp worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config

from mark.backends.local import free_port

REPO = Path(__file__).resolve().parents[1]


def test_gunicorn_serves_the_invoke_api(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "faas.yaml"
    cfg.write_text("models:\n  - {name: identity, kind: identity}\ncontrol: {enabled: false}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mark", "faas", "--gunicorn", "--config", str(cfg), "--port",
         str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        client = boto3.client(
            "lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
            aws_access_key_id="x", aws_secret_access_key="x",
            config=Config(retries={"max_attempts": 0}, read_timeout=30, connect_timeout=1))
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = client.invoke(FunctionName="mark-identity",
                                     Payload=json.dumps({"model": "identity", "requests": []}))
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.25)
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp
        assert json.loads(resp["Payload"].read()) == {"responses": []}
        try:
            client.invoke(FunctionName="nope", Payload=b"{}")
        except client.exceptions.ResourceNotFoundException as exc:
            assert "mark-identity" in str(exc)
        else:
            raise AssertionError("an unknown function was invoked")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert b"gunicorn" in out.lower() or b"Booting worker" in out
