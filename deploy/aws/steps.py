"""Deploy steps for the network, the S3 model repository, the launch templates, the
functions and the front-end host. Each finds its resource by name and the deployment's tag,
and records a :class:`~deploy.aws.engine.Change`; resources whose spec is not readable back
in one comparable form (launch templates, functions, the host) carry ``mark:digest``, a hash
of what they were made from."""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deploy.aws import userdata
from deploy.aws.clients import error_code, retry_eventual, tag_dict
from deploy.aws.engine import Action, Run
from deploy.aws.iam import TAG_KEY
from deploy.aws.spec import digest, source_archive
from mark.models.repository import write_model_repository

DIGEST = "mark:digest"
ROLE_TAG = "mark:role"
LIVE = ["pending", "running", "stopping", "stopped"]
# IAM's eventual consistency, as EC2 and Lambda report it
_NOT_YET = ("InvalidParameterValue", "InvalidParameterValueException")


def _tagged(spec_name: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{TAG_KEY}", "Values": [spec_name]}]


# -- security groups ---------------------------------------------------------------------

def default_vpc(run: Run) -> str:
    vpcs = run.aws.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise RuntimeError(f"region {run.spec.region} has no default VPC")
    return str(vpcs[0]["VpcId"])


def security_group(run: Run, role: str, vpc: str) -> str:
    """The group ``<name>-<role>`` (its id, or a placeholder in a dry run)."""
    spec, ec2 = run.spec, run.aws.ec2
    name = f"{spec.name}-{role}"
    found = ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc]},
        *_tagged(spec.name)])["SecurityGroups"]
    if found:
        run.change("security-group", name, "ok")
        gid = str(found[0]["GroupId"])
    else:
        made = run.change("security-group", name, "create", lambda: ec2.create_security_group(
            GroupName=name, VpcId=vpc, Description=f"mark deployment {spec.name}: {role}",
            TagSpecifications=[{"ResourceType": "security-group",
                                "Tags": spec.tag_list(Name=name)}]))
        gid = str(made["GroupId"]) if made else run.placeholder(f"{name} id")
    run.state.setdefault("security_groups", {})[name] = gid
    return gid


def _rules(perms: list[dict[str, Any]]) -> set[tuple[str, int, int, str]]:
    out = set()
    for p in perms:
        key = (p["IpProtocol"], p.get("FromPort", -1), p.get("ToPort", -1))
        out |= {(*key, r["CidrIp"]) for r in p.get("IpRanges", [])}
        out |= {(*key, g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
    return out


def _perm(rule: tuple[str, int, int, str]) -> dict[str, Any]:
    proto, lo, hi, source = rule
    peer = ({"IpRanges": [{"CidrIp": source}]} if "/" in source
            else {"UserIdGroupPairs": [{"GroupId": source}]})
    return {"IpProtocol": proto, "FromPort": lo, "ToPort": hi, **peer}


def ingress(run: Run, group_name: str, gid: str, want: set[tuple[str, int, int, str]]) -> None:
    """Exactly ``want`` as the group's ingress rules (protocol, from, to, CIDR or group)."""
    ec2 = run.aws.ec2
    have: set[tuple[str, int, int, str]] = set()
    if not gid.startswith("<"):
        have = _rules(ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
                      ["IpPermissions"])
    add, drop = want - have, have - want

    def update() -> None:
        if drop:
            ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[_perm(r) for r in drop])
        if add:
            ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[_perm(r) for r in add])

    action: Action = "ok" if not (add or drop) else "create" if not have else "update"
    run.change("ingress-rules", group_name, action, update,
               detail=f"+{len(add)} -{len(drop)}" if action != "ok" else "")


# -- S3 ------------------------------------------------------------------------------------

def bucket(run: Run) -> None:
    spec, s3 = run.spec, run.aws.s3
    run.state["bucket"] = spec.bucket
    try:
        s3.head_bucket(Bucket=spec.bucket)
        exists = True
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        exists = False
    if not spec.bucket_owned:
        if not exists:
            raise RuntimeError(f"the configured bucket {spec.bucket} does not exist")
        run.change("s3-bucket", spec.bucket, "ok", detail="configured, not managed")
        return
    if exists:
        try:
            tags = tag_dict(s3.get_bucket_tagging(Bucket=spec.bucket)["TagSet"])
        except ClientError:
            tags = {}
        if tags.get(TAG_KEY) != spec.name:
            raise RuntimeError(f"bucket {spec.bucket} exists without the tag {TAG_KEY}="
                               f"{spec.name}: not this deployment's (pass --bucket to use it)")
        run.change("s3-bucket", spec.bucket, "ok")
        return

    def create() -> None:
        kw: dict[str, Any] = {}
        if spec.region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": spec.region}
        s3.create_bucket(Bucket=spec.bucket, **kw)
        s3.put_bucket_tagging(Bucket=spec.bucket, Tagging={"TagSet": spec.tag_list()})
        s3.put_public_access_block(Bucket=spec.bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})

    run.change("s3-bucket", spec.bucket, "create", create)


