"""Shared fixtures for the CDK app's tests: each app variant is synthesised once a session.

Synthesis runs in-process (jsii starts one Node.js runtime for the whole session), into
a temporary cloud assembly. cdk-nag runs as part of it, exactly as in `npx cdk synth`:
an unacknowledged finding makes `app.synth()` raise, which is recorded rather than
raised here so that the nag test can report it and the other tests still run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

IN_CI = os.environ.get("CI", "").lower() == "true"
INSTALL_HINT = "the infra extra is not installed: pip install -e '.[infra]'"
MISSING = [name for name in ("aws_cdk", "cdk_nag", "cfnlint", "moto")
           if importlib.util.find_spec(name) is None]
if MISSING and IN_CI:
    # In CI a missing package is a broken setup, never a reason to skip.
    raise ImportError(f"{', '.join(MISSING)} missing: {INSTALL_HINT}")

# A model artifact and a model package that the serving variants name.
MODEL_ARTIFACT = "s3://example-artifacts/models/job-1/output/model.tar.gz"
MODEL_PACKAGE = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/genkiln-dev-models/3"

# Each variant is a set of context overrides on top of cdk.json, covering the switches
# that change what is synthesised.
VARIANTS: dict[str, dict[str, Any]] = {
    # cdk.json as shipped: dev stage, no VPC, nothing to serve yet.
    "default": {},
    # production: VPC, real-time endpoint on an artifact, resources retained.
    "prod": {"genkiln:stage": "prod", "genkiln:useVpc": True,
             "genkiln:modelArtifact": MODEL_ARTIFACT, "genkiln:minInstances": 2,
             "genkiln:maxInstances": 6, "genkiln:startupHealthCheckSeconds": 900,
             "genkiln:alarmEmail": "ops@example.com"},
    # dev, asynchronous endpoint on a registered package, allowed to scale to zero.
    "async": {"genkiln:modelPackageArn": MODEL_PACKAGE, "genkiln:endpointKind": "async",
              "genkiln:minInstances": 0, "genkiln:maxInstances": 3},
    # dev, real-time endpoint (night-time cap applies), recording feedback to S3, with an
    # asynchronous twin for large requests.
    "realtime": {"genkiln:modelArtifact": MODEL_ARTIFACT, "genkiln:minInstances": 1,
                 "genkiln:maxInstances": 4, "genkiln:feedbackCapture": True,
                 "genkiln:asyncEndpoint": True},
    # dev, serverless endpoint, in the VPC (which serverless endpoints cannot join).
    "serverless": {"genkiln:modelArtifact": MODEL_ARTIFACT,
                   "genkiln:endpointKind": "serverless", "genkiln:useVpc": True,
                   "genkiln:serverlessMemoryMb": 2048},
    # dev with approval-driven promotion to staging and prod endpoints in this account.
    "promotion": {"genkiln:promotion": True, "genkiln:approvalEmail": "ml@example.com",
                  "genkiln:instanceType": "ml.g5.xlarge"},
    # promotion to a prod endpoint in another account, through its deploy-target stack.
    "crossaccount": {"genkiln:promotion": True, "genkiln:account": "111111111111",
                     "genkiln:prodAccount": "222222222222"},
    # staging on GPUs: training and serving on instance types with local NVMe storage.
    "gpu": {"genkiln:stage": "staging", "genkiln:trainingInstanceType": "ml.g5.2xlarge",
            "genkiln:instanceType": "ml.g5.xlarge", "genkiln:modelArtifact": MODEL_ARTIFACT,
            "genkiln:maxInstances": 3},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.infra)


def cdk_json_context() -> dict[str, Any]:
    return json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


@dataclass
class Assembly:
    """One synthesised variant: its cloud assembly folder and what synthesis said."""

    outdir: Path
    stacks: dict[str, dict[str, Any]]  # stack name -> template
    validation_error: str | None  # set when a validation plugin (cdk-nag) failed
    seconds: float
    _templates: dict[str, Any] = field(default_factory=dict)

    def template(self, unit: str) -> Any:
        """`aws_cdk.assertions.Template` of the stack whose name ends in `-<unit>`."""
        from aws_cdk.assertions import Template

        name = self.stack_name(unit)
        if name not in self._templates:
            self._templates[name] = Template.from_json(self.stacks[name])
        return self._templates[name]

    def stack_name(self, unit: str) -> str:
        names = [n for n in self.stacks if n.endswith(f"-{unit}")]
        assert len(names) == 1, f"expected one {unit} stack in {sorted(self.stacks)}"
        return names[0]

    def report(self) -> dict[str, Any] | None:
        path = self.outdir / "validation-report.json"
        return json.loads(path.read_text()) if path.exists() else None


def synthesize(context: dict[str, Any], outdir: Path) -> Assembly:
    import time

    from aws_cdk import App

    from infra.app import build

    started = time.perf_counter()
    app = App(context=context, outdir=str(outdir))
    build(app)
    error = None
    try:
        app.synth()
    except RuntimeError as err:  # jsii surfaces the plugin's ValidationFailed like this
        if "ValidationFailed" not in str(err):
            raise
        error = str(err)
    seconds = time.perf_counter() - started
    stacks = {
        path.name.removesuffix(".template.json"): json.loads(path.read_text())
        for path in outdir.glob("*.template.json")
    }
    return Assembly(outdir=outdir, stacks=stacks, validation_error=error, seconds=seconds)


@pytest.fixture(scope="session")
def assemblies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Assembly]]:
    """All variants, synthesised lazily on first use and kept for the session."""
    if MISSING:
        pytest.skip(f"{', '.join(MISSING)} missing: {INSTALL_HINT}")
    base = tmp_path_factory.mktemp("cdk")
    env_before = {k: os.environ.pop(k) for k in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION")
                  if k in os.environ}

    class Lazy(dict):
        def __missing__(self, name: str) -> Assembly:
            context = {**cdk_json_context(), **VARIANTS[name]}
            self[name] = synthesize(context, base / name)
            return self[name]

    yield Lazy()
    os.environ.update(env_before)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def default(assemblies: dict[str, Assembly]) -> Assembly:
    return assemblies["default"]


@pytest.fixture(scope="session")
def prod(assemblies: dict[str, Assembly]) -> Assembly:
    return assemblies["prod"]


@pytest.fixture(scope="session")
def data_template(default: Assembly) -> Any:
    return default.template("data")


@pytest.fixture(scope="session")
def training_template(default: Assembly) -> Any:
    return default.template("training")


def cdk_cli() -> Path | None:
    """The pinned CDK CLI installed by `npm ci` (see .ci/setup-cdk.sh), if present."""
    cli = REPO_ROOT / "node_modules" / ".bin" / "cdk"
    return cli if cli.exists() and shutil.which("node") else None


def require_cdk_cli() -> Path:
    """The CLI, or a skip on a workstation; in CI (CI=true) its absence is a failure."""
    cli = cdk_cli()
    if cli is None:
        message = ("the pinned CDK CLI is not installed: run `npm ci` (or "
                   "`bash .ci/setup-cdk.sh`) in the repository root")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return cli
