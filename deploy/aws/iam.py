"""The deployment's IAM policy documents: least privilege, scoped by the deployment's tag.

Pure functions of the deployment's names (no boto3): ``mark deploy aws`` writes them, the
tests evaluate them (:mod:`deploy.aws.policy`). Three roles:

- **host** (the front end and the provisioner on the front-end host): runs instances only
  with the tag ``mark:deployment=<name>`` in the request (``aws:RequestTag``) and only from
  the deployment's launch templates and security groups (``ec2:ResourceTag``); tags only with
  that tag; stops and terminates only instances carrying it; passes only the instance role
  (to EC2); invokes only the deployment's functions; reads only its S3 prefix;
- **instance** (every fleet instance): reads only ``s3://<bucket>/<name>/*``;
- **function** (the Lambda functions): writes only its own log groups.
"""

from __future__ import annotations

from typing import Any

TAG_KEY = "mark:deployment"
Policy = dict[str, Any]


def _doc(*statements: dict[str, Any]) -> Policy:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def trust_policy(service: str) -> Policy:
    """Who may assume a role: ``ec2.amazonaws.com`` or ``lambda.amazonaws.com``."""
    return _doc({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def s3_read_statements(bucket: str, name: str) -> list[dict[str, Any]]:
    """Read the deployment's prefix ``<name>/`` of ``bucket`` and nothing else."""
    return [
        {"Sid": "ReadTheDeploymentsPrefix", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/{name}/*"},
        {"Sid": "ListTheDeploymentsPrefix", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": [f"{name}/*"]}}},
    ]


def instance_policy(bucket: str, name: str) -> Policy:
    """A fleet instance's role: its model repository from the deployment's S3 prefix."""
    return _doc(*s3_read_statements(bucket, name))


def host_policy(name: str, region: str, account: str, bucket: str, instance_role_arn: str,
                function_prefix: str) -> Policy:
    """The front-end host's role (the front end spills, the provisioner launches)."""
    ec2 = f"arn:aws:ec2:{region}:{account}"
    tagged = {"StringEquals": {f"aws:RequestTag/{TAG_KEY}": name}}
    carrying = {"StringEquals": {f"ec2:ResourceTag/{TAG_KEY}": name}}
    launched = [f"{ec2}:instance/*", f"{ec2}:volume/*", f"{ec2}:network-interface/*",
                f"{ec2}:spot-instances-request/*"]
    return _doc(
        {"Sid": "RunOnlyTaggedInstances", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": launched, "Condition": tagged},
        {"Sid": "RunOnlyFromTheDeploymentsTemplatesAndGroups", "Effect": "Allow",
         "Action": "ec2:RunInstances",
         "Resource": [f"{ec2}:launch-template/*", f"{ec2}:security-group/*"],
         "Condition": carrying},
        {"Sid": "RunOnAnyImageSubnetAndKey", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [f"arn:aws:ec2:{region}::image/*", f"{ec2}:subnet/*", f"{ec2}:key-pair/*"]},
        {"Sid": "TagOnlyWithTheDeploymentsTag", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": launched, "Condition": tagged},
        {"Sid": "StopOnlyTaggedInstances", "Effect": "Allow",
         "Action": ["ec2:TerminateInstances", "ec2:StopInstances", "ec2:RebootInstances"],
         "Resource": f"{ec2}:instance/*", "Condition": carrying},
        # Describe* takes no resource-level permissions; the backend filters by the tag
        {"Sid": "Describe", "Effect": "Allow",
         "Action": ["ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
                    "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions",
                    "ec2:DescribeSpotInstanceRequests", "ec2:DescribeInstanceTypes"],
         "Resource": "*"},
        {"Sid": "PassOnlyTheInstanceRole", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": instance_role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        {"Sid": "InvokeOnlyTheDeploymentsFunctions", "Effect": "Allow",
         "Action": "lambda:InvokeFunction",
         "Resource": f"arn:aws:lambda:{region}:{account}:function:{function_prefix}*"},
        *s3_read_statements(bucket, name),
    )


def function_policy(region: str, account: str, function_prefix: str) -> Policy:
    """The functions' execution role: their own CloudWatch log groups only."""
    groups = f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{function_prefix}*"
    return _doc(
        {"Sid": "OwnLogGroups", "Effect": "Allow", "Action": "logs:CreateLogGroup",
         "Resource": groups},
        {"Sid": "OwnLogStreams", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{groups}:*"},
    )
