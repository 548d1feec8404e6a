"""`cdk bootstrap` → `cdk deploy --all` → `cdk destroy --all` against moto on localhost.

The real CLI deploys the real templates into a moto server on a free loopback port, and
boto3 then checks what exists. moto's CloudFormation skips bucket policies, public
access blocks, versioning and lifecycle of buckets, autoscaling, alarms, model package
groups and pipelines; the template assertions in the other test modules cover those.
Docker is kept out: asset publishing runs a stand-in `docker` that succeeds without
building, so the image URI output points at a tag that moto never received.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.outputs import load_outputs

from .conftest import INSTALL_HINT, MISSING, MODEL_ARTIFACT, REPO_ROOT, require_cdk_cli

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
STACKS = ("genkiln-dev-data", "genkiln-dev-training", "genkiln-dev-serving")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Snapshot:
    """What boto3 sees in moto at one moment."""

    buckets: set[str]
    role_names: set[str]
    key_states: dict[str, str]  # key ARN -> state (only the keys asked about)
    endpoints: set[str]
    stacks: set[str]  # stacks not DELETE_COMPLETE


@dataclass
class Cycle:
    outputs: dict[str, Any]
    raw_outputs: dict[str, dict[str, str]]
    deployed: Snapshot
    destroyed: Snapshot
    details: dict[str, Any]
    seconds: dict[str, float]


def aws(service: str, endpoint: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def snapshot(endpoint: str, key_arns: list[str]) -> Snapshot:
    states = {}
    for arn in key_arns:
        try:
            states[arn] = aws("kms", endpoint).describe_key(KeyId=arn)["KeyMetadata"][
                "KeyState"]
        except aws("kms", endpoint).exceptions.NotFoundException:
            states[arn] = "NotFound"
    stacks = aws("cloudformation", endpoint).list_stacks()["StackSummaries"]
    return Snapshot(
        buckets={b["Name"] for b in aws("s3", endpoint).list_buckets()["Buckets"]},
        role_names={r["RoleName"] for r in aws("iam", endpoint).list_roles()["Roles"]},
        key_states=states,
        endpoints={e["EndpointName"]
                   for e in aws("sagemaker", endpoint).list_endpoints()["Endpoints"]},
        stacks={s["StackName"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"},
    )


def deployed_details(endpoint: str, outputs: dict[str, Any]) -> dict[str, Any]:
    s3, iam, sagemaker = aws("s3", endpoint), aws("iam", endpoint), aws("sagemaker", endpoint)
    role_name = outputs["execution_role_arn"].rsplit("/", 1)[-1]
    config_name = sagemaker.describe_endpoint(EndpointName=outputs["endpoint_name"])[
        "EndpointConfigName"]
    config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
    (model_name,) = {v["ModelName"] for v in config["ProductionVariants"]}
    return {
        "encryption": {
            name: s3.get_bucket_encryption(Bucket=outputs[name])[
                "ServerSideEncryptionConfiguration"]["Rules"][0][
                "ApplyServerSideEncryptionByDefault"]
            for name in ("data_bucket", "artifact_bucket", "capture_bucket")},
        "rotation": aws("kms", endpoint).get_key_rotation_status(
            KeyId=outputs["key_arn"])["KeyRotationEnabled"],
        "trust": iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"],
        "managed_policies": iam.list_attached_role_policies(RoleName=role_name)[
            "AttachedPolicies"],
        "inline_policies": [
            iam.get_role_policy(RoleName=role_name, PolicyName=p)["PolicyDocument"]
            for p in iam.list_role_policies(RoleName=role_name)["PolicyNames"]],
        "capture": config["DataCaptureConfig"],
        "model": sagemaker.describe_model(ModelName=model_name),
    }


@pytest.fixture(scope="module")
def cycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cycle]:
    if MISSING:
        pytest.skip(f"{', '.join(MISSING)} missing: {INSTALL_HINT}")
    cli = require_cdk_cli()
    work = tmp_path_factory.mktemp("deploy")
    port = free_port()
    endpoint = f"http://localhost:{port}"  # the CLI resolves `localhost`, as moto's S3 needs
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("moto_server.py")),
         "-H", "localhost", "-p", str(port)],
        stdout=(work / "moto.log").open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"moto did not start: {(work / 'moto.log').read_text()}")
                time.sleep(0.2)
        yield run_cycle(cli, work, endpoint)
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_cycle(cli: Path, work: Path, endpoint: str) -> Cycle:
    # A `docker` that builds and pushes nothing: the CLI's asset publishing calls it.
    docker = work / "docker"
    docker.write_text("#!/bin/sh\n# deploy-cycle stand-in: no daemon offline\nexit 0\n")
    docker.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CDK_DEFAULT_"))}
    env.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(work / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"),
        "CDK_DOCKER": str(docker), "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    context = ["-c", f"genkiln:modelArtifact={MODEL_ARTIFACT}"]
    common = ["--no-notices", "--output", str(work / "cdk.out")]

    def cdk(*args: str) -> float:
        started = time.perf_counter()
        result = subprocess.run([str(cli), *args, *common, *context], cwd=REPO_ROOT,
                                env=env, capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, f"cdk {args[0]} failed:\n{result.stderr[-6000:]}"
        return time.perf_counter() - started

    seconds: dict[str, float] = {}
    seconds["bootstrap"] = cdk("bootstrap", f"aws://{ACCOUNT}/{REGION}")
    outputs_file = work / "cdk-outputs.json"
    seconds["deploy"] = cdk("deploy", "--all", "--method=direct",
                            "--require-approval", "never", "--outputs-file", str(outputs_file))
    outputs = load_outputs(outputs_file)
    raw_outputs = json.loads(outputs_file.read_text())
    deployed = snapshot(endpoint, [outputs["key_arn"]])
    details = deployed_details(endpoint, dict(outputs))
    seconds["destroy"] = cdk("destroy", "--all", "--force")
    destroyed = snapshot(endpoint, [outputs["key_arn"]])
    seconds["total"] = sum(seconds.values())
    print("\nmoto deploy cycle: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return Cycle(outputs=dict(outputs), raw_outputs=raw_outputs, deployed=deployed,
                 destroyed=destroyed, details=details, seconds=seconds)


def test_every_stack_deployed_and_wrote_its_outputs(cycle: Cycle) -> None:
    assert set(cycle.raw_outputs) == set(STACKS)
    assert set(STACKS) <= cycle.deployed.stacks
    assert cycle.outputs["image_uri"].startswith(
        f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/")
    assert cycle.outputs["model_package_group"] == "genkiln-dev-models"


def test_buckets_exist_encrypted_with_the_project_key(cycle: Cycle) -> None:
    names = ("data_bucket", "artifact_bucket", "capture_bucket", "access_log_bucket")
    assert {cycle.outputs[n] for n in names} <= cycle.deployed.buckets
    for name, rule in cycle.details["encryption"].items():
        assert rule == {"SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": cycle.outputs["key_arn"]}, name


def test_key_exists_with_rotation(cycle: Cycle) -> None:
    assert cycle.deployed.key_states[cycle.outputs["key_arn"]] == "Enabled"
    assert cycle.details["rotation"] is True


def test_execution_role_is_sagemakers_with_scoped_inline_policy(cycle: Cycle) -> None:
    role_name = cycle.outputs["execution_role_arn"].rsplit("/", 1)[-1]
    assert role_name in cycle.deployed.role_names
    (statement,) = cycle.details["trust"]["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert cycle.details["managed_policies"] == []
    resources = [r for doc in cycle.details["inline_policies"]
                 for s in doc["Statement"]
                 for r in (s["Resource"] if isinstance(s["Resource"], list)
                           else [s["Resource"]])]
    data_arn = f"arn:aws:s3:::{cycle.outputs['data_bucket']}"
    assert f"{data_arn}/datasets/*" in resources  # deployed with real names substituted
    assert f"{data_arn}/*" not in resources


def test_endpoint_serves_the_artifact_and_captures_encrypted(cycle: Cycle) -> None:
    assert cycle.outputs["endpoint_name"] in cycle.deployed.endpoints
    model = cycle.details["model"]
    # Endpoints run as the serving role, never the training role.
    assert model["ExecutionRoleArn"] == cycle.outputs["serving_role_arn"]
    assert model["ExecutionRoleArn"] != cycle.outputs["execution_role_arn"]
    assert model["PrimaryContainer"]["Image"] == cycle.outputs["image_uri"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_ARTIFACT
    capture = cycle.details["capture"]
    assert capture["EnableCapture"] is True
    assert capture["KmsKeyId"] == cycle.outputs["key_arn"]
    assert capture["DestinationS3Uri"] == f"s3://{cycle.outputs['capture_bucket']}/capture/"


def test_destroy_removes_what_deploy_created(cycle: Cycle) -> None:
    assert not set(STACKS) & cycle.destroyed.stacks
    # moto re-creates resources of a deleted stack when its resource list is read
    # afterwards (a lazy map), under new random names; so the check is that the
    # resources deploy created, by their deployed names, are gone.
    created_buckets = {cycle.outputs[n] for n in ("data_bucket", "artifact_bucket",
                                                  "capture_bucket", "access_log_bucket")}
    assert not created_buckets & cycle.destroyed.buckets
    assert cycle.outputs["endpoint_name"] not in cycle.destroyed.endpoints
    role_name = cycle.outputs["execution_role_arn"].rsplit("/", 1)[-1]
    assert role_name not in cycle.destroyed.role_names
    # A dev key is scheduled for deletion, not deleted at once (a 7-day window).
    assert cycle.destroyed.key_states[cycle.outputs["key_arn"]] in {"PendingDeletion",
                                                                    "NotFound"}