def wanted_objects(run: Run) -> dict[str, bytes]:
    """``<name>/models/<model>/...``: the model repository as the instances' script syncs it
    (one directory per model; a ``profiled`` model's times are those of its first allowed
    type, the backend's agent rewrites the batching per launch), and
    ``<name>/dist/mark-src.tar.gz`` (mark for the host)."""
    spec = run.spec
    out = {f"{spec.prefix}dist/mark-src.tar.gz": source_archive()}
    with tempfile.TemporaryDirectory() as tmp:
        for m in spec.cfg.models:
            types = spec.model_types.get(m.name) or ("local",)
            root = write_model_repository(Path(tmp) / m.name, [m], instance_type=types[0])
            for p in sorted(root.rglob("*")):
                if p.is_file() and "__pycache__" not in p.parts:
                    out[f"{spec.prefix}models/{p.relative_to(root).as_posix()}"] = p.read_bytes()
    return out


def objects(run: Run) -> None:
    """Upload what differs (by MD5 = the ETag of a single-part upload) and delete, under
    ``<name>/models/`` and ``<name>/dist/``, what is no longer wanted (in a configured bucket,
    only objects carrying the tag)."""
    spec, s3 = run.spec, run.aws.s3
    want = wanted_objects(run)
    have: dict[str, str] = {}
    try:  # only what deploy writes: the rest of the prefix is the user's
        for sub in ("models/", "dist/"):
            for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=spec.bucket, Prefix=f"{spec.prefix}{sub}"):
                have |= {o["Key"]: o["ETag"].strip('"') for o in page.get("Contents", [])}
    except ClientError as exc:
        if error_code(exc) != "NoSuchBucket":
            raise
    tagging = f"{TAG_KEY}={spec.name}"
    for key, body in want.items():
        md5 = hashlib.md5(body).hexdigest()
        if have.get(key) == md5:
            run.change("s3-object", key, "ok")
            continue
        run.change("s3-object", key, "update" if key in have else "create",
                   partial(s3.put_object, Bucket=spec.bucket, Key=key, Body=body, Tagging=tagging))
    for key in sorted(set(have) - set(want)):
        if not spec.bucket_owned and tag_dict(s3.get_object_tagging(
                Bucket=spec.bucket, Key=key)["TagSet"]).get(TAG_KEY) != spec.name:
            continue  # a configured bucket: only the deployment's own objects go
        run.change("s3-object", key, "delete",
                   partial(s3.delete_object, Bucket=spec.bucket, Key=key))
    run.state["s3_prefix"] = f"s3://{spec.bucket}/{spec.prefix}"


# -- launch templates, functions, host ---------------------------------------------------------

def user_data_b64(script: str) -> str:
    return base64.b64encode(script.encode()).decode()


def launch_template(run: Run, name: str, data: dict[str, Any], role: str,
                    existing: dict[str, Any] | None = None) -> str:
    """Create or update (a new default version) the template ``name``; its id."""
    spec, ec2 = run.spec, run.aws.ec2
    d = digest(data)
    if existing is None:
        found = ec2.describe_launch_templates(Filters=[
            *_tagged(spec.name), {"Name": "launch-template-name", "Values": [name]}])
        existing = {lt["LaunchTemplateName"]: lt for lt in found["LaunchTemplates"]}
    lt = existing.get(name)
    if lt is None:
        made = run.change("launch-template", name, "create", partial(
            ec2.create_launch_template, LaunchTemplateName=name, LaunchTemplateData=data,
            TagSpecifications=[{"ResourceType": "launch-template",
                                "Tags": spec.tag_list(**{DIGEST: d, ROLE_TAG: role})}]))
        return str(made["LaunchTemplate"]["LaunchTemplateId"]) if made else run.placeholder(name)
    lt_id = str(lt["LaunchTemplateId"])

    def update() -> None:
        v = ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData=data)
        ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion=str(
            v["LaunchTemplateVersion"]["VersionNumber"]))
        ec2.create_tags(Resources=[lt_id], Tags=[{"Key": DIGEST, "Value": d}])

    same = tag_dict(lt.get("Tags")).get(DIGEST) == d
    run.change("launch-template", name, "ok" if same else "update", update)
    return lt_id


