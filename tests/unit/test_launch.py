"""sagemaker mode against moto: the control-plane requests the launcher and deployer make.

Every SageMaker request is recorded as boto3 sends it (moto rewrites some fields of what it
stores, e.g. a training job's metric definitions), and moto's own record is read back to
show the request was accepted as a whole.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import moto
import pytest

from genkiln import deploy as deployer
from genkiln import launch, sagemaker_sdk
from genkiln.cli import build_parser, main
from tests.docker_env import require_sagemaker_sdk
from training.models import get_family

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _sdk() -> None:
    require_sagemaker_sdk()


REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/genkiln-execution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/genkiln:1.0"
ARTIFACTS = "genkiln-artifacts"
DATA = "genkiln-data"
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """moto for every AWS service, with the role and buckets the CDK stacks would create.

    Yields the list of (operation, parameters) that boto3 clients send, in order.
    """
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # The SDK checks the role with iam:SimulatePrincipalPolicy, which moto does not have.
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    sent: list[tuple[str, dict[str, Any]]] = []
    original = botocore.client.BaseClient._make_api_call

    def record(client: Any, operation: str, params: dict[str, Any]) -> Any:
        sent.append((operation, params))
        return original(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    with moto.mock_aws(), sagemaker_sdk.telemetry_opted_out():
        boto3.client("iam").create_role(RoleName="genkiln-execution",
                                        AssumeRolePolicyDocument=json.dumps({}))
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=ARTIFACTS)
        s3.create_bucket(Bucket=DATA)
        sent.clear()
        yield sent


def only(sent: list[tuple[str, dict[str, Any]]], operation: str) -> dict[str, Any]:
    matching = [params for name, params in sent if name == operation]
    assert len(matching) == 1, f"{operation} sent {len(matching)} times"
    return matching[0]


def train_args(*argv: str) -> argparse.Namespace:
    """`genkiln train ...` as the command line parses it."""
    args, _ = build_parser().parse_known_args(["train", *argv])
    return args


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    (folder / "books").mkdir(parents=True)
    (folder / "a.txt").write_text("the quick brown fox\n")
    (folder / "books" / "b.txt").write_text("jumps over the lazy dog\n")
    return folder


@pytest.mark.slow
def test_training_job_request_carries_the_launch(aws, corpus: Path) -> None:
    status = main([
        "train", "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE, "--bucket", ARTIFACTS,
        "--instance-type", "ml.g5.xlarge", "--instance-count", "2", "--spot",
        "--max-run", "3600", "--max-wait", "7200", "--no-wait", "--data", str(corpus),
        "--family", "transformer", "--max_steps", "20", "--learning_rate=0.001",
    ])
    assert status == 0
    hyperparameters = {"family": "transformer", "max_steps": "20", "learning_rate": "0.001"}

    request = only(aws, "CreateTrainingJob")
    assert request["RoleArn"] == ROLE
    spec = request["AlgorithmSpecification"]
    assert spec["TrainingImage"] == IMAGE
    assert spec["MetricDefinitions"] == list(get_family("transformer").metric_definitions)
    # No entry point override: SageMaker runs the image's `train`.
    assert "ContainerEntrypoint" not in spec
    assert request["HyperParameters"] == hyperparameters
    assert all(isinstance(v, str) for v in request["HyperParameters"].values())
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600,
                                            "MaxWaitTimeInSeconds": 7200}
    checkpoint = request["CheckpointConfig"]
    assert checkpoint["S3Uri"].startswith(f"s3://{ARTIFACTS}/checkpoints/genkiln-transformer-")
    assert checkpoint["LocalPath"] == "/opt/ml/checkpoints"
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{ARTIFACTS}/models"

    [channel] = request["InputDataConfig"]
    assert channel["ChannelName"] == "train"
    uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
    assert uri.startswith(f"s3://{ARTIFACTS}/datasets/")
    prefix = uri.removeprefix(f"s3://{ARTIFACTS}/")
    listed = boto3.client("s3").list_objects_v2(Bucket=ARTIFACTS, Prefix=prefix)
    assert sorted(o["Key"].removeprefix(prefix) for o in listed["Contents"]) == [
        "a.txt", "books/b.txt"]

    # moto kept the job as sent.
    job = boto3.client("sagemaker").describe_training_job(
        TrainingJobName=request["TrainingJobName"])
    assert job["RoleArn"] == ROLE
    assert job["HyperParameters"] == hyperparameters
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"]["S3Uri"] == checkpoint["S3Uri"]
    # Nothing was created outside the stack's buckets (no SDK default bucket).
    assert not [op for op, _ in aws if op == "CreateBucket"]


def test_targets_come_from_the_outputs_file_and_flags_win(tmp_path: Path) -> None:
    outputs = {
        "execution_role_arn": ROLE, "image_uri": IMAGE, "artifact_bucket": ARTIFACTS,
        "data_bucket": DATA, "key_arn": KMS, "subnet_ids": ["subnet-1", "subnet-2"],
        "security_group_id": "sg-1",
    }
    targets = launch.resolve_targets(train_args("--mode", "sagemaker"), outputs)
    assert targets == launch.AwsTargets(
        role_arn=ROLE, image_uri=IMAGE, artifact_bucket=ARTIFACTS, data_bucket=DATA,
        kms_key_arn=KMS, subnet_ids=("subnet-1", "subnet-2"), security_group_ids=("sg-1",))

    targets = launch.resolve_targets(train_args("--mode", "sagemaker", "--image", "mine:2",
                                                "--role", "arn:aws:iam::1:role/other"), outputs)
    assert (targets.image_uri, targets.role_arn) == ("mine:2", "arn:aws:iam::1:role/other")
    assert targets.artifact_bucket == ARTIFACTS


def test_outputs_file_is_read_with_the_infra_reader(tmp_path: Path) -> None:
    outputs_module = pytest.importorskip("infra.outputs")
    names = outputs_module
    document = {"genkiln-dev-core": {
        names.DATA_BUCKET: DATA, names.ARTIFACT_BUCKET: ARTIFACTS,
        names.CAPTURE_BUCKET: "capture", names.ACCESS_LOG_BUCKET: "logs",
        names.KEY_ARN: KMS, names.EXECUTION_ROLE_ARN: ROLE, names.IMAGE_URI: IMAGE,
        names.MODEL_PACKAGE_GROUP: "genkiln-models", names.PIPELINE_NAME: "genkiln-pipeline",
    }}
    path = tmp_path / "cdk-outputs.json"
    path.write_text(json.dumps(document))
    targets = launch.resolve_targets(train_args("--mode", "sagemaker", "--outputs-file",
                                                str(path)))
    assert (targets.role_arn, targets.image_uri, targets.data_bucket) == (ROLE, IMAGE, DATA)
    assert targets.kms_key_arn == KMS


def test_missing_targets_name_the_flags(tmp_path: Path) -> None:
    args = train_args("--mode", "sagemaker", "--outputs-file", str(tmp_path / "absent.json"))
    with pytest.raises(ValueError, match=r"--bucket, --image, --role.*cdk deploy"):
        launch.resolve_targets(args)


def test_spot_wait_shorter_than_run_is_refused(aws, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([
        "train", "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE, "--bucket", ARTIFACTS,
        "--instance-type", "ml.m5.xlarge", "--spot", "--max-run", "7200", "--max-wait", "3600",
    ])
    assert status == 1
    assert "--max-wait (3600 s) must be at least --max-run (7200 s)" in capsys.readouterr().err
    assert not [op for op, _ in aws if op == "CreateTrainingJob"]


@pytest.mark.slow
def test_s3_data_is_used_where_it_is(aws) -> None:
    status = main([
        "train", "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE, "--bucket", ARTIFACTS,
        "--instance-type", "ml.m5.xlarge", "--no-wait", "--data", f"s3://{DATA}/corpus/",
        "--validation", f"s3://{DATA}/held-out/",
    ])
    assert status == 0
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in only(aws, "CreateTrainingJob")["InputDataConfig"]}
    assert channels == {"train": f"s3://{DATA}/corpus/", "validation": f"s3://{DATA}/held-out/"}
    assert not [op for op, _ in aws if op == "PutObject"]


@pytest.mark.slow
def test_a_racers_reward_file_goes_up_as_its_reward_channel(aws, tmp_path: Path) -> None:
    reward = tmp_path / "my_reward.py"
    reward.write_text("def reward_function(params):\n    return 1.0\n")
    status = main([
        "train", "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE, "--bucket", ARTIFACTS,
        "--instance-type", "ml.m5.xlarge", "--no-wait", "--family", "racer",
        "--reward", str(reward), "--max_steps", "2",
    ])
    assert status == 0
    request = only(aws, "CreateTrainingJob")
    [channel] = request["InputDataConfig"]
    assert channel["ChannelName"] == "reward"
    uploaded = [params for op, params in aws if op == "PutObject"]
    assert [p["Key"].rsplit("/", 1)[-1] for p in uploaded] == ["my_reward.py"]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"].endswith("/reward/")
    names = {m["Name"] for m in request["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"val_completion_rate", "episode_reward", "val_lap_time_ratio"} <= names


def test_hyperparameter_typos_fail_before_any_request(
        aws, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([
        "train", "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE, "--bucket", ARTIFACTS,
        "--instance-type", "ml.m5.xlarge", "--max_step", "20",
    ])
    assert status == 2
    error = capsys.readouterr().err
    assert "unknown hyperparameter max_step" in error and "max_steps" in error
    assert not [op for op, _ in aws if op.startswith("Create")]


def test_container_mode_reads_local_folders_only() -> None:
    training = launch.TrainingLaunch(family="transformer", hyperparameters={},
                                     channels={"train": "s3://bucket/corpus/"})
    with pytest.raises(ValueError, match="local folders"):
        launch.train_in_container(training, image="genkiln:latest", model_dir=Path("unused"))


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "genkiln.json").write_text(json.dumps({"format_version": 1}))
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    return folder


def model_files(bucket: str, key: str) -> list[str]:
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return sorted(tar.getnames())


@pytest.mark.slow
def test_realtime_endpoint_requests(aws, artifact: Path) -> None:
    assert main([
        "deploy", str(artifact), "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE,
        "--bucket", ARTIFACTS, "--instance-type", "ml.g4dn.xlarge", "--instance-count", "2",
        "--endpoint-name", "genkiln-test", "--env", "GENKILN_LOG_LEVEL=debug",
    ]) == 0

    model = only(aws, "CreateModel")
    assert model["ModelName"] == "genkiln-test"
    assert model["ExecutionRoleArn"] == ROLE
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert container["Environment"] == {"GENKILN_LOG_LEVEL": "debug"}
    assert container["ModelDataUrl"] == f"s3://{ARTIFACTS}/models/genkiln-test/model.tar.gz"
    # SageMaker unpacks the tarball into /opt/ml/model: files at its root.
    assert model_files(ARTIFACTS, "models/genkiln-test/model.tar.gz") == [
        "genkiln.json", "model.safetensors"]

    config = only(aws, "CreateEndpointConfig")
    assert config["ProductionVariants"] == [{
        "VariantName": "AllTraffic", "ModelName": "genkiln-test",
        "InstanceType": "ml.g4dn.xlarge", "InitialInstanceCount": 2}]
    assert "AsyncInferenceConfig" not in config
    assert only(aws, "CreateEndpoint") == {"EndpointName": "genkiln-test",
                                           "EndpointConfigName": "genkiln-test"}
    described = boto3.client("sagemaker").describe_endpoint(EndpointName="genkiln-test")
    assert described["EndpointStatus"] == "InService"


def test_serverless_endpoint_has_no_instances(aws) -> None:
    uri = f"s3://{ARTIFACTS}/models/job/output/model.tar.gz"
    assert main([
        "deploy", uri, "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE,
        "--bucket", ARTIFACTS, "--serverless", "4096", "--max-concurrency", "2",
        "--endpoint-name", "genkiln-sls", "--no-wait",
    ]) == 0
    # An S3 artifact is used where it is, not copied.
    assert only(aws, "CreateModel")["PrimaryContainer"]["ModelDataUrl"] == uri
    [variant] = only(aws, "CreateEndpointConfig")["ProductionVariants"]
    assert variant == {"VariantName": "AllTraffic", "ModelName": "genkiln-sls",
                       "ServerlessConfig": {"MemorySizeInMB": 4096, "MaxConcurrency": 2}}


@pytest.mark.slow
def test_async_endpoint_writes_to_the_artifact_bucket(aws, artifact: Path) -> None:
    assert main([
        "deploy", str(artifact), "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE,
        "--bucket", ARTIFACTS, "--instance-type", "ml.m5.xlarge", "--async",
        "--endpoint-name", "genkiln-async", "--no-wait",
    ]) == 0
    config = only(aws, "CreateEndpointConfig")
    assert config["AsyncInferenceConfig"] == {"OutputConfig": {
        "S3OutputPath": f"s3://{ARTIFACTS}/async/genkiln-async/responses",
        "S3FailurePath": f"s3://{ARTIFACTS}/async/genkiln-async/failures"}}
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.xlarge"


def test_endpoint_without_instances_or_serverless_is_refused(aws, artifact: Path) -> None:
    args, _ = build_parser().parse_known_args([
        "deploy", str(artifact), "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE,
        "--bucket", ARTIFACTS])
    with pytest.raises(ValueError, match="--instance-type"):
        deployer.deploy(args)
    assert not [op for op, _ in aws if op.startswith("Create")]


def test_local_control_plane_makes_no_aws_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Container mode: the local session's clients never reach boto3 (no STS, no S3)."""
    sent: list[str] = []

    def refuse(client: Any, operation: str, params: dict[str, Any]) -> Any:
        sent.append(operation)
        raise AssertionError(f"local mode called AWS: {operation}")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", refuse)
    with sagemaker_sdk.telemetry_opted_out():
        session = sagemaker_sdk.local_session("eu-west-1")
        spec = deployer.EndpointSpec(name="offline", image="genkiln:latest",
                                     model_data_url="file:///tmp/model", environment={},
                                     instance_type="local_cpu")
        client = session.sagemaker_client
        client.create_model(**spec.model_request())
        client.create_endpoint_config(**spec.endpoint_config_request())
        assert client.describe_model(ModelName="offline")["PrimaryContainer"]["Image"] == (
            "genkiln:latest")
        client.delete_endpoint_config(EndpointConfigName="offline")
        client.delete_model(ModelName="offline")
    assert sent == []


