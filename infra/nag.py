"""Acknowledging a cdk-nag finding, always with a reason a reviewer can check.

cdk-nag 3 runs as a CDK policy-validation plugin: findings fail `cdk synth` and are
written to `validation-report.json` in the cloud assembly. A finding that is right in
general but wrong for one resource is acknowledged on that resource (never on a whole
stack), and the reason is copied into the template's metadata for auditors.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

_MIN_REASON = 40  # a sentence, not "n/a"


def acknowledge(scope: IConstruct, *, rule: str, reason: str) -> None:
    """Accept finding `rule` (e.g. `AwsSolutions-S1`) on `scope`, saying why."""
    if len(reason.strip()) < _MIN_REASON:
        raise ValueError(f"acknowledging {rule} needs a reason of a sentence or more")
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))