def launch_templates(run: Run, instance_sg: str, host_address: str) -> None:
    """One template per allowed instance type (what the aws backend launches from); a
    template of a type no longer allowed is deleted."""
    spec, ec2 = run.spec, run.aws.ec2
    existing = {lt["LaunchTemplateName"]: lt for lt in
                ec2.describe_launch_templates(Filters=_tagged(spec.name))["LaunchTemplates"]}
    wanted = {spec.launch_template(t): t for t in spec.types}
    run.state["launch_templates"] = {}
    for name, itype in wanted.items():
        tags = spec.tag_list(Name=f"{spec.name}-instance", **{ROLE_TAG: "instance"})
        data = {
            "ImageId": spec.ami, "InstanceType": itype,
            "IamInstanceProfile": {"Name": spec.role("instance")},
            "SecurityGroupIds": [instance_sg],
            "UserData": user_data_b64(userdata.instance_script(spec, itype, host_address)),
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                                  {"ResourceType": "volume", "Tags": tags}],
        }
        lt_id = launch_template(run, name, data, "instance", existing)
        run.state["launch_templates"][itype] = {"name": name, "id": lt_id}
    for name, lt in existing.items():
        if name not in wanted and tag_dict(lt.get("Tags")).get(ROLE_TAG) == "instance":
            run.change("launch-template", name, "delete", partial(
                ec2.delete_launch_template, LaunchTemplateId=lt["LaunchTemplateId"]),
                detail="type not allowed")


def functions(run: Run) -> None:
    spec, lam = run.spec, run.aws.lambda_
    run.state["functions"] = {}
    wanted = {}
    for m in spec.cfg.models:
        wanted[f"{spec.function_prefix}{m.name}"] = {
            "Role": spec.role_arn("function"), "PackageType": "Image",
            "Code": {"ImageUri": spec.image_uri},
            "MemorySize": m.faas_memory_mb or spec.cfg.faas.memory_mb or 3008,
            "Timeout": max(1, round(spec.cfg.faas.timeout_s)),
            "Environment": {"Variables": {
                "MARK_CONFIG_JSON": json.dumps(spec.function_config(), sort_keys=True),
                "MARK_MODEL": m.name}},
        }
    for name, conf in wanted.items():
        d = digest(conf)
        arn = f"arn:aws:lambda:{spec.region}:{spec.account}:function:{name}"
        run.state["functions"][name] = arn
        try:
            got = lam.get_function(FunctionName=name)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            run.change("function", name, "create", partial(
                retry_eventual, partial(lam.create_function, FunctionName=name,
                                        Tags={**spec.tags, DIGEST: d}, **conf), _NOT_YET))
            continue
        if tag_dict(got.get("Tags")).get(TAG_KEY) != spec.name:
            raise RuntimeError(f"function {name} exists without the tag {TAG_KEY}={spec.name}")
        same = tag_dict(got.get("Tags")).get(DIGEST) == d

        def update(n: str = name, c: dict[str, Any] = conf, dg: str = d, a: str = arn) -> None:
            lam.update_function_code(FunctionName=n, ImageUri=c["Code"]["ImageUri"])
            cfg = {k: v for k, v in c.items() if k not in ("Code", "PackageType")}
            lam.update_function_configuration(FunctionName=n, **cfg)
            lam.tag_resource(Resource=a, Tags={DIGEST: dg})

        run.change("function", name, "ok" if same else "update", update)


def host(run: Run, frontend_sg: str) -> str:
    """The front-end host (one instance: Redis, front end, provisioner); replaced when what it
    boots from changes. Returns its private address (a placeholder in a dry run)."""
    spec, ec2 = run.spec, run.aws.ec2
    name = f"{spec.name}-frontend"
    conf = {"ImageId": spec.ami, "InstanceType": spec.host_type,
            "IamInstanceProfile": {"Name": spec.role("host")}, "SecurityGroupIds": [frontend_sg],
            "UserData": userdata.host_script(spec, None)}
    d = digest(conf)
    found = [i for r in ec2.describe_instances(Filters=[
        *_tagged(spec.name), {"Name": f"tag:{ROLE_TAG}", "Values": ["frontend"]},
        {"Name": "instance-state-name", "Values": LIVE}])["Reservations"] for i in r["Instances"]]
    current = [i for i in found if tag_dict(i.get("Tags")).get(DIGEST) == d]

    def launch() -> dict[str, Any]:
        tags = spec.tag_list(Name=name, **{ROLE_TAG: "frontend", DIGEST: d})
        out = retry_eventual(lambda: ec2.run_instances(
            MinCount=1, MaxCount=1, MetadataOptions={"HttpTokens": "required"},
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                               {"ResourceType": "volume", "Tags": tags}], **conf), _NOT_YET)
        stale = [i["InstanceId"] for i in found]
        if stale:
            ec2.terminate_instances(InstanceIds=stale)
        return dict(out["Instances"][0])

    if current:
        run.change("host", name, "ok")
        inst = current[0]
    else:
        action: Action = "update" if found else "create"
        inst = run.change("host", name, action, launch,
                          detail="replaced: its configuration changed" if found else "") or {}
    address = inst.get("PrivateIpAddress") or run.placeholder(f"{name} address")
    run.state["host"] = {"instance_id": inst.get("InstanceId"), "private_ip": address,
                         "public_ip": inst.get("PublicIpAddress"),
                         "port": spec.cfg.frontend.port}
    return str(address)
