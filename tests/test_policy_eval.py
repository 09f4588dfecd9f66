"""The small IAM policy evaluator (deploy/aws/policy.py) on hand-written policies: what it
allows and denies, so its verdicts on the deployment's policies can be trusted."""

from __future__ import annotations

import pytest

from deploy.aws.policy import evaluate

ALLOW_TAGGED = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:Run*", "Resource": "arn:aws:ec2:*:*:instance/*",
     "Condition": {"StringEquals": {"aws:RequestTag/team": "a"}}},
]}


def test_allow_needs_a_matching_action_resource_and_condition() -> None:
    arn = "arn:aws:ec2:us-east-1:1:instance/*"
    assert evaluate([ALLOW_TAGGED], "ec2:RunInstances", arn, {"aws:RequestTag/team": "a"}) == "allow"
    assert evaluate([ALLOW_TAGGED], "EC2:runinstances", arn, {"aws:RequestTag/team": "a"}) == "allow"
    assert evaluate([ALLOW_TAGGED], "ec2:RunInstances", arn, {"aws:RequestTag/team": "b"}) == "implicit-deny"
    assert evaluate([ALLOW_TAGGED], "ec2:RunInstances", arn) == "implicit-deny"
    assert evaluate([ALLOW_TAGGED], "ec2:StopInstances", arn,
                    {"aws:RequestTag/team": "a"}) == "implicit-deny"
    assert evaluate([ALLOW_TAGGED], "ec2:RunInstances", "arn:aws:ec2:us-east-1:1:volume/v",
                    {"aws:RequestTag/team": "a"}) == "implicit-deny"


def test_condition_keys_are_case_insensitive_values_are_not() -> None:
    arn = "arn:aws:ec2:us-east-1:1:instance/i-1"
    assert evaluate([ALLOW_TAGGED], "ec2:RunInstances", arn, {"AWS:requesttag/TEAM": "a"}) == "allow"
    assert evaluate([ALLOW_TAGGED], "ec2:RunInstances", arn, {"aws:RequestTag/team": "A"}) == "implicit-deny"


def test_an_explicit_deny_wins_over_any_allow() -> None:
    deny = {"Statement": {"Effect": "Deny", "Action": "*", "Resource": "*",
                          "Condition": {"StringNotEquals": {"aws:RequestTag/team": "a"}}}}
    arn = "arn:aws:ec2:us-east-1:1:instance/i-1"
    assert evaluate([ALLOW_TAGGED, deny], "ec2:RunInstances", arn,
                    {"aws:RequestTag/team": "a"}) == "allow"
    assert evaluate([ALLOW_TAGGED, deny], "ec2:RunInstances", arn,
                    {"aws:RequestTag/team": "b"}) == "explicit-deny"
    # StringNotEquals holds when the key is absent
    assert evaluate([ALLOW_TAGGED, deny], "ec2:RunInstances", arn) == "explicit-deny"


def test_wildcards_like_and_not_action() -> None:
    policy = {"Statement": [
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:s3:::b/p?/*",
         "Condition": {"StringLike": {"s3:prefix": ["p1/*", "p2/*"]}}},
    ]}
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::b/p1/x", {"s3:prefix": "p2/y"}) == "allow"
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::b/p10/x",
                    {"s3:prefix": "p2/y"}) == "implicit-deny"
    assert evaluate([policy], "s3:GetObject", "arn:aws:s3:::b/p1/x",
                    {"s3:prefix": "p3/y"}) == "implicit-deny"
    assert evaluate([policy], "iam:PassRole", "arn:aws:s3:::b/p1/x",
                    {"s3:prefix": "p1/y"}) == "implicit-deny"
    # IAM has no character classes: brackets are literal
    literal = {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::[ab]"}]}
    assert evaluate([literal], "s3:GetObject", "arn:aws:s3:::a") == "implicit-deny"
    assert evaluate([literal], "s3:GetObject", "arn:aws:s3:::[ab]") == "allow"


def test_if_exists_and_null() -> None:
    policy = {"Statement": [
        {"Effect": "Allow", "Action": "x:Y", "Resource": "*",
         "Condition": {"StringEqualsIfExists": {"k": "v"}, "Null": {"must": "false"}}},
    ]}
    assert evaluate([policy], "x:Y", "r", {"must": "1"}) == "allow"
    assert evaluate([policy], "x:Y", "r", {"must": "1", "k": "v"}) == "allow"
    assert evaluate([policy], "x:Y", "r", {"must": "1", "k": "w"}) == "implicit-deny"
    assert evaluate([policy], "x:Y", "r", {"k": "v"}) == "implicit-deny"


def test_an_operator_outside_the_subset_is_refused() -> None:
    policy = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                             "Condition": {"NumericLessThan": {"k": "3"}}}]}
    with pytest.raises(ValueError, match="NumericLessThan"):
        evaluate([policy], "x:Y", "r", {"k": "1"})
