"""What the CDK app tells the serving container, the server reads: every environment
variable a synthesized endpoint model (or the promotion workflow's) sets is one that
`inference.settings` names, and every value passes the checks the server makes at
start-up. A renamed variable, or a typo in a construct, fails here instead of being
silently ignored by a real endpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from inference.settings import NAMES, ServingSettings
from tests.infra.conftest import VARIANTS, Assembly


def environments(node: Any) -> Iterator[dict[str, Any]]:
    """Every `Environment` map in a template, however deep (models, state machines)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Environment" and isinstance(value, dict):
                yield value
            else:
                yield from environments(value)
    elif isinstance(node, list):
        for item in node:
            yield from environments(item)
    elif isinstance(node, str):  # a piece of a state machine's definition string
        for match in re.finditer(r'"Environment":\s*(\{[^{}]*\})', node):
            yield json.loads(match.group(1))


def container_environments(assembly: Assembly) -> list[dict[str, Any]]:
    found = []
    for template in assembly.stacks.values():
        for resource in template.get("Resources", {}).values():
            if resource["Type"] in ("AWS::SageMaker::Model", "AWS::StepFunctions::StateMachine"):
                found.extend(environments(resource["Properties"]))
    return found


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_endpoint_sets_only_what_the_server_reads(
        assemblies: dict[str, Assembly], variant: str) -> None:
    for environment in container_environments(assemblies[variant]):
        unknown = sorted(set(environment) - NAMES)
        assert not unknown, f"{variant}: the server reads no {unknown} (it reads {sorted(NAMES)})"
        literal = {k: v for k, v in environment.items() if isinstance(v, str)}
        ServingSettings.from_env(literal)  # the server's own checks accept the values


def test_the_serving_variants_set_some(assemblies: dict[str, Assembly]) -> None:
    # The scan sees the environments (feedback capture on, and off in promotion).
    seen = {name for variant in ("realtime", "prod", "promotion")
            for env in container_environments(assemblies[variant]) for name in env}
    assert {"GENKILN_FEEDBACK_URI", "GENKILN_FEEDBACK_KMS_KEY_ID", "GENKILN_FEEDBACK",
            "GENKILN_MAX_REQUEST_BYTES"} <= seen, seen