def test_telemetry_opt_out_config_is_scoped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sagemaker_sdk.USER_CONFIG_ENV, raising=False)
    import os

    with sagemaker_sdk.telemetry_opted_out() as config:
        assert os.environ[sagemaker_sdk.USER_CONFIG_ENV] == str(config)
        assert "TelemetryOptOut: true" in config.read_text()
    assert sagemaker_sdk.USER_CONFIG_ENV not in os.environ


def test_tuning_job_searches_the_family_ranges(aws, corpus: Path) -> None:
    status = main([
        "train", "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE, "--bucket", ARTIFACTS,
        "--instance-type", "ml.g5.xlarge", "--instance-count", "2", "--spot",
        "--max-run", "3600", "--tune", "8", "--tune-parallel", "2", "--data", str(corpus),
        "--family", "transformer", "--max_steps", "600", "--dropout", "0.1",
    ])
    assert status == 0
    request = only(aws, "CreateHyperParameterTuningJob")
    name = request["HyperParameterTuningJobName"]
    assert name.startswith("genkiln-transformer-") and len(name) <= 32
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize",
                                                         "MetricName": "val_loss"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 8,
                                        "MaxParallelTrainingJobs": 2}
    ranges = config["ParameterRanges"]
    assert {"Name": "learning_rate", "MinValue": "0.0003", "MaxValue": "0.01",
            "ScalingType": "Logarithmic"} in ranges["ContinuousParameterRanges"]
    assert {"Name": "n_layer", "MinValue": "2", "MaxValue": "6",
            "ScalingType": "Auto"} in ranges["IntegerParameterRanges"]
    tuned = {r["Name"] for group in ranges.values() for r in group}
    # The user fixed dropout: it is static, not searched.
    assert tuned == {"learning_rate", "weight_decay", "n_layer"}

    definition = request["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"] == {"family": "transformer", "max_steps": "600",
                                                   "dropout": "0.1"}
    spec = definition["AlgorithmSpecification"]
    assert spec["TrainingImage"] == IMAGE
    assert spec["MetricDefinitions"] == list(get_family("transformer").metric_definitions)
    assert definition["ResourceConfig"]["InstanceCount"] == 2
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600,
                                               "MaxWaitTimeInSeconds": 7200}
    assert definition["CheckpointConfig"]["S3Uri"] == f"s3://{ARTIFACTS}/checkpoints/{name}"
    [channel] = definition["InputDataConfig"]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{ARTIFACTS}/datasets/{name}/train/")

    job = boto3.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name)
    assert job["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"][
        "MetricName"] == "val_loss"
    assert not [op for op, _ in aws if op == "CreateTrainingJob"]


