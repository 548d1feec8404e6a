"""The synthesised templates pass cfn-lint, and the CLI synthesises without credentials."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import IN_CI, INSTALL_HINT, MISSING, REPO_ROOT, VARIANTS, Assembly, require_cdk_cli


def cfn_lint() -> list[str]:
    # The cfn-lint of the running interpreter's environment, not one from PATH.
    local = Path(sys.executable).with_name("cfn-lint")
    found = str(local) if local.exists() else shutil.which("cfn-lint")
    if not found:
        if IN_CI:
            pytest.fail(f"cfn-lint: {INSTALL_HINT}")
        pytest.skip(f"cfn-lint: {INSTALL_HINT}")
    return [found]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cfn_lint_is_clean(assemblies: dict[str, Assembly], variant: str) -> None:
    templates = sorted(str(p) for p in assemblies[variant].outdir.glob("*.template.json"))
    assert templates
    result = subprocess.run([*cfn_lint(), "--format", "parseable", *templates],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_does_find_errors(tmp_path: Path) -> None:
    """cfn-lint is live: an invalid property fails it."""
    bad = tmp_path / "bad.template.json"
    bad.write_text('{"Resources": {"B": {"Type": "AWS::S3::Bucket", '
                   '"Properties": {"Versioning": true}}}}')
    result = subprocess.run([*cfn_lint(), str(bad)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0


def test_cdk_synth_without_credentials(tmp_path: Path) -> None:
    if MISSING:  # the CLI runs `python3 -m infra.app`, which needs aws-cdk-lib
        pytest.skip(f"{', '.join(MISSING)} missing: {INSTALL_HINT}")
    cli = require_cdk_cli()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CDK_DEFAULT_"))}
    env.update({
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probing offline
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        # `python3` in cdk.json must be this interpreter (the one with aws-cdk-lib).
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    started = time.perf_counter()
    result = subprocess.run(
        [str(cli), "synth", "--quiet", "--output", str(tmp_path / "cdk.out"),
         "-c", "genkiln:modelArtifact=s3://b/models/job/output/model.tar.gz"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout + result.stderr
    names = sorted(p.name for p in (tmp_path / "cdk.out").glob("*.template.json"))
    assert names == ["genkiln-dev-data.template.json", "genkiln-dev-serving.template.json",
                     "genkiln-dev-training.template.json"]
    # Without credentials the CLI still sets a default region (but no account): the
    # templates stay environment-agnostic, with no literal region in them.
    # (CDK's own region tables, in Mappings, are keyed by every region; they are looked
    # up with the deploying region.)
    for name in names:
        template = json.loads((tmp_path / "cdk.out" / name).read_text())
        text = json.dumps([template.get("Resources"), template.get("Outputs")])
        assert not re.findall(r'"(?:us|eu|ap|sa|ca|me|af|il)-[a-z]+-\d"', text), name
    manifest = json.loads((tmp_path / "cdk.out" / "manifest.json").read_text())
    environments = {a["environment"] for a in manifest["artifacts"].values()
                    if a["type"] == "aws:cloudformation:stack"}
    assert environments == {"aws://unknown-account/unknown-region"}
    print(f"\nnpx cdk synth (3 stacks, no credentials): {seconds:.1f} s")
