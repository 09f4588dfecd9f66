"""Deploy steps of the highly available shape (``--ha``): the shared state on ElastiCache for
Redis, the front-end hosts in an Auto Scaling group (each runs the front end and a
provisioner; the Redis lock elects one control loop) behind an Application Load Balancer."""

from __future__ import annotations

from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from deploy.aws import userdata
from deploy.aws.clients import error_code, tag_dict
from deploy.aws.engine import Run
from deploy.aws.iam import TAG_KEY
from deploy.aws.spec import digest
from deploy.aws.steps import DIGEST, ROLE_TAG, launch_template, user_data_b64

HEALTH_PATH = "/v2/health/ready"
LISTEN_PORT = 80


def short(name: str, suffix: str, limit: int = 32) -> str:
    """``<name>-<suffix>`` within ELB's 32 characters (the tag tells deployments apart)."""
    return f"{name[: limit - len(suffix) - 1].rstrip('-')}-{suffix}"


def redis_id(name: str) -> str:
    """The replication group's id: ElastiCache ids begin with a letter."""
    return f"{name if name[0].isalpha() else 'm' + name}-redis"


def redis(run: Run, group: str) -> str:
    """A Redis replication group (a primary and a replica, failover on); its URL."""
    spec, ec = run.spec, run.aws.elasticache
    rid = redis_id(spec.name)
    try:
        (got,) = ec.describe_replication_groups(ReplicationGroupId=rid)["ReplicationGroups"]
    except ClientError as exc:
        if error_code(exc) != "ReplicationGroupNotFoundFault":
            raise
        made = run.change("redis", rid, "create", partial(
            ec.create_replication_group, ReplicationGroupId=rid, Engine="redis",
            ReplicationGroupDescription=f"mark deployment {spec.name}: shared state",
            CacheNodeType=spec.redis_node_type, NumCacheClusters=2,
            AutomaticFailoverEnabled=True, SecurityGroupIds=[group], Tags=spec.tag_list()))
        if not made:
            return run.placeholder(f"{rid} url")
        got = ec.describe_replication_groups(ReplicationGroupId=rid)["ReplicationGroups"][0]
    else:
        if tag_dict(ec.list_tags_for_resource(ResourceName=got["ARN"])["TagList"]).get(
                TAG_KEY) != spec.name:
            raise RuntimeError(f"replication group {rid} exists without the tag "
                               f"{TAG_KEY}={spec.name}")
        same = got.get("CacheNodeType") == spec.redis_node_type
        run.change("redis", rid, "ok" if same else "update", partial(
            ec.modify_replication_group, ReplicationGroupId=rid,
            CacheNodeType=spec.redis_node_type, ApplyImmediately=True))
    groups = got.get("NodeGroups") or [{}]
    endpoint = groups[0].get("PrimaryEndpoint") or {}
    if not endpoint.get("Address"):  # still creating: the address comes with it
        return f"redis://{rid}.pending:6379/0"
    url = f"redis://{endpoint['Address']}:{endpoint.get('Port', 6379)}/0"
    run.state["redis"] = {"id": rid, "url": url}
    return url


