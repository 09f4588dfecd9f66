"""``mark deploy aws``: build the :class:`~deploy.aws.spec.Spec` and run every step in
dependency order: IAM, network, S3, functions, the front end (one host, or with ``--ha`` Redis
on ElastiCache, a target group, the ALB, the hosts' template and Auto Scaling group), then
the fleet's launch templates."""

from __future__ import annotations

from deploy.aws import ha_steps, iam, iam_steps, steps
from deploy.aws.clients import Clients
from deploy.aws.engine import Run
from deploy.aws.spec import Spec, allowed_types
from mark.core.config import MarkConfig

AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
DEFAULT_IMAGE = "{account}.dkr.ecr.{region}.amazonaws.com/mark-fn:latest"


def make_spec(cfg: MarkConfig, aws: Clients, name: str, region: str, *,
              bucket: str | None = None, ami: str | None = None, host_type: str = "t3.medium",
              image_uri: str | None = None, frontend_cidr: str = "0.0.0.0/0",
              ha: bool = False, frontends: int = 2, redis_node_type: str = "cache.t3.micro") -> Spec:
    """The deployment ``name``: the account from STS, the AMI (default: Amazon Linux 2023
    from the public SSM parameter), the bucket (default ``<name>-mark-<account>-<region>``,
    created and deleted with the deployment) and the instance types the models may use.
    ``ha``: ``frontends`` hosts behind an ALB with Redis on ElastiCache, instead of one host
    running Redis, the front end and the provisioner."""
    account = str(aws.sts.get_caller_identity()["Account"])
    if ami is None:
        ami = str(aws.ssm.get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"])
    placement = allowed_types(cfg)
    cfg = cfg.model_copy(update={"aws": cfg.aws.model_copy(
        update={"deployment": name, "region": region})})
    return Spec(
        name=name, region=region, account=account, cfg=cfg,
        bucket=bucket or f"{name}-mark-{account}-{region}", bucket_owned=bucket is None,
        ami=ami, host_type=host_type,
        image_uri=image_uri or DEFAULT_IMAGE.format(account=account, region=region),
        frontend_cidr=frontend_cidr, one_host=not ha, frontends=frontends,
        redis_node_type=redis_node_type, types=tuple(sorted({t for ts in placement.values() for t in ts})),
        model_types=placement,
    )


def run(spec: Spec, aws: Clients, apply: bool) -> Run:
    """Plan (``apply=False``: nothing changes) or deploy ``spec``; the changes either way."""
    r = Run(spec, aws, apply)
    r.state.update(name=spec.name, region=spec.region, account=spec.account)
    bucket_tag = {} if spec.bucket_owned else {iam_steps.BUCKET_TAG: spec.bucket}
    iam_steps.role(r, "instance", "ec2.amazonaws.com", bucket_tag)
    iam_steps.policy(r, "instance", iam.instance_policy(spec.bucket, spec.name))
    iam_steps.instance_profile(r, "instance")
    iam_steps.role(r, "host", "ec2.amazonaws.com")
    iam_steps.policy(r, "host", iam.host_policy(
        spec.name, spec.region, spec.account, spec.bucket, spec.role_arn("instance"),
        spec.function_prefix))
    iam_steps.instance_profile(r, "host")
    iam_steps.role(r, "function", "lambda.amazonaws.com")
    iam_steps.policy(r, "function", iam.function_policy(spec.region, spec.account,
                                                        spec.function_prefix))

    vpc = steps.default_vpc(r)
    front = steps.security_group(r, "frontend", vpc)
    fleet = steps.security_group(r, "instances", vpc)
    aws_cfg, port = spec.cfg.aws, spec.cfg.frontend.port
    if spec.one_host:
        public = ("tcp", port, port, spec.frontend_cidr)
    else:
        alb = steps.security_group(r, "alb", vpc)
        cache = steps.security_group(r, "redis", vpc)
        public = ("tcp", port, port, alb)  # the front ends only behind the load balancer
        steps.ingress(r, f"{spec.name}-alb", alb, {
            ("tcp", ha_steps.LISTEN_PORT, ha_steps.LISTEN_PORT, spec.frontend_cidr)})
        steps.ingress(r, f"{spec.name}-redis", cache, {("tcp", 6379, 6379, front)})
    steps.ingress(r, f"{spec.name}-frontend", front, {
        public, ("tcp", aws_cfg.notice_port, aws_cfg.notice_port, fleet)})
    steps.ingress(r, f"{spec.name}-instances", fleet, {
        ("tcp", aws_cfg.triton_port, aws_cfg.triton_port, front)})

    steps.bucket(r)
    steps.objects(r)
    steps.functions(r)
    if spec.one_host:
        address = steps.host(r, front)
    else:
        url = ha_steps.redis(r, cache)
        tg = ha_steps.target_group(r, vpc)
        ha_steps.load_balancer(r, vpc, alb, tg)
        ha_steps.frontends(r, vpc, front, tg, url)
        address = ""  # the aws backend writes each launch's notice URL (the leader's)
    steps.launch_templates(r, fleet, address)
    return r
