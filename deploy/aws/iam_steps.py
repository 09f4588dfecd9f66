"""Deploy steps for IAM: a role per kind (host, instance, function), its managed policy (one
default version, replaced when the document differs) and, for EC2 roles, its instance
profile. All under the path ``/mark/<name>/`` and tagged."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from deploy.aws.clients import error_code, policy_document, tag_dict
from deploy.aws.engine import Action, Run
from deploy.aws.iam import TAG_KEY, Policy, trust_policy

BUCKET_TAG = "mark:bucket"  # on the instance role: the configured bucket teardown must clean


def _get(fn: Any, **kw: Any) -> Any:
    try:
        return fn(**kw)
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise


def role(run: Run, kind: str, service: str, extra_tags: dict[str, str] | None = None) -> None:
    spec, iam = run.spec, run.aws.iam
    name = spec.role(kind)
    trust = trust_policy(service)
    tags = {**spec.tags, **(extra_tags or {})}
    got = _get(iam.get_role, RoleName=name)
    run.state.setdefault("roles", {})[kind] = spec.role_arn(kind)
    if got is None:
        run.change("iam-role", name, "create", lambda: iam.create_role(
            RoleName=name, Path=spec.path, AssumeRolePolicyDocument=json.dumps(trust),
            Description=f"mark deployment {spec.name}: {kind}",
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()]))
        return
    r = got["Role"]
    have_tags = tag_dict(iam.list_role_tags(RoleName=name)["Tags"])
    if have_tags.get(TAG_KEY) != spec.name:
        raise RuntimeError(f"IAM role {name} exists without the tag {TAG_KEY}={spec.name}: "
                           "not this deployment's; remove or rename it")
    stale_trust = policy_document(r["AssumeRolePolicyDocument"]) != trust
    stale_tags = any(have_tags.get(k) != v for k, v in tags.items())

    def update() -> None:
        if stale_trust:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
        if stale_tags:
            iam.tag_role(RoleName=name, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    run.change("iam-role", name, "update" if stale_trust or stale_tags else "ok", update,
               detail="trust policy" if stale_trust else "tags" if stale_tags else "")


def policy(run: Run, kind: str, document: Policy) -> None:
    """The role's managed policy ``<name>-<kind>``, attached to the role."""
    spec, iam = run.spec, run.aws.iam
    name = spec.role(kind)
    arn = f"arn:aws:iam::{spec.account}:policy{spec.path}{name}"
    got = _get(iam.get_policy, PolicyArn=arn)

    def attach() -> None:
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)

    if got is None:
        def create() -> None:
            iam.create_policy(PolicyName=name, Path=spec.path, PolicyDocument=json.dumps(document),
                              Tags=spec.tag_list())
            attach()

        run.change("iam-policy", name, "create", create)
        return
    version = got["Policy"]["DefaultVersionId"]
    have = policy_document(iam.get_policy_version(PolicyArn=arn, VersionId=version)
                           ["PolicyVersion"]["Document"])
    attached = _get(iam.list_attached_role_policies, RoleName=name)
    is_attached = attached is not None and any(
        p["PolicyArn"] == arn for p in attached["AttachedPolicies"])
    stale = have != document

    def update() -> None:
        if stale:
            old = [v for v in iam.list_policy_versions(PolicyArn=arn)["Versions"]
                   if not v["IsDefaultVersion"]]
            for v in old:  # at most 5 versions: keep only the one in force
                iam.delete_policy_version(PolicyArn=arn, VersionId=v["VersionId"])
            iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(document),
                                      SetAsDefault=True)
        if not is_attached:
            attach()

    action: Action = "update" if stale or not is_attached else "ok"
    run.change("iam-policy", name, action, update,
               detail="document" if stale else "attachment" if not is_attached else "")


def instance_profile(run: Run, kind: str) -> None:
    spec, iam = run.spec, run.aws.iam
    name = spec.role(kind)
    got = _get(iam.get_instance_profile, InstanceProfileName=name)
    run.state.setdefault("instance_profiles", {})[kind] = name
    if got is None:
        def create() -> None:
            iam.create_instance_profile(InstanceProfileName=name, Path=spec.path,
                                        Tags=spec.tag_list())
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)

        run.change("instance-profile", name, "create", create)
        return
    roles = [r["RoleName"] for r in got["InstanceProfile"]["Roles"]]
    run.change("instance-profile", name, "ok" if roles == [name] else "update",
               lambda: iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name),
               detail="" if roles == [name] else "role")