def test_every_family_tunes_valid_settings_toward_a_metric_it_prints() -> None:
    from training.config import TrainConfig
    from training.hyperparameters import build
    from training.models import FAMILIES

    for family in FAMILIES.values():
        assert family.tuning.objective in family.metrics, family.name
        assert family.tuning.ranges, family.name
        for key, r in family.tuning.ranges.items():
            for end in r.ends():
                values = {**family.train_defaults, "family": family.name, key: end}
                launch.check_hyperparameters(values)
                build(TrainConfig, values)


def test_a_tuning_job_with_nothing_left_to_tune_is_refused(
        aws, capsys: pytest.CaptureFixture[str]) -> None:
    fixed = [token for key in get_family("autoencoder").tuning.ranges
             for token in (f"--{key}", "0.001" if key == "learning_rate" else "16")]
    status = main([
        "train", "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE, "--bucket", ARTIFACTS,
        "--instance-type", "ml.m5.xlarge", "--tune", "4", "--family", "autoencoder", *fixed,
    ])
    assert status == 1
    assert "leave at least one unset to tune it" in capsys.readouterr().err
    assert not [op for op, _ in aws if op.startswith("Create")]


def test_rbm_on_several_instances_is_refused_before_any_request(
        aws, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([
        "train", "--mode", "sagemaker", "--role", ROLE, "--image", IMAGE, "--bucket", ARTIFACTS,
        "--instance-type", "ml.m5.xlarge", "--instance-count", "2", "--family", "rbm",
    ])
    assert status == 1
    assert "the rbm family trains on one process only" in capsys.readouterr().err
    assert not [op for op, _ in aws if op.startswith("Create")]
