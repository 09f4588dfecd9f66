"""``mark deploy aws`` / ``mark teardown aws`` against moto in server mode on loopback.

- deploy creates every resource tagged ``mark:deployment=NAME``; a second deploy changes
  nothing (its plan: 0 to create/update/delete; every describe answers the same); a dry run
  changes nothing; an edited configuration updates only what it touches;
- the deployed IAM documents allow the provisioner's actions on the deployment's tagged
  resources and deny them on untagged ones, shown with the policy evaluator
  (``deploy/aws/policy.py``: moto does not evaluate resource ARNs or conditions for EC2), and
  with moto's own IAM enforcement for what it does evaluate (S3 object ARNs, actions);
- teardown removes every tagged resource (a fleet instance the aws backend launched too),
  leaves every untagged one and another deployment's in place, and a second run finds nothing.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from deploy.aws import Clients, evaluate, make_spec, run, teardown
from deploy.aws import iam as policies
from mark.cli import main
from mark.core.config import MarkConfig, load_config
from tests.servers import moto_server

REGION = "us-east-1"
TAG = "mark:deployment"
CONFIG = """\
models:
  - {name: identity, kind: identity, instance_types: [c5.large, m5.large]}
  - {name: incep, kind: profiled, profile: inception-v3, instance_types: [c5.large]}
