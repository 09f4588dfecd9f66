"""``mark teardown aws``: remove everything tagged ``mark:deployment=<name>``, in dependency
order, and nothing else: Auto Scaling groups, instances (the hosts and every fleet instance
the aws backend launched with the tag), launch templates, load balancers and target groups,
functions, Redis replication groups, security groups, instance profiles,
roles and policies, then the bucket's objects and the bucket (a configured bucket keeps
everything but the deployment's tagged objects). Safe to run again: the second run finds
nothing and says so."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from deploy.aws.clients import Clients, error_code, retry_eventual, tag_dict
from deploy.aws.iam import TAG_KEY
from deploy.aws.iam_steps import BUCKET_TAG
from deploy.aws.spec import ROLE_PATH

Removed = list[tuple[str, str]]  # (kind, name or id)


def _ours(tags: Any, name: str) -> bool:
    return tag_dict(tags).get(TAG_KEY) == name


def _pages(client: Any, op: str, key: str, **kw: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(op).paginate(**kw):
        yield from page.get(key, [])


def instances(aws: Clients, name: str, out: Removed) -> None:
    found = [i["InstanceId"] for r in aws.ec2.describe_instances(Filters=[
        {"Name": f"tag:{TAG_KEY}", "Values": [name]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ])["Reservations"] for i in r["Instances"]]
    if found:
        aws.ec2.terminate_instances(InstanceIds=found)
        # their groups cannot go while they hold a network interface
        aws.ec2.get_waiter("instance_terminated").wait(
            InstanceIds=found, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
    out += [("instance", i) for i in found]


def launch_templates(aws: Clients, name: str, out: Removed) -> None:
    for lt in aws.ec2.describe_launch_templates(
            Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [name]}])["LaunchTemplates"]:
        aws.ec2.delete_launch_template(LaunchTemplateId=lt["LaunchTemplateId"])
        out.append(("launch-template", lt["LaunchTemplateName"]))


def autoscaling_groups(aws: Clients, name: str, out: Removed) -> None:
    """First: a group would replace the instances terminated after it."""
    for g in _pages(aws.autoscaling, "describe_auto_scaling_groups", "AutoScalingGroups",
                    Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [name]}]):
        aws.autoscaling.delete_auto_scaling_group(AutoScalingGroupName=g["AutoScalingGroupName"],
                                                  ForceDelete=True)
        out.append(("autoscaling-group", g["AutoScalingGroupName"]))


def _elb_ours(aws: Clients, arns: list[str], name: str) -> set[str]:
    ours: set[str] = set()
    for i in range(0, len(arns), 20):  # DescribeTags takes 20 ARNs at most
        for d in aws.elbv2.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]:
            if _ours(d["Tags"], name):
                ours.add(d["ResourceArn"])
    return ours


def load_balancers(aws: Clients, name: str, out: Removed) -> None:
    """Load balancers (their listeners go with them), then target groups."""
    lbs = list(_pages(aws.elbv2, "describe_load_balancers", "LoadBalancers"))
    ours = _elb_ours(aws, [lb["LoadBalancerArn"] for lb in lbs], name)
    for lb in lbs:
        if lb["LoadBalancerArn"] in ours:
            aws.elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
            out.append(("load-balancer", lb["LoadBalancerName"]))
    if ours:
        aws.elbv2.get_waiter("load_balancers_deleted").wait(
            LoadBalancerArns=sorted(ours), WaiterConfig={"Delay": 5, "MaxAttempts": 60})
    tgs = list(_pages(aws.elbv2, "describe_target_groups", "TargetGroups"))
    ours = _elb_ours(aws, [tg["TargetGroupArn"] for tg in tgs], name)
    for tg in tgs:
        if tg["TargetGroupArn"] in ours:
            aws.elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
            out.append(("target-group", tg["TargetGroupName"]))


def redis(aws: Clients, name: str, out: Removed) -> None:
    """Replication groups; one already ``deleting`` is on its way (not counted again)."""
    ec = aws.elasticache
    for g in _pages(ec, "describe_replication_groups", "ReplicationGroups"):
        if g.get("Status") == "deleting":
            continue
        if _ours(ec.list_tags_for_resource(ResourceName=g["ARN"])["TagList"], name):
            ec.delete_replication_group(ReplicationGroupId=g["ReplicationGroupId"])
            out.append(("redis", g["ReplicationGroupId"]))


def functions(aws: Clients, name: str, out: Removed) -> None:
    for fn in _pages(aws.lambda_, "list_functions", "Functions"):
        if _ours(aws.lambda_.list_tags(Resource=fn["FunctionArn"]).get("Tags"), name):
            aws.lambda_.delete_function(FunctionName=fn["FunctionName"])
            out.append(("function", fn["FunctionName"]))


def security_groups(aws: Clients, name: str, out: Removed, timeout_s: float = 1200.0) -> None:
    groups = aws.ec2.describe_security_groups(
        Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [name]}])["SecurityGroups"]
    for g in groups:  # they refer to each other: drop the rules first
        if g["IpPermissions"]:
            aws.ec2.revoke_security_group_ingress(GroupId=g["GroupId"],
                                                  IpPermissions=g["IpPermissions"])
    for g in groups:
        # a group stays in use while a Redis being deleted (minutes) or an instance still
        # shutting down holds an interface in it
        retry_eventual(partial(aws.ec2.delete_security_group, GroupId=g["GroupId"]),
                       ("DependencyViolation", "InvalidGroup.InUse"), timeout_s=timeout_s)
        out.append(("security-group", g["GroupName"]))


def iam_resources(aws: Clients, name: str, out: Removed) -> list[str]:
    """Instance profiles, roles, policies under ``/mark/<name>/`` carrying the tag; returns
    the configured buckets the instance role names (their tagged objects go too)."""
    iam, path = aws.iam, ROLE_PATH.format(name=name)
    buckets: list[str] = []
    for ip in _pages(iam, "list_instance_profiles", "InstanceProfiles", PathPrefix=path):
        n = ip["InstanceProfileName"]
        # GetInstanceProfile carries the tags (moto lacks ListInstanceProfileTags)
        if ip["Path"] != path or not _ours(iam.get_instance_profile(
                InstanceProfileName=n)["InstanceProfile"].get("Tags"), name):
            continue
        for role in ip["Roles"]:
            iam.remove_role_from_instance_profile(InstanceProfileName=n, RoleName=role["RoleName"])
        iam.delete_instance_profile(InstanceProfileName=n)
        out.append(("instance-profile", n))
    for role in _pages(iam, "list_roles", "Roles", PathPrefix=path):
        n = role["RoleName"]
        tags = tag_dict(iam.list_role_tags(RoleName=n)["Tags"])
        if role["Path"] != path or tags.get(TAG_KEY) != name:
            continue
        if BUCKET_TAG in tags:
            buckets.append(tags[BUCKET_TAG])
        for p in iam.list_attached_role_policies(RoleName=n)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=n, PolicyArn=p["PolicyArn"])
        for p in iam.list_role_policies(RoleName=n)["PolicyNames"]:
            iam.delete_role_policy(RoleName=n, PolicyName=p)
        iam.delete_role(RoleName=n)
        out.append(("iam-role", n))
    for pol in _pages(iam, "list_policies", "Policies", Scope="Local", PathPrefix=path):
        arn = pol["Arn"]
        if pol["Path"] != path or not _ours(iam.list_policy_tags(PolicyArn=arn)["Tags"], name):
            continue
        for a in _pages(iam, "list_entities_for_policy", "PolicyRoles", PolicyArn=arn):
            iam.detach_role_policy(RoleName=a["RoleName"], PolicyArn=arn)
        for v in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
            if not v["IsDefaultVersion"]:
                iam.delete_policy_version(PolicyArn=arn, VersionId=v["VersionId"])
        iam.delete_policy(PolicyArn=arn)
        out.append(("iam-policy", pol["PolicyName"]))
    return buckets


def _bucket_tags(aws: Clients, bucket: str) -> dict[str, str]:
    try:
        return tag_dict(aws.s3.get_bucket_tagging(Bucket=bucket)["TagSet"])
    except ClientError as exc:
        if error_code(exc) in ("NoSuchTagSet", "NoSuchBucket", "AccessDenied"):
            return {}
        raise


def buckets(aws: Clients, name: str, configured: list[str], out: Removed) -> None:
    s3 = aws.s3
    for b in s3.list_buckets()["Buckets"]:
        bname = b["Name"]
        owned = _bucket_tags(aws, bname).get(TAG_KEY) == name
        if not owned and bname not in configured:
            continue
        for obj in _pages(s3, "list_objects_v2", "Contents", Bucket=bname,
                          **({} if owned else {"Prefix": f"{name}/"})):
            if not owned and not _ours(s3.get_object_tagging(
                    Bucket=bname, Key=obj["Key"])["TagSet"], name):
                continue
            s3.delete_object(Bucket=bname, Key=obj["Key"])
            out.append(("s3-object", f"s3://{bname}/{obj['Key']}"))
        if owned:
            s3.delete_bucket(Bucket=bname)
            out.append(("s3-bucket", bname))


def teardown(aws: Clients, name: str) -> Removed:
    """Remove the deployment ``name``; returns what was removed (empty: nothing was found)."""
    out: Removed = []
    autoscaling_groups(aws, name, out)
    instances(aws, name, out)
    launch_templates(aws, name, out)
    load_balancers(aws, name, out)
    functions(aws, name, out)
    redis(aws, name, out)
    security_groups(aws, name, out)
    configured = iam_resources(aws, name, out)
    buckets(aws, name, configured, out)
    return out
