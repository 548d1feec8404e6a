"""The packages say where code runs, and the imports keep them apart.

`training/` runs in a training or processing job, `inference/` in the serving container,
`infra/` is the CDK app and `genkiln/` the control plane that drives them. Neither runtime
imports `infra/` or the control plane (so the image ships neither: its build context is an
allow-list in .dockerignore), serving reaches into training only for what a model is, and
the CDK app imports none of the others. Late (function-level) imports count too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("training", "inference", "infra", "genkiln")
#: What serving may import from training: the models (with their loaders and the formats
#: they read and write), the artifact they load from, and the feedback records it writes
#: for a refinement job to read.
SERVING_USES_OF_TRAINING = ("training.models", "training.artifact", "training.feedback")


def imports(package: str) -> Iterator[tuple[Path, str]]:
    """(file, module) for every absolute import in ``package``, late ones included."""
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in PACKAGES:  # `from training import distributed`
                    yield from ((path, f"{node.module}.{a.name}") for a in node.names)
                else:
                    yield path, node.module
            elif isinstance(node, ast.Import):
                yield from ((path, a.name) for a in node.names)


def crossings(package: str, into: str) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {module}" for path, module in imports(package)
            if module == into or module.startswith(f"{into}.")]


def test_the_runtimes_import_neither_infra_nor_the_control_plane() -> None:
    found = [c for runtime in ("training", "inference") for other in ("infra", "genkiln")
             for c in crossings(runtime, other)]
    assert not found, found


def test_training_does_not_import_serving() -> None:
    assert not crossings("training", "inference")


def test_serving_takes_from_training_only_what_a_model_is() -> None:
    found = [c for c in crossings("inference", "training")
             if not c.split(" imports ")[1].startswith(SERVING_USES_OF_TRAINING)]
    assert not found, found


def test_the_cdk_app_imports_no_runtime_and_no_control_plane() -> None:
    found = [c for other in ("training", "inference", "genkiln")
             for c in crossings("infra", other)]
    assert not found, found


def test_the_image_build_context_holds_the_runtimes_alone() -> None:
    allowed = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    packages = {entry.strip("!/").split("/")[0] for entry in allowed} & set(PACKAGES)
    assert packages == {"training", "inference"}, allowed


@pytest.mark.slow
def test_a_runtime_loads_no_control_plane_code() -> None:
    # What the serving and job processes load before they do anything: not the launcher,
    # the deployer, the SageMaker SDK or the CDK app.
    probe = ("import json, sys; import inference.server, inference.command, training.command; "
             "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout)
    unwanted = [m for m in loaded if m.split(".")[0] in ("genkiln", "infra", "sagemaker",
                                                          "aws_cdk", "boto3")]
    assert not unwanted, unwanted


@pytest.mark.slow
def test_serving_loads_no_training_machinery() -> None:
    # The server and every family's handler: the models and the artifact, not the
    # recipes, data pipelines, loop or evaluation that training runs.
    probe = ("import json, sys; import inference.server; from inference.handlers import "
             "HANDLERS; import importlib; [importlib.import_module(t.split(':')[0]) "
             "for t in HANDLERS.values()]; print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout)
    from_training = {m for m in loaded if m.startswith("training.")}
    # The models' configs check their fields with training.hyperparameters' rules.
    allowed = (*SERVING_USES_OF_TRAINING, "training.hyperparameters")
    assert from_training and all(m.startswith(allowed) for m in from_training), \
        sorted(m for m in from_training if not m.startswith(allowed))