"""


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": REGION}.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        with moto_server() as url:
            yield url


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("deploy") / "mark.yaml"
    p.write_text(CONFIG)
    return p


def cli(*args: str) -> int:
    return main(list(args))


def deploy_args(url: str, name: str, config: Path, *extra: str) -> list[str]:
    return ["deploy", "aws", "--name", name, "--endpoint-url", url, "--config", str(config), *extra]


def client(url: str, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=url)


def _tags(tags: Any) -> dict[str, str]:
    if isinstance(tags, dict):
        return tags
    return {t["Key"]: t["Value"] for t in tags or []}


def inventory(url: str) -> dict[str, Any]:
    """Every resource of the kinds deploy makes, with its tags and what changes on update."""
    ec2, iam, s3, lam = (client(url, s) for s in ("ec2", "iam", "s3", "lambda"))
    inv: dict[str, Any] = {}
    inv["instances"] = {i["InstanceId"]: (_tags(i.get("Tags")), i["State"]["Name"])
                        for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                        if i["State"]["Name"] != "terminated"}
    inv["launch_templates"] = {lt["LaunchTemplateName"]: (_tags(lt.get("Tags")),
                                                          lt["LatestVersionNumber"])
                               for lt in ec2.describe_launch_templates()["LaunchTemplates"]}
    inv["security_groups"] = {
        g["GroupName"]: (_tags(g.get("Tags")), json.dumps(g["IpPermissions"], sort_keys=True))
        for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"}
    inv["roles"] = {r["RoleName"]: _tags(iam.list_role_tags(RoleName=r["RoleName"])["Tags"])
                    for r in iam.list_roles()["Roles"]}
    inv["policies"] = {p["PolicyName"]: (_tags(iam.list_policy_tags(PolicyArn=p["Arn"])["Tags"]),
                                         p["DefaultVersionId"])
                       for p in iam.list_policies(Scope="Local")["Policies"]}
    inv["instance_profiles"] = {
        p["InstanceProfileName"]: _tags(iam.get_instance_profile(
            InstanceProfileName=p["InstanceProfileName"])["InstanceProfile"].get("Tags"))
        for p in iam.list_instance_profiles()["InstanceProfiles"]}
    inv["functions"] = {f["FunctionName"]: (_tags(lam.list_tags(Resource=f["FunctionArn"])["Tags"]),
                                            f["LastModified"])
                        for f in lam.list_functions()["Functions"]}
    buckets = {}
    for b in s3.list_buckets()["Buckets"]:
        try:
            btags = _tags(s3.get_bucket_tagging(Bucket=b["Name"])["TagSet"])
        except ClientError:
            btags = {}
        objs = {o["Key"]: o["ETag"] for o in
                s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])}
        buckets[b["Name"]] = (btags, objs)
    inv["buckets"] = buckets
    elb, asg, ec = (client(url, s) for s in ("elbv2", "autoscaling", "elasticache"))
    lbs = elb.describe_load_balancers()["LoadBalancers"]
    tgs = elb.describe_target_groups()["TargetGroups"]
    arns = [x["LoadBalancerArn"] for x in lbs] + [x["TargetGroupArn"] for x in tgs]
    elb_tags = ({d["ResourceArn"]: _tags(d["Tags"])
                 for d in elb.describe_tags(ResourceArns=arns)["TagDescriptions"]} if arns else {})
    inv["load_balancers"] = {x["LoadBalancerName"]: (elb_tags.get(x["LoadBalancerArn"], {}),
                                                     x["DNSName"]) for x in lbs}
    inv["target_groups"] = {x["TargetGroupName"]: (elb_tags.get(x["TargetGroupArn"], {}), x["Port"])
                            for x in tgs}
    inv["autoscaling_groups"] = {
        g["AutoScalingGroupName"]: (_tags(g["Tags"]), g["DesiredCapacity"],
                                    g["LaunchTemplate"]["LaunchTemplateId"])
        for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]}
    inv["redis"] = {g["ReplicationGroupId"]: (
        _tags(ec.list_tags_for_resource(ResourceName=g["ARN"])["TagList"]), g["CacheNodeType"])
        for g in ec.describe_replication_groups()["ReplicationGroups"]
        if g["Status"] != "deleting"}  # on its way out (moto keeps it so for good)
    return inv


def tagged(inv: dict[str, Any], name: str) -> dict[str, list[str]]:
    """The resources in ``inv`` carrying ``mark:deployment=name``, by kind."""
    out: dict[str, list[str]] = {}
    for kind, items in inv.items():
        for key, value in items.items():
            tags = value[0] if isinstance(value, tuple) else value
            if tags.get(TAG) == name:
                out.setdefault(kind, []).append(key)
    return out


# -- deploy ----------------------------------------------------------------------------------

def test_a_dry_run_changes_nothing_and_plans_every_create(moto_url: str, config_file: Path,
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    before = inventory(moto_url)
    out = tmp_path / "plan.json"
    assert cli(*deploy_args(moto_url, "dry", config_file, "--dry-run", "--json", str(out))) == 0
    assert inventory(moto_url) == before
    printed = capsys.readouterr().out
    assert "dry run: nothing changed" in printed
    plan = json.loads(out.read_text())["plan"]
    assert plan and {c["action"] for c in plan} == {"create"}
    kinds = {c["kind"] for c in plan}
    assert kinds >= {"iam-role", "iam-policy", "instance-profile", "security-group",
                     "ingress-rules", "s3-bucket", "s3-object", "function", "host",
                     "launch-template"}
    assert {c["name"] for c in plan if c["kind"] == "launch-template"} == {"dry-c5-large",
                                                                          "dry-m5-large"}


def test_deploy_creates_everything_tagged_and_a_second_deploy_changes_nothing(
        moto_url: str, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "first.json"
    assert cli(*deploy_args(moto_url, "alpha", config_file, "--json", str(out))) == 0
    first = json.loads(out.read_text())
    assert "0 unchanged" in capsys.readouterr().out
    inv = inventory(moto_url)
    mine = tagged(inv, "alpha")
    assert sorted(mine["roles"]) == ["alpha-function", "alpha-host", "alpha-instance"]
    assert sorted(mine["policies"]) == ["alpha-function", "alpha-host", "alpha-instance"]
    assert sorted(mine["instance_profiles"]) == ["alpha-host", "alpha-instance"]
    assert sorted(mine["security_groups"]) == ["alpha-frontend", "alpha-instances"]
    assert sorted(mine["launch_templates"]) == ["alpha-c5-large", "alpha-m5-large"]
    assert sorted(mine["functions"]) == ["alpha-mark-identity", "alpha-mark-incep"]
    assert len(mine["instances"]) == 1  # the front-end host
    (bucket,) = mine["buckets"]
    keys = set(inv["buckets"][bucket][1])
    assert {"alpha/models/identity/config.pbtxt", "alpha/models/incep/config.pbtxt",
            "alpha/dist/mark-src.tar.gz"} <= keys
    assert all(k.startswith("alpha/") for k in keys)
    # --json: what exists
    assert first["bucket"] == bucket and first["host"]["instance_id"] in mine["instances"]
    assert set(first["functions"]) == set(mine["functions"])
    assert first["launch_templates"]["c5.large"]["name"] == "alpha-c5-large"
    assert first["security_groups"]["alpha-frontend"].startswith("sg-")

    # the instances' group admits Triton's port from the front end's group alone
    ec2 = client(moto_url, "ec2")
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
        GroupNames=["alpha-frontend", "alpha-instances"])["SecurityGroups"]}
    (rule,) = groups["alpha-instances"]["IpPermissions"]
    assert rule["FromPort"] == 8000 and not rule["IpRanges"]
    assert [p["GroupId"] for p in rule["UserIdGroupPairs"]] == [groups["alpha-frontend"]["GroupId"]]

    # the host boots the front end and the provisioner on a valid configuration: shared
    # state in its Redis, the aws backend with these templates, the deployment's functions
    (host,) = mine["instances"]
    data = ec2.describe_instance_attribute(InstanceId=host, Attribute="userData")
    script = base64.b64decode(data["UserData"]["Value"]).decode()
    raw = script.split("<<'CONFIG'\n", 1)[1].split("\nCONFIG\n", 1)[0]
    host_cfg = MarkConfig.model_validate_json(raw)
    assert (host_cfg.state.backend, host_cfg.state.url) == ("redis", "redis://127.0.0.1:6379/0")
    assert host_cfg.fleet.backend == "aws" and host_cfg.aws.deployment == "alpha"
    assert host_cfg.aws.launch_templates == {"c5.large": "alpha-c5-large", "m5.large": "alpha-m5-large"}
    assert host_cfg.faas.function_prefix == "alpha-mark-" and host_cfg.faas.endpoint_url is None
    assert "mark provisioner" in script and "mark up --frontend-only" in script

    second = tmp_path / "second.json"
    assert cli(*deploy_args(moto_url, "alpha", config_file, "--json", str(second))) == 0
    assert "0 to create, 0 to update, 0 to delete" in capsys.readouterr().out
    assert inventory(moto_url) == inv
    again = json.loads(second.read_text())
    assert {c["action"] for c in again["plan"]} == {"ok"}
    assert {k: v for k, v in again.items() if k not in ("plan", "dry_run")} == \
        {k: v for k, v in first.items() if k not in ("plan", "dry_run")}


def test_an_edited_configuration_updates_only_what_it_touches(moto_url: str, tmp_path: Path) -> None:
    cfg_file = tmp_path / "mark.yaml"
    cfg_file.write_text(CONFIG)
    assert cli(*deploy_args(moto_url, "beta", cfg_file)) == 0
    cfg_file.write_text(CONFIG + "faas: {timeout_s: 60}\n")
    aws = Clients.connect(REGION, moto_url)
    spec = make_spec(load_config(cfg_file), aws, "beta", REGION)
    plan = run(spec, aws, apply=False)
    changed = {(c.kind, c.name, c.action) for c in plan.changes if c.action != "ok"}
    # the functions' timeout, and the host (its configuration names the timeout)
    assert changed == {("function", "beta-mark-identity", "update"),
                       ("function", "beta-mark-incep", "update"),
                       ("host", "beta-frontend", "update")}
    run(spec, aws, apply=True)
    conf = client(moto_url, "lambda").get_function(FunctionName="beta-mark-identity")["Configuration"]
    assert conf["Timeout"] == 60
    assert {c.action for c in run(spec, aws, apply=False).changes} == {"ok"}
    hosts = [i for r in client(moto_url, "ec2").describe_instances(Filters=[
        {"Name": "tag:mark:role", "Values": ["frontend"]}, {"Name": f"tag:{TAG}", "Values": ["beta"]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
        for i in r["Instances"]]
    assert len(hosts) == 1  # the old host was replaced, not kept


# -- IAM: evaluated ------------------------------------------------------------------------------

def deployed_policy(url: str, name: str, kind: str) -> dict[str, Any]:
    iam = client(url, "iam")
    arn = f"arn:aws:iam::123456789012:policy/mark/{name}/{name}-{kind}"
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    return doc if isinstance(doc, dict) else json.loads(doc)


def run_instances(policy: dict[str, Any], request_tags: dict[str, str],
                  template_tags: dict[str, str], group_tags: dict[str, str]) -> str:
    """RunInstances as EC2 authorises it: every resource it touches must be allowed."""
    ec2 = f"arn:aws:ec2:{REGION}:123456789012"
    ctx = {f"aws:RequestTag/{k}": v for k, v in request_tags.items()}
    checks = [(f"{ec2}:instance/*", ctx), (f"{ec2}:volume/*", ctx),
              (f"{ec2}:network-interface/*", ctx),
              (f"{ec2}:launch-template/lt-1", {f"ec2:ResourceTag/{k}": v for k, v in template_tags.items()}),
              (f"{ec2}:security-group/sg-1", {f"ec2:ResourceTag/{k}": v for k, v in group_tags.items()}),
              (f"arn:aws:ec2:{REGION}::image/ami-1", {}), (f"{ec2}:subnet/subnet-1", {})]
    verdicts = {evaluate([policy], "ec2:RunInstances", arn, c) for arn, c in checks}
    return "allow" if verdicts == {"allow"} else "deny"


def test_the_deployed_host_policy_allows_only_the_deployments_tagged_resources(
        moto_url: str, config_file: Path) -> None:
    assert cli(*deploy_args(moto_url, "alpha", config_file)) == 0
    host = deployed_policy(moto_url, "alpha", "host")
    ours, other = {TAG: "alpha"}, {TAG: "someone-else"}
    assert run_instances(host, ours, ours, ours) == "allow"
    assert run_instances(host, {}, ours, ours) == "deny"          # untagged launch
    assert run_instances(host, other, ours, ours) == "deny"       # another deployment's tag
    assert run_instances(host, ours, {}, ours) == "deny"          # a template not ours
    assert run_instances(host, ours, ours, {}) == "deny"          # a group not ours

    inst = f"arn:aws:ec2:{REGION}:123456789012:instance/i-1"
    for action in ("ec2:TerminateInstances", "ec2:StopInstances"):
        assert evaluate([host], action, inst, {f"ec2:ResourceTag/{TAG}": "alpha"}) == "allow"
        assert evaluate([host], action, inst, {}) == "implicit-deny"
        assert evaluate([host], action, inst, {f"ec2:ResourceTag/{TAG}": "beta"}) == "implicit-deny"
    assert evaluate([host], "ec2:CreateTags", inst, {f"aws:RequestTag/{TAG}": "alpha"}) == "allow"
    assert evaluate([host], "ec2:CreateTags", inst, {}) == "implicit-deny"
    assert evaluate([host], "ec2:DescribeInstances", "*") == "allow"

    passed = {"iam:PassedToService": "ec2.amazonaws.com"}
    role = "arn:aws:iam::123456789012:role/mark/alpha/alpha-"
    assert evaluate([host], "iam:PassRole", role + "instance", passed) == "allow"
    assert evaluate([host], "iam:PassRole", role + "host", passed) == "implicit-deny"
    assert evaluate([host], "iam:PassRole", role + "instance",
                    {"iam:PassedToService": "lambda.amazonaws.com"}) == "implicit-deny"

    fn = f"arn:aws:lambda:{REGION}:123456789012:function:"
    assert evaluate([host], "lambda:InvokeFunction", fn + "alpha-mark-identity") == "allow"
    assert evaluate([host], "lambda:InvokeFunction", fn + "beta-mark-identity") == "implicit-deny"
    assert evaluate([host], "lambda:UpdateFunctionCode", fn + "alpha-mark-identity") == "implicit-deny"
    for action in ("iam:CreateRole", "ec2:DeleteSecurityGroup", "s3:PutObject"):
        assert evaluate([host], action, "*") == "implicit-deny"


def test_the_deployed_instance_policy_reads_only_the_deployments_prefix(
        moto_url: str, config_file: Path) -> None:
    assert cli(*deploy_args(moto_url, "alpha", config_file)) == 0
    inst = deployed_policy(moto_url, "alpha", "instance")
    bucket = "alpha-mark-123456789012-us-east-1"
    assert evaluate([inst], "s3:GetObject", f"arn:aws:s3:::{bucket}/alpha/models/x") == "allow"
    assert evaluate([inst], "s3:GetObject", f"arn:aws:s3:::{bucket}/beta/models/x") == "implicit-deny"
    assert evaluate([inst], "s3:GetObject", "arn:aws:s3:::other/alpha/models/x") == "implicit-deny"
    assert evaluate([inst], "s3:PutObject", f"arn:aws:s3:::{bucket}/alpha/models/x") == "implicit-deny"
    assert evaluate([inst], "s3:ListBucket", f"arn:aws:s3:::{bucket}",
                    {"s3:prefix": "alpha/models/"}) == "allow"
    assert evaluate([inst], "s3:ListBucket", f"arn:aws:s3:::{bucket}",
                    {"s3:prefix": "beta/"}) == "implicit-deny"
    assert evaluate([inst], "ec2:RunInstances", "*") == "implicit-deny"


def test_moto_enforcing_iam_allows_and_denies_what_it_can_evaluate() -> None:
    """A second moto with IAM enforcement on: a user holding the instance and host policies
    reads the deployment's prefix and nothing else, and may not write or touch IAM."""
    name, bucket = "gamma", "gamma-bucket"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with moto_server() as url, pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        iam, s3 = client(url, "iam"), client(url, "s3")
        iam.create_user(UserName="provisioner")
        docs = [policies.instance_policy(bucket, name),
                policies.host_policy(name, REGION, "123456789012", bucket,
                                     f"arn:aws:iam::123456789012:role/mark/{name}/{name}-instance",
                                     f"{name}-mark-")]
        for i, doc in enumerate(docs):
            iam.put_user_policy(UserName="provisioner", PolicyName=f"p{i}",
                                PolicyDocument=json.dumps(doc))
        key = iam.create_access_key(UserName="provisioner")["AccessKey"]
        s3.create_bucket(Bucket=bucket)
        for k in (f"{name}/models/m/config.pbtxt", "other/models/m/config.pbtxt"):
            s3.put_object(Bucket=bucket, Key=k, Body=b"x")
        # enforcement on from now (a form content type would hide the body from moto)
        urllib.request.urlopen(urllib.request.Request(
            f"{url}/moto-api/reset-auth", data=b"0", method="POST",
            headers={"content-type": "text/plain"})).close()
        user = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                     aws_secret_access_key=key["SecretAccessKey"],
                                     region_name=REGION)
        us3 = user.client("s3", endpoint_url=url)
        assert us3.get_object(Bucket=bucket, Key=f"{name}/models/m/config.pbtxt")["Body"].read() == b"x"
        for call in (lambda: us3.get_object(Bucket=bucket, Key="other/models/m/config.pbtxt"),
                     lambda: us3.put_object(Bucket=bucket, Key=f"{name}/models/x", Body=b"y"),
                     lambda: user.client("iam", endpoint_url=url).list_users()):
            with pytest.raises(ClientError) as err:
                call()
            assert err.value.response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException")
        user.client("ec2", endpoint_url=url).describe_instances()  # Resource "*": allowed


