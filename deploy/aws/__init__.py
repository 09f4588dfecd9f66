"""A mark deployment on AWS: ``deploy`` (idempotent create-or-update, or a dry-run plan) and
``teardown`` (everything tagged ``mark:deployment=<name>``, nothing else).

Modules: ``spec`` (names, tag, the hosts' configuration), ``iam`` (policy documents),
``policy`` (an evaluator for them), ``userdata`` (boot scripts), ``engine`` (changes and the
plan), ``iam_steps``/``steps`` (one resource kind each), ``deploy`` (the order),
``teardown``, ``clients`` (boto3 for a region and endpoint).
"""

from deploy.aws.clients import Clients
from deploy.aws.deploy import make_spec, run
from deploy.aws.engine import Change, Run
from deploy.aws.policy import evaluate
from deploy.aws.spec import Spec
from deploy.aws.teardown import teardown

__all__ = ["Change", "Clients", "Run", "Spec", "evaluate", "make_spec", "run", "teardown"]
