"""The outputs reader the launcher uses, and the outputs the stacks really declare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra import outputs
from infra.outputs import OutputsError, load_outputs

from .conftest import Assembly

BASE = {
    outputs.DATA_BUCKET: "data-b", outputs.ARTIFACT_BUCKET: "art-b",
    outputs.CAPTURE_BUCKET: "cap-b", outputs.ACCESS_LOG_BUCKET: "log-b",
    outputs.KEY_ARN: "arn:aws:kms:r:1:key/k",
}
TRAINING = {
    outputs.EXECUTION_ROLE_ARN: "arn:aws:iam::1:role/r",
    outputs.IMAGE_URI: "1.dkr.ecr.r.amazonaws.com/repo:tag",
    outputs.MODEL_PACKAGE_GROUP: "genkiln-dev-models", outputs.PIPELINE_NAME: "p",
}


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "cdk-outputs.json"
    path.write_text(json.dumps(document))
    return path


def test_reads_a_deployment_without_serving(tmp_path: Path) -> None:
    path = write(tmp_path, {"genkiln-dev-data": BASE, "genkiln-dev-training": TRAINING})
    result = load_outputs(path)
    assert result["data_bucket"] == "data-b"
    assert result["execution_role_arn"] == "arn:aws:iam::1:role/r"
    assert result["image_uri"].endswith(":tag")
    assert "endpoint_name" not in result
    assert "subnet_ids" not in result


def test_reads_the_endpoint_and_network_when_deployed(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "genkiln-dev-data": BASE,
        "genkiln-dev-training": {**TRAINING, outputs.SUBNET_IDS: "subnet-a,subnet-b",
                                 outputs.SECURITY_GROUP_ID: "sg-1"},
        "genkiln-dev-serving": {outputs.ENDPOINT_NAME: "genkiln-dev-endpoint"},
    })
    result = load_outputs(path)
    assert result["endpoint_name"] == "genkiln-dev-endpoint"
    assert result["subnet_ids"] == ["subnet-a", "subnet-b"]
    assert result["security_group_id"] == "sg-1"


def test_stages_in_one_file_do_not_mix(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "genkiln-dev-data": BASE, "genkiln-dev-training": TRAINING,
        "genkiln-prod-data": {**BASE, outputs.DATA_BUCKET: "prod-data"},
        "genkiln-prod-training": TRAINING,
    })
    assert load_outputs(path)["data_bucket"] == "data-b"
    assert load_outputs(path, stage="prod")["data_bucket"] == "prod-data"


def test_a_partial_deployment_names_what_is_missing(tmp_path: Path) -> None:
    path = write(tmp_path, {"genkiln-dev-data": BASE})
    with pytest.raises(OutputsError, match=outputs.EXECUTION_ROLE_ARN):
        load_outputs(path)


def test_a_missing_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(OutputsError, match="--outputs-file"):
        load_outputs(tmp_path / "nope.json")


def test_the_reader_does_not_import_cdk() -> None:
    source = Path(outputs.__file__).read_text()
    assert "aws_cdk" not in source and "constructs" not in source


def test_the_stacks_declare_every_output_the_reader_needs(default: Assembly,
                                                          prod: Assembly) -> None:
    declared = {name for template in default.stacks.values()
                for name in template.get("Outputs", {})}
    assert set(outputs.REQUIRED) <= declared
    declared_prod = {name for template in prod.stacks.values()
                     for name in template.get("Outputs", {})}
    assert {outputs.ENDPOINT_NAME, outputs.SUBNET_IDS,
            outputs.SECURITY_GROUP_ID} <= declared_prod