# -- teardown -----------------------------------------------------------------------------------

def make_bystanders(url: str) -> None:
    """Untagged resources of every kind deploy makes, and one fleet instance of the aws
    backend (tagged, launched from the deployment's template)."""
    ec2, iam, s3, lam = (client(url, s) for s in ("ec2", "iam", "s3", "lambda"))
    ami = client(url, "ssm").get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]
    ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                      TagSpecifications=[{"ResourceType": "instance", "Tags": [
                          {"Key": TAG, "Value": "alphabet"}]}])  # a prefix of no concern
    ec2.create_launch_template(LaunchTemplateName="alpha-c5-xlarge",
                               LaunchTemplateData={"ImageId": ami, "InstanceType": "c5.xlarge"})
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    ec2.create_security_group(GroupName="alpha-untagged", Description="x", VpcId=vpc)
    trust = json.dumps(policies.trust_policy("lambda.amazonaws.com"))
    iam.create_role(RoleName="alpha-other", Path="/mark/alpha/", AssumeRolePolicyDocument=trust)
    iam.create_policy(PolicyName="alpha-other", Path="/mark/alpha/",
                      PolicyDocument=json.dumps(policies.function_policy(REGION, "1", "x")))
    iam.create_instance_profile(InstanceProfileName="alpha-other", Path="/mark/alpha/")
    s3.create_bucket(Bucket="bystander")
    s3.put_object(Bucket="bystander", Key="alpha/models/keep", Body=b"k")
    lam.create_function(FunctionName="alpha-mark-bystander",
                        Role="arn:aws:iam::123456789012:role/mark/alpha/alpha-other",
                        PackageType="Image", Code={"ImageUri": "1.dkr.ecr.us-east-1.amazonaws.com/x:1"})
    # the aws backend's fleet instance: from the deployment's template, carrying the tag
    ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateName": "alpha-c5-large"},
                      TagSpecifications=[{"ResourceType": "instance", "Tags": [
                          {"Key": TAG, "Value": "alpha"}, {"Key": "mark:role", "Value": "instance"}]}])