def _subnets(run: Run, vpc: str) -> list[str]:
    subnets = run.aws.ec2.describe_subnets(Filters=[
        {"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}])
    return sorted(s["SubnetId"] for s in subnets["Subnets"])


def _elb_tags(run: Run, arn: str) -> dict[str, str]:
    (desc,) = run.aws.elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"]
    return tag_dict(desc["Tags"])


def target_group(run: Run, vpc: str) -> str:
    spec, elb = run.spec, run.aws.elbv2
    name = short(spec.name, "fe")
    try:
        (tg,) = elb.describe_target_groups(Names=[name])["TargetGroups"]
    except ClientError as exc:
        if error_code(exc) != "TargetGroupNotFound":
            raise
        made = run.change("target-group", name, "create", partial(
            elb.create_target_group, Name=name, Protocol="HTTP", Port=spec.cfg.frontend.port,
            VpcId=vpc, TargetType="instance", HealthCheckPath=HEALTH_PATH,
            Tags=spec.tag_list()))
        return str(made["TargetGroups"][0]["TargetGroupArn"]) if made else run.placeholder(name)
    if _elb_tags(run, tg["TargetGroupArn"]).get(TAG_KEY) != spec.name:
        raise RuntimeError(f"target group {name} exists without the tag {TAG_KEY}={spec.name}")
    same = tg["Port"] == spec.cfg.frontend.port
    run.change("target-group", name, "ok" if same else "update",
               detail="" if same else "the front end's port changed: tear down and deploy")
    return str(tg["TargetGroupArn"])


def load_balancer(run: Run, vpc: str, group: str, tg_arn: str) -> None:
    spec, elb = run.spec, run.aws.elbv2
    name = short(spec.name, "alb")
    try:
        (lb,) = elb.describe_load_balancers(Names=[name])["LoadBalancers"]
    except ClientError as exc:
        if error_code(exc) != "LoadBalancerNotFound":
            raise

        def create() -> dict[str, Any]:
            made = elb.create_load_balancer(Name=name, Subnets=_subnets(run, vpc),
                                            SecurityGroups=[group], Scheme="internet-facing",
                                            Type="application", Tags=spec.tag_list())
            out = dict(made["LoadBalancers"][0])
            elb.create_listener(LoadBalancerArn=out["LoadBalancerArn"], Protocol="HTTP",
                                Port=LISTEN_PORT, DefaultActions=[
                                    {"Type": "forward", "TargetGroupArn": tg_arn}])
            return out

        lb = run.change("load-balancer", name, "create", create) or {}
    else:
        if _elb_tags(run, lb["LoadBalancerArn"]).get(TAG_KEY) != spec.name:
            raise RuntimeError(f"load balancer {name} exists without the tag {TAG_KEY}={spec.name}")
        run.change("load-balancer", name, "ok")
    if lb.get("DNSName"):
        run.state["url"] = f"http://{lb['DNSName']}:{LISTEN_PORT}"


def frontends(run: Run, vpc: str, group: str, tg_arn: str, redis_url: str) -> None:
    """The front-end hosts' template and their Auto Scaling group."""
    spec, asg = run.spec, run.aws.autoscaling
    name = f"{spec.name}-frontend"
    tags = spec.tag_list(Name=name, **{ROLE_TAG: "frontend"})
    data = {"ImageId": spec.ami, "InstanceType": spec.host_type,
            "IamInstanceProfile": {"Name": spec.role("host")}, "SecurityGroupIds": [group],
            "UserData": user_data_b64(userdata.host_script(spec, redis_url)),
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}]}
    lt_id = launch_template(run, name, data, "frontend")
    conf = {"LaunchTemplate": {"LaunchTemplateId": lt_id, "Version": "$Default"},
            "MinSize": spec.frontends, "MaxSize": spec.frontends,
            "DesiredCapacity": spec.frontends, "VPCZoneIdentifier": ",".join(_subnets(run, vpc)),
            "HealthCheckType": "ELB", "HealthCheckGracePeriod": 600}
    d = digest({**conf, "template": digest(data)})
    asg_tags = [{"Key": t["Key"], "Value": t["Value"], "PropagateAtLaunch": True,
                 "ResourceId": name, "ResourceType": "auto-scaling-group"}
                for t in spec.tag_list(**{ROLE_TAG: "frontend"})]
    digest_tag = {"Key": DIGEST, "Value": d, "PropagateAtLaunch": False, "ResourceId": name,
                  "ResourceType": "auto-scaling-group"}
    found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not found:
        run.change("autoscaling-group", name, "create", partial(
            asg.create_auto_scaling_group, AutoScalingGroupName=name, TargetGroupARNs=[tg_arn],
            Tags=[*asg_tags, digest_tag], **conf))
        return
    if tag_dict(found[0]["Tags"]).get(TAG_KEY) != spec.name:
        raise RuntimeError(f"Auto Scaling group {name} exists without the tag {TAG_KEY}={spec.name}")

    def update() -> None:
        asg.update_auto_scaling_group(AutoScalingGroupName=name, **conf)
        asg.create_or_update_tags(Tags=[digest_tag])

    same = tag_dict(found[0]["Tags"]).get(DIGEST) == d
    # running hosts keep what they booted with; new ones boot from the template's new version
    run.change("autoscaling-group", name, "ok" if same else "update", update,
               detail="" if same else f"replace running hosts: aws autoscaling "
               f"start-instance-refresh --auto-scaling-group-name {name}")
