"""User data of the ``aws`` backend's instances: the launch template's script and each launch's.

Two parts, one contract:

- :func:`user_data_script` renders the **template's script** (``mark deploy aws`` puts it in
  each launch template): it installs Docker and the AWS CLI when missing, syncs the model
  repository from ``s3://<bucket>/<deployment>/models/`` (only the launch's models when it
  names them), writes the launch's batching into their ``config.pbtxt`` (the agent's
  ``configure``), starts Triton (container ``triton_image``, ``--http-port
  <triton_port>``, all GPUs when ``nvidia-smi`` exists) and starts the agent's ``watch``
  (:mod:`mark.backends.aws_agent`, embedded) when a notice URL is set.
- EC2 does not merge user data: a ``RunInstances`` that passes ``UserData`` replaces the
  template's. So each launch sends :func:`launch_user_data`: the template's script (as the
  backend reads it from the template's version it launches) with, right after its ``#!``
  line, a block that writes this launch's settings to ``/etc/mark/launch.env``; the
  template's script sources that file when it exists and keeps its defaults otherwise.

``/etc/mark/launch.env`` (shell assignments, values quoted; mode 0600)::

    MARK_MODELS=a,b               # the models this instance serves (empty: all)
    MARK_INSTANCE_TYPE=c5.large
    MARK_MARKET=spot|on_demand
    MARK_MAX_BATCH_SIZE=8         # empty: the repository's configuration
    MARK_MAX_QUEUE_DELAY_US=500   # empty: the repository's configuration
    MARK_NOTICE_URL=http://10.0.1.5:9100/notice   # where the agent reports a spot notice
    MARK_NOTICE_TOKEN=...         # this launch's secret, checked by the control plane
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from mark.core.errors import ConfigError

LAUNCH_ENV = "/etc/mark/launch.env"
USER_DATA_LIMIT_BYTES = 16 * 1024  # EC2's limit on user data before base64
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"
_AGENT = Path(__file__).with_name("aws_agent.py")


@dataclass(frozen=True)
class LaunchSettings:
    """What one launch carries beyond its template (see the module docstring)."""

    models: tuple[str, ...]
    instance_type: str
    market: str
    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    notice_url: str = ""
    notice_token: str = ""

    def env(self) -> str:
        values = {
            "MARK_MODELS": ",".join(self.models),
            "MARK_INSTANCE_TYPE": self.instance_type,
            "MARK_MARKET": self.market,
            "MARK_MAX_BATCH_SIZE": "" if self.max_batch_size is None else str(self.max_batch_size),
            "MARK_MAX_QUEUE_DELAY_US": ("" if self.max_queue_delay_us is None
                                        else str(self.max_queue_delay_us)),
            "MARK_NOTICE_URL": self.notice_url,
            "MARK_NOTICE_TOKEN": self.notice_token,
        }
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def parse_launch_env(text: str) -> dict[str, str]:
    """The assignments of a ``launch.env`` (as the shell reads them)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("MARK_"):
            words = shlex.split(value)
            out[key] = words[0] if words else ""
    return out