def test_teardown_removes_every_tagged_resource_and_nothing_else(
        moto_url: str, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(*deploy_args(moto_url, "alpha", config_file)) == 0
    make_bystanders(moto_url)
    before = inventory(moto_url)
    assert len(tagged(before, "alpha")["instances"]) == 2  # the host and a fleet instance
    capsys.readouterr()
    assert cli("teardown", "aws", "--name", "alpha", "--endpoint-url", moto_url) == 0
    assert "resources removed" in capsys.readouterr().out
    after = inventory(moto_url)
    assert tagged(after, "alpha") == {}
    for kind, items in before.items():
        kept = {k: v for k, v in items.items()
                if (v[0] if isinstance(v, tuple) else v).get(TAG) != "alpha"}
        assert {k: after[kind].get(k) for k in kept} == kept, kind
    assert "alpha-other" in after["roles"] and "alpha-untagged" in after["security_groups"]
    assert after["buckets"]["bystander"][1].keys() == {"alpha/models/keep"}
    # other deployments (beta, from an earlier test) are untouched
    assert tagged(after, "beta") == tagged(before, "beta") != {}

    assert cli("teardown", "aws", "--name", "alpha", "--endpoint-url", moto_url) == 0
    assert "nothing tagged mark:deployment=alpha found" in capsys.readouterr().out
    assert inventory(moto_url) == after


def test_a_configured_bucket_loses_only_the_deployments_objects(moto_url: str, config_file: Path) -> None:
    s3 = client(moto_url, "s3")
    s3.create_bucket(Bucket="shared-models")
    s3.put_object(Bucket="shared-models", Key="delta/notes.txt", Body=b"mine, untagged")
    s3.put_object(Bucket="shared-models", Key="delta/models/extra.txt", Body=b"mine too")
    s3.put_object(Bucket="shared-models", Key="elsewhere/x", Body=b"x")
    assert cli(*deploy_args(moto_url, "delta", config_file, "--bucket", "shared-models")) == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="shared-models")["Contents"]}
    assert {"delta/models/identity/config.pbtxt", "delta/notes.txt", "delta/models/extra.txt"} <= keys
    assert client(moto_url, "iam").get_role(RoleName="delta-instance")["Role"]["Tags"]
    aws = Clients.connect(REGION, moto_url)
    removed = teardown(aws, "delta")
    assert ("s3-bucket", "shared-models") not in removed
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="shared-models")["Contents"]}
    assert keys == {"delta/notes.txt", "delta/models/extra.txt", "elsewhere/x"}
    assert teardown(aws, "delta") == []


