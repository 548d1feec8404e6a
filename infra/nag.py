"""Acknowledging a cdk-nag finding, always with a reason a reviewer can check.

cdk-nag 3 runs as a CDK policy-validation plugin: findings fail `cdk synth` and are
written to `validation-report.json` in the cloud assembly. A finding that is right in
general but wrong for one resource is acknowledged on that resource (never on a whole
stack), and the reason is copied into the template's metadata for auditors.
"""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

_MIN_REASON = 40  # a sentence, not "n/a"


def acknowledge(scope: IConstruct, *, rule: str, reason: str) -> None:
    """Accept finding `rule` (e.g. `AwsSolutions-S1`) on `scope`, saying why."""
    if len(reason.strip()) < _MIN_REASON:
        raise ValueError(f"acknowledging {rule} needs a reason of a sentence or more")
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def acknowledge_wildcards(scope: IConstruct, resources: list[str], *, reason: str) -> None:
    """Accept the IAM5 finding of each wildcard resource in ``resources`` on `scope` (a
    role), quoting each as cdk-nag prints it."""
    stack = Stack.of(scope)
    for resource in resources:
        text = resource_text(stack, resource)
        if "*" in text:
            acknowledge(scope, rule=f"AwsSolutions-IAM5[Resource::{text}]", reason=reason)


def resource_text(stack: Stack, value: str) -> str:
    """How cdk-nag names resource `value` in a finding ID such as `IAM5[Resource::...]`.

    cdk-nag 3 acknowledgments must quote the finding exactly. A resource is printed
    from the template: `Ref` as `<Id>`, `Fn::GetAtt` as `<Id.Attr>`, an import as its
    export name, `Fn::Join` joined, and other intrinsics as compact JSON. If a cdk-nag
    upgrade changes this, the nag test fails on the then unacknowledged findings.
    """
    return _render(stack.resolve(value))


def _render(value: object) -> str:
    """Render a resolved CloudFormation value the way cdk-nag prints it in finding IDs."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if fn == "Fn::ImportValue":
            return _render(arg)
        if fn == "Fn::Join":
            separator, parts = arg
            return separator.join(_render(p) for p in parts)
    # Any other intrinsic (Fn::Sub, Fn::Select, ...) is printed as compact JSON.
    return json.dumps(value, separators=(",", ":"))