def user_data_script(deployment: str, bucket: str, *, region: str = "us-east-1",
                     triton_port: int = 8000, spot_poll_s: float = 5.0,
                     triton_image: str = DEFAULT_TRITON_IMAGE,
                     metadata_url: str = "http://169.254.169.254") -> str:
    """The launch template's user-data script for ``deployment`` (see the module docstring).

    ``bucket`` holds the model repository under ``<deployment>/models/`` (one directory per
    model, as Triton reads it). The instance profile must allow ``s3:GetObject`` and
    ``s3:ListBucket`` on that prefix."""
    q = shlex.quote
    agent = _AGENT.read_text()
    if "MARK_AGENT_EOF" in agent:
        raise AssertionError("the agent's source contains its heredoc marker")
    script = f"""#!/bin/bash
# mark instance bootstrap for deployment {deployment} (mark.backends.aws_userdata)
set -euo pipefail
exec >>/var/log/mark-boot.log 2>&1
MARK_DEPLOYMENT={q(deployment)}
MARK_BUCKET={q(bucket)}
MARK_REGION={q(region)}
MARK_TRITON_PORT={int(triton_port)}
MARK_TRITON_IMAGE={q(triton_image)}
MARK_SPOT_POLL_S={float(spot_poll_s):g}
MARK_METADATA_URL={q(metadata_url)}
MARK_MODELS='' MARK_MAX_BATCH_SIZE='' MARK_MAX_QUEUE_DELAY_US=''
MARK_NOTICE_URL='' MARK_NOTICE_TOKEN=''
# this launch's settings, written before this script by the aws backend
if [ -f {LAUNCH_ENV} ]; then . {LAUNCH_ENV}; fi

install -d /opt/mark/models
cat > /opt/mark/agent.py <<'MARK_AGENT_EOF'
{agent.rstrip()}
MARK_AGENT_EOF

pkg_install() {{
  if command -v dnf >/dev/null; then dnf -y install "$@";
  elif command -v yum >/dev/null; then yum -y install "$@";
  else apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -y install "$@"; fi
}}
command -v docker >/dev/null || pkg_install docker || pkg_install docker.io
command -v aws >/dev/null || pkg_install awscli
systemctl enable --now docker 2>/dev/null || service docker start

SRC="s3://$MARK_BUCKET/$MARK_DEPLOYMENT/models"
if [ -n "$MARK_MODELS" ]; then
  for m in ${{MARK_MODELS//,/ }}; do
    aws s3 sync --only-show-errors --region "$MARK_REGION" "$SRC/$m" "/opt/mark/models/$m"
  done
else
  aws s3 sync --only-show-errors --region "$MARK_REGION" "$SRC" /opt/mark/models
fi
python3 /opt/mark/agent.py configure --repo /opt/mark/models --models "$MARK_MODELS" \\
  ${{MARK_MAX_BATCH_SIZE:+--max-batch-size "$MARK_MAX_BATCH_SIZE"}} \\
  ${{MARK_MAX_QUEUE_DELAY_US:+--max-queue-delay-us "$MARK_MAX_QUEUE_DELAY_US"}}

GPUS=()
if command -v nvidia-smi >/dev/null; then GPUS=(--gpus all); fi
docker rm -f mark-triton 2>/dev/null || true
docker run -d --restart unless-stopped --name mark-triton "${{GPUS[@]}}" --shm-size 1g \\
  -p "$MARK_TRITON_PORT:$MARK_TRITON_PORT" -v /opt/mark/models:/models "$MARK_TRITON_IMAGE" \\
  tritonserver --model-repository=/models --http-port="$MARK_TRITON_PORT" \\
  --allow-grpc=false --allow-metrics=false

if [ -n "$MARK_NOTICE_URL" ]; then
  AGENT=(python3 /opt/mark/agent.py watch --metadata-url "$MARK_METADATA_URL"
         --notice-url "$MARK_NOTICE_URL" --token "$MARK_NOTICE_TOKEN" --poll-s "$MARK_SPOT_POLL_S")
  if command -v systemd-run >/dev/null; then
    systemd-run --unit mark-agent --property Restart=on-failure "${{AGENT[@]}}"
  else
    nohup "${{AGENT[@]}}" >>/var/log/mark-agent.log 2>&1 &
  fi
fi
"""
    return script


def launch_user_data(template_script: str | None, settings: LaunchSettings,
                     template: str = "the launch template") -> str:
    """One launch's user data: the settings block, then the template's script (see the module
    docstring). ``ConfigError`` when the template's user data is not a shell script or the
    result passes EC2's 16 KiB limit."""
    block = (f"# mark: this launch's settings (aws backend), read by the script below\n"
             f"install -d -m 0755 /etc/mark\n"
             f"umask 077\n"
             f"cat > {LAUNCH_ENV} <<'MARK_LAUNCH_EOF'\n{settings.env()}MARK_LAUNCH_EOF\n"
             f"umask 022\n")
    if not template_script:
        text = "#!/bin/bash\n" + block
    elif template_script.startswith("#!"):
        shebang, _, rest = template_script.partition("\n")
        text = f"{shebang}\n{block}{rest}"
    else:
        raise ConfigError(
            f"{template}'s user data is not a shell script (it starts with "
            f"{template_script[:20]!r}); write it with mark.backends.aws_userdata."
            "user_data_script, which reads the launch's settings from " + LAUNCH_ENV)
    size = len(text.encode())
    if size > USER_DATA_LIMIT_BYTES:
        raise ConfigError(f"user data for a launch from {template} is {size} bytes; EC2 takes "
                          f"at most {USER_DATA_LIMIT_BYTES}")
    return text