def test_a_bad_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("teardown", "aws", "--name", "Bad_Name") == 2
    assert "--name 'Bad_Name'" in capsys.readouterr().err


# -- the highly available shape -------------------------------------------------------------

def test_ha_puts_front_ends_behind_a_load_balancer_with_redis_on_elasticache(
        moto_url: str, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = inventory(moto_url)
    assert cli(*deploy_args(moto_url, "eps", config_file, "--ha", "--dry-run")) == 0
    assert inventory(moto_url) == before
    out = tmp_path / "ha.json"
    assert cli(*deploy_args(moto_url, "eps", config_file, "--ha", "--frontends", "3",
                            "--json", str(out))) == 0
    inv = inventory(moto_url)
    mine = tagged(inv, "eps")
    assert mine["load_balancers"] == ["eps-alb"] and mine["target_groups"] == ["eps-fe"]
    assert mine["autoscaling_groups"] == ["eps-frontend"] and mine["redis"] == ["eps-redis"]
    assert inv["autoscaling_groups"]["eps-frontend"][1] == 3
    assert sorted(mine["launch_templates"]) == ["eps-c5-large", "eps-frontend", "eps-m5-large"]
    assert len(mine["instances"]) == 3  # the group's hosts carry the tag (propagated)
    state = json.loads(out.read_text())
    assert state["url"].startswith("http://eps-alb") and state["redis"]["url"].startswith("redis://")
    # the hosts share the ElastiCache Redis: their boot script's configuration names it
    lt = client(moto_url, "ec2").describe_launch_template_versions(
        LaunchTemplateName="eps-frontend", Versions=["$Default"])["LaunchTemplateVersions"][0]
    script = base64.b64decode(lt["LaunchTemplateData"]["UserData"]).decode()
    assert state["redis"]["url"] in script and "redis6" not in script
    # the front ends' port admits the load balancer's group, not the world
    ec2 = client(moto_url, "ec2")
    groups = {g["GroupName"]: g for g in ec2.describe_security_groups(
        Filters=[{"Name": f"tag:{TAG}", "Values": ["eps"]}])["SecurityGroups"]}
    (public,) = [p for p in groups["eps-frontend"]["IpPermissions"] if p["FromPort"] == 8080]
    assert not public["IpRanges"]
    assert [g["GroupId"] for g in public["UserIdGroupPairs"]] == [groups["eps-alb"]["GroupId"]]

    capsys.readouterr()
    assert cli(*deploy_args(moto_url, "eps", config_file, "--ha", "--frontends", "3")) == 0
    assert "0 to create, 0 to update, 0 to delete" in capsys.readouterr().out
    assert inventory(moto_url) == inv

    removed = teardown(Clients.connect(REGION, moto_url), "eps")
    assert {k for k, _ in removed} >= {"autoscaling-group", "load-balancer", "target-group",
                                       "redis", "launch-template", "security-group"}
    after = inventory(moto_url)
    assert tagged(after, "eps") == {}
    assert teardown(Clients.connect(REGION, moto_url), "eps") == []
