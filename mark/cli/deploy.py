"""``mark deploy aws`` and ``mark teardown aws``: a deployment on AWS (code in ``deploy/aws``).

``deploy`` is an idempotent create-or-update of everything the deployment needs, each
resource tagged ``mark:deployment=NAME``; ``--dry-run`` prints the plan and changes nothing;
``--json F`` writes what exists (ids, ARNs, names). ``teardown`` removes everything tagged
with the name, in dependency order, and nothing else.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME_HELP = "the deployment's name (lowercase letters, digits, '-'): every resource is tagged " \
            "mark:deployment=NAME"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deploy", help="create or update a deployment (aws)")
    p.add_argument("target", choices=["aws"])
    p.add_argument("--name", required=True, help=NAME_HELP)
    p.add_argument("--region", help="AWS region (default: aws.region of the configuration)")
    p.add_argument("--endpoint-url", help="AWS endpoint (moto, LocalStack)")
    p.add_argument("--config", help="YAML/TOML configuration (the models, the front end's port)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--json", help="write what exists (ids, ARNs, names) to this file")
    p.add_argument("--bucket", help="an existing bucket for the model repository (default: "
                   "NAME-mark-ACCOUNT-REGION, created)")
    p.add_argument("--ami", help="image of the host and instances (default: Amazon Linux 2023)")
    p.add_argument("--host-type", default="t3.medium", help="the front-end host's type")
    p.add_argument("--image-uri", help="the function image (default: ACCOUNT.dkr.ecr.REGION."
                   "amazonaws.com/mark-fn:latest, built from deploy/lambda/Dockerfile)")
    p.add_argument("--frontend-cidr", default="0.0.0.0/0",
                   help="who may reach the front end's port")
    p.add_argument("--ha", action="store_true",
                   help="front ends in an Auto Scaling group behind an Application Load "
                   "Balancer, Redis on ElastiCache (default: one host running Redis, the front "
                   "end and the provisioner)")
    p.add_argument("--frontends", type=int, default=2, help="--ha: front-end hosts (default 2)")
    p.add_argument("--redis-node-type", default="cache.t3.micro",
                   help="--ha: the ElastiCache node type")
    p.set_defaults(func=deploy)

    t = sub.add_parser("teardown", help="remove everything of a deployment (aws)")
    t.add_argument("target", choices=["aws"])
    t.add_argument("--name", required=True, help=NAME_HELP)
    t.add_argument("--region", default="us-east-1", help="AWS region")
    t.add_argument("--endpoint-url", help="AWS endpoint (moto, LocalStack)")
    t.set_defaults(func=teardown)


def _check_name(name: str) -> None:
    from mark.core.config import AwsConfig
    from mark.core.errors import ConfigError

    try:
        AwsConfig(deployment=name)
    except ValueError as exc:
        raise ConfigError(f"--name {name!r}: lowercase letters, digits and '-', at most 31 "
                          "characters, starting with a letter or digit") from exc


def deploy(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from deploy.aws import Clients, make_spec, run
    from mark.core.config import load_config
    from mark.core.errors import MarkError

    _check_name(args.name)
    cfg = load_config(args.config)
    region = args.region or cfg.aws.region
    endpoint = args.endpoint_url or cfg.aws.endpoint_url
    try:
        aws = Clients.connect(region, endpoint)
        spec = make_spec(cfg, aws, args.name, region, bucket=args.bucket, ami=args.ami,
                         host_type=args.host_type, image_uri=args.image_uri,
                         frontend_cidr=args.frontend_cidr, ha=args.ha,
                         frontends=args.frontends, redis_node_type=args.redis_node_type)
        result = run(spec, aws, apply=not args.dry_run)
    except (BotoCoreError, ClientError, RuntimeError) as exc:
        raise MarkError(f"deploy aws {args.name}: {exc}") from exc
    if args.dry_run:
        print(f"plan for deployment {args.name} in {region} (dry run: nothing changed)")
        print(result.table())
    else:
        changed = [c for c in result.changes if c.action != "ok"]
        for c in changed:
            print(f"{c.action:<7} {c.kind:<20} {c.name}")
        print(f"deployment {args.name} in {region}: {result.summary()}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {**result.state, "plan": [c.__dict__ for c in result.changes],
             "dry_run": args.dry_run}, indent=2, default=str))
    return 0


def teardown(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from deploy.aws import Clients
    from deploy.aws import teardown as remove
    from mark.core.errors import MarkError

    _check_name(args.name)
    try:
        removed = remove(Clients.connect(args.region, args.endpoint_url), args.name)
    except (BotoCoreError, ClientError) as exc:
        raise MarkError(f"teardown aws {args.name}: {exc}") from exc
    for kind, what in removed:
        print(f"removed {kind:<18} {what}")
    if removed:
        print(f"deployment {args.name}: {len(removed)} resources removed")
    else:
        print(f"nothing tagged mark:deployment={args.name} found in {args.region}")
    return 0
