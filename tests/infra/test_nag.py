"""cdk-nag AwsSolutions: no unacknowledged finding, every acknowledgment justified.

cdk-nag 3 runs as a CDK validation plugin during synthesis (see infra/app.py): a
finding fails `app.synth()` and is written to `validation-report.json`. Every
acknowledgment is recorded in the stack's metadata with its reason; this test
collects them, so a new one cannot slip in unseen.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from .conftest import INSTALL_HINT, VARIANTS, Assembly

# Rule families the project acknowledges, each with the construct allowed to need it.
EXPECTED = {
    ("Storage/AccessLogs", "AwsSolutions-S1"),
    ("ExecutionRole/Role", "AwsSolutions-IAM5"),
    ("ServingRole/Role", "AwsSolutions-IAM5"),
    ("PipelineRole/Role", "AwsSolutions-IAM5"),
    ("Promotion/Role", "AwsSolutions-IAM5"),
    # a deploy-target stack's roles, in another account
    ("ServingRole", "AwsSolutions-IAM5"),
    ("DeployRole", "AwsSolutions-IAM5"),
}


def acknowledgments(assembly: Assembly) -> dict[tuple[str, str], str]:
    """(construct path, finding id) -> reason, for the AwsSolutions pack only."""
    found: dict[tuple[str, str], str] = {}
    for path in assembly.outdir.glob("*.metadata.json"):
        for construct, entries in json.loads(path.read_text()).items():
            for entry in entries:
                if entry["type"] != "aws:cdk:acknowledged-rules":
                    continue
                for finding, reason in entry["data"].items():
                    if "AwsSolutions-" in finding:
                        found[(construct, finding.removeprefix("Annotation::"))] = reason
    return found


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_unacknowledged_findings(assemblies: dict[str, Assembly], variant: str) -> None:
    assembly = assemblies[variant]
    report = assembly.report() or {"pluginReports": []}
    failures = [
        f"{v['ruleName']}: {c['constructPath']}"
        for plugin in report["pluginReports"] if plugin["conclusion"] == "failure"
        for v in plugin["violations"] for c in v["violatingConstructs"]
    ]
    assert assembly.validation_error is None and not failures, "\n".join(failures)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_acknowledgments_are_few_known_and_explained(
        assemblies: dict[str, Assembly], variant: str) -> None:
    found = acknowledgments(assemblies[variant])
    assert found, "cdk-nag acknowledgments were not recorded"
    for (construct, finding), reason in found.items():
        family = re.sub(r"\[.*\]$", "", finding)
        owner = construct.split("/", 2)[-1]
        assert (owner, family) in EXPECTED, (construct, finding)
        assert len(reason.split()) >= 10, (finding, reason)
        # IAM5 wildcards may only end a prefix (a key prefix, or a name prefix such as
        # `pipelines-` or `genkiln-prod-`) or be a resourceless API's "*".
        if family == "AwsSolutions-IAM5":
            resource = finding.removeprefix("AwsSolutions-IAM5[Resource::").removesuffix("]")
            assert resource == "*" or re.search(r"/[a-z-]+/\*$|/[a-z0-9-]+-\*$|:\*$|/\*$",
                                                resource), finding


def test_report_acknowledgment_count(assemblies: dict[str, Assembly],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Print the count per rule family (shown with `pytest -s`; also in the closing note)."""
    found = acknowledgments(assemblies["prod"])
    families = Counter(re.sub(r"\[.*\]$", "", finding) for _, finding in found)
    with capsys.disabled():
        print(f"\ncdk-nag acknowledgments (prod variant): {len(found)} {dict(families)}")
    assert families["AwsSolutions-S1"] == 1


def test_the_checks_do_fail_a_non_compliant_app(tmp_path: Path) -> None:
    """The plugin is live: a bucket without TLS enforcement or logging fails synthesis."""
    pytest.importorskip("cdk_nag", reason=INSTALL_HINT)
    from aws_cdk import App, Stack, Validations
    from aws_cdk import aws_s3 as s3
    from cdk_nag import AwsSolutionsChecks

    app = App(outdir=str(tmp_path))
    s3.Bucket(Stack(app, "Bad"), "Open")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules



def test_resource_text_quotes_findings_as_cdk_nag_prints_them() -> None:
    pytest.importorskip("aws_cdk", reason=INSTALL_HINT)
    from aws_cdk import App, Aws, Fn, Stack

    from infra.nag import resource_text

    stack = Stack(App(), "S")
    assert resource_text(stack, "*") == "*"
    assert resource_text(stack, Fn.import_value("other:Export")) == "other:Export"
    assert (resource_text(stack, f"arn:aws:logs:eu-west-1:{Aws.ACCOUNT_ID}:log-group:/x/*")
            == "arn:aws:logs:eu-west-1:<AWS::AccountId>:log-group:/x/*")
    assert (resource_text(stack, Fn.select(0, Fn.get_azs()))
            == '{"Fn::Select":[0,{"Fn::GetAZs":""}]}')
