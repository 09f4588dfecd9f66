"""The user data scripts: a fleet instance (Triton on the model repository from S3, plus the
spot agent) and the front-end host (Redis, the front end, the provisioner).

A fleet instance boots from the aws backend's own script
(``mark.backends.aws_userdata.user_data_script``: Triton in its container on
``s3://<bucket>/<name>/models/``, the agent that reports spot notices to the URL each launch
writes into ``/etc/mark/launch.env``), so the launch template and the backend agree on one
contract. Where that module is absent, :func:`fallback_instance_script` (written here) does
the same with the tritonserver of the ``nvidia-pytriton`` wheel and a notice URL fixed at the
host's address. The host's script is written here; it targets Amazon Linux 2023 and installs
mark from the source archive the deployment uploads to ``s3://<bucket>/<name>/dist/``.
"""

from __future__ import annotations

import json
import shlex

from deploy.aws.spec import Spec

try:
    from mark.backends.aws_userdata import user_data_script as backend_script
except ImportError:  # a tree without the aws backend
    backend_script = None  # type: ignore[assignment]

_INSTALL = """\
dnf install -y python3.11 python3.11-pip awscli
aws s3 cp --region {region} s3://{bucket}/{name}/dist/mark-src.tar.gz /opt/mark-src.tar.gz
tar -xzf /opt/mark-src.tar.gz -C /opt
python3.11 -m pip install /opt/mark-src
"""

# The spot agent: IMDSv2 spot/instance-action every poll_s (404 = no notice, 200 =
# {"action","time"}), each new notice POSTed to the control plane's notice port.
_AGENT = r'''
import json, time, urllib.request
MD = "http://169.254.169.254/latest"
def md(path, token):
    req = urllib.request.Request(f"{MD}/{path}", headers={"X-aws-ec2-metadata-token": token})
    return urllib.request.urlopen(req, timeout=2).read().decode()
def token():
    req = urllib.request.Request(f"{MD}/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    return urllib.request.urlopen(req, timeout=2).read().decode()
seen = None
while True:
    try:
        t = token()
        me = md("meta-data/instance-id", t)
        notice = json.loads(md("meta-data/spot/instance-action", t))
        if notice != seen:
            body = json.dumps({"instance_id": me, **notice}).encode()
            urllib.request.urlopen(urllib.request.Request(
                NOTICE_URL, data=body, headers={"content-type": "application/json"}), timeout=2)
            seen = notice
    except Exception:
        pass  # 404: no notice; the control plane down: report again next poll
    time.sleep(POLL_S)
'''


def instance_script(spec: Spec, instance_type: str, host_address: str) -> str:
    """A fleet instance's boot script: the aws backend's when it exists, else the fallback."""
    aws = spec.cfg.aws
    if backend_script is not None:
        return backend_script(spec.name, spec.bucket, region=spec.region,
                              triton_port=aws.triton_port, spot_poll_s=aws.spot_poll_s)
    return fallback_instance_script(spec, instance_type, host_address)


def fallback_instance_script(spec: Spec, instance_type: str, host_address: str) -> str:
    """Boot a fleet instance of ``instance_type``: Triton on ``s3://<bucket>/<name>/models/``
    and the spot agent reporting to ``http://<host_address>:<notice_port>/notice``."""
    aws = spec.cfg.aws
    agent = (f"NOTICE_URL = {json.dumps(f'http://{host_address}:{aws.notice_port}/notice')}\n"
             f"POLL_S = {aws.spot_poll_s!r}\n{_AGENT}")
    return "\n".join([
        "#!/bin/bash",
        f"# mark fleet instance: deployment {spec.name}, type {instance_type}",
        "set -euxo pipefail",
        _INSTALL.format(region=spec.region, bucket=spec.bucket, name=spec.name),
        "mkdir -p /opt/mark/models",
        f"aws s3 sync --region {spec.region} --delete s3://{spec.bucket}/{spec.name}/models/ "
        "/opt/mark/models/",
        f"cat > /opt/mark/spot_agent.py <<'AGENT'\n{agent}AGENT",
        "nohup python3.11 /opt/mark/spot_agent.py >/var/log/mark-spot-agent.log 2>&1 &",
        # the tritonserver that ships inside the nvidia-pytriton wheel (a mark dependency)
        "TRITON=$(python3.11 -c 'import pytriton, pathlib; "
        "print(pathlib.Path(pytriton.__file__).parent / \"tritonserver\")')",
        f"exec env LD_LIBRARY_PATH=$TRITON/external_libs:$TRITON/lib "
        f"$TRITON/bin/tritonserver --model-repository=/opt/mark/models "
        f"--backend-directory=$TRITON/backends --http-port={aws.triton_port} "
        "--allow-grpc=false --allow-metrics=false >/var/log/tritonserver.log 2>&1",
        "",
    ])


def host_script(spec: Spec, redis_url: str | None) -> str:
    """Boot a front-end host: ``mark provisioner`` (leader by the Redis lock: with several
    hosts one runs the control loop, the others stand by) and ``mark up --frontend-only`` as
    systemd services, sharing state in ``redis_url`` (None: a Redis on this host)."""
    config = json.dumps(spec.host_config(redis_url), indent=1, sort_keys=True)
    redis = (["dnf install -y redis6", "systemctl enable --now redis6"] if redis_url is None
             else [])
    after = " redis6.service" if redis_url is None else ""
    units = []
    for unit, args in (("mark-provisioner", "provisioner"), ("mark-frontend", "up --frontend-only")):
        units.append(
            f"cat > /etc/systemd/system/{unit}.service <<'UNIT'\n"
            f"[Unit]\nAfter=network-online.target{after}\n"
            f"[Service]\nExecStart=/usr/local/bin/mark {args} --config /etc/mark/config.json\n"
            f"Restart=always\nRestartSec=2\n[Install]\nWantedBy=multi-user.target\nUNIT")
    return "\n".join([
        "#!/bin/bash",
        f"# mark front-end host: deployment {spec.name}",
        "set -euxo pipefail",
        *redis,
        _INSTALL.format(region=spec.region, bucket=spec.bucket, name=spec.name),
        "mkdir -p /etc/mark /var/lib/mark",
        f"cat > /etc/mark/config.json <<'CONFIG'\n{config}\nCONFIG",
        *units,
        "systemctl daemon-reload",
        "systemctl enable --now mark-provisioner mark-frontend",
        f"# front end on port {shlex.quote(str(spec.cfg.frontend.port))}",
        "",
    ])
