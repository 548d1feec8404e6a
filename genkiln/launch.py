"""Launch `genkiln train` in a container: SageMaker local mode or a SageMaker training job.

`genkiln train --mode local` (the default) runs the entry point in-process; this module
handles the two other modes with the same arguments:

- `container`: the SDK's local mode (`ModelTrainer(training_mode=Mode.LOCAL_CONTAINER)`)
  runs the project image under Docker Compose with the `/opt/ml` tree SageMaker would
  give it. No AWS call is made: telemetry is opted out and channels are local folders.
- `sagemaker`: `ModelTrainer` starts a real training job: instance type and count,
  managed spot with a maximum wait and a checkpoint S3 URI, the family's metric
  definitions, outputs to the artifact bucket. Role, image and buckets come from the
  `cdk deploy --outputs-file` file, or from explicit flags, which win.

`ModelTrainer` is used in both modes so that they differ in `training_mode` and the
session only; it writes the string-to-string hyperparameter map SageMaker requires.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genkiln import sagemaker_sdk
from infra import layout
from infra.instances import is_gpu, volume_key, volume_size

log = logging.getLogger(__name__)

MODES = ("local", "container", "sagemaker")
DEFAULT_IMAGE = "genkiln:latest"
IMAGE_ENV = "GENKILN_IMAGE"
DEFAULT_OUTPUTS_FILE = "cdk-outputs.json"
DEFAULT_FAMILY = "transformer"
DEFAULT_MODEL_DIR = "artifacts/model"
# SageMaker channel name -> the `genkiln train` flag that names its data.
CHANNEL_FLAGS = {"train": "data", "validation": "validation", "model": "refine",
                 "feedback": "feedback", "reward": "reward"}
# SageMaker's own defaults for a training job: one day of run time.
DEFAULT_MAX_RUN_S = 24 * 3600


@dataclass(frozen=True)
class AwsTargets:
    """Where a SageMaker job or endpoint runs: from flags, else the CDK outputs file."""

    role_arn: str  # training jobs run as this role
    image_uri: str  # the CPU image (or the one --image names)
    artifact_bucket: str
    data_bucket: str
    kms_key_arn: str | None = None
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    cuda_image_uri: str | None = None  # for GPU instance types
    serving_role_arn: str | None = None  # endpoints run as this role
    capture_bucket: str | None = None  # endpoints' data capture and feedback
    explicit_image: bool = False  # --image named one image for every instance type

    def image_for(self, instance_type: str) -> str:
        """The image for ``instance_type``: the CUDA build on a GPU."""
        if self.explicit_image or not is_gpu(instance_type):
            return self.image_uri
        if self.cuda_image_uri is None:
            raise ValueError(f"{instance_type} has a GPU, and this stage has no CUDA image: "
                             f"deploy it with `-c genkiln:images=both` (or a GPU instance "
                             f"type in cdk.json), or pass --image")
        return self.cuda_image_uri

    @property
    def endpoint_role_arn(self) -> str:
        return self.serving_role_arn or self.role_arn


@dataclass(frozen=True)
class TrainingLaunch:
    """One training run in a container, whatever the mode."""

    family: str
    hyperparameters: Mapping[str, str]
    # Channel name -> local folder (container mode) or folder / s3:// URI (sagemaker mode).
    channels: Mapping[str, str] = field(default_factory=dict)
    instance_type: str | None = None
    instance_count: int = 1
    job_name: str | None = None
    spot: bool = False
    max_run_s: int = DEFAULT_MAX_RUN_S
    max_wait_s: int | None = None
    checkpoint_s3_uri: str | None = None
    wait: bool = True
    # A hyperparameter tuning job of this many training jobs (0: one training job).
    tune_jobs: int = 0
    tune_parallel_jobs: int = 2

    def base_job_name(self) -> str:
        # Job names allow [a-zA-Z0-9-] and 63 characters. Two timestamps follow this base in
        # sagemaker mode: the run's (-YYYYmmdd-HHMMSS, which also keys its S3 prefixes) and
        # the SDK's (-YYYYmmddHHMMSS), 31 characters, and the SDK cuts what is longer.
        name = self.job_name or f"genkiln-{self.family}"
        return "".join(c if c.isalnum() or c == "-" else "-" for c in name)[:32].strip("-")


# -- command line -------------------------------------------------------------------------


def add_launch_arguments(
    parser: argparse.ArgumentParser, *, modes: tuple[str, ...] = MODES, default_mode: str = "local"
) -> None:
    """Flags shared by `genkiln train --mode ...` and `genkiln deploy --mode ...`."""
    group = parser.add_argument_group("container and SageMaker launches")
    group.add_argument("--mode", choices=modes, default=default_mode,
                       help="local: in-process; container: SageMaker local mode under Docker; "
                            f"sagemaker: a SageMaker job or endpoint (default: {default_mode})")
    group.add_argument("--image", default=None,
                       help=f"image to run (container mode: ${IMAGE_ENV} or {DEFAULT_IMAGE}; "
                            "sagemaker mode: the ECR image from the outputs file)")
    group.add_argument("--instance-type", default=None,
                       help="SageMaker instance type, e.g. ml.g5.xlarge (container mode: "
                            "local_cpu or local_gpu; default local_cpu)")
    group.add_argument("--instance-count", type=int, default=1,
                       help="number of instances (distributed training when > 1)")
    group.add_argument("--outputs-file", default=DEFAULT_OUTPUTS_FILE,
                       help="`cdk deploy --outputs-file` JSON naming role, image and buckets "
                            f"(default {DEFAULT_OUTPUTS_FILE})")
    group.add_argument("--stage", default="dev", help="deployment stage in the outputs file")
    group.add_argument("--role", default=None, help="SageMaker execution role ARN")
    group.add_argument("--bucket", default=None,
                       help="S3 bucket for data and artifacts (default: the stack's buckets)")
    group.add_argument("--region", default=None, help="AWS region (default: the AWS config)")
    group.add_argument("--job-name", default=None, help="base name of the job")


def add_training_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """`genkiln train` flags: the shared ones plus spot training and checkpoints."""
    add_launch_arguments(parser)
    group = parser.add_argument_group("SageMaker training jobs")
    group.add_argument("--spot", action="store_true",
                       help="managed spot training (resumes from checkpoints)")
    group.add_argument("--max-run", type=int, default=DEFAULT_MAX_RUN_S,
                       help="maximum run time in seconds")
    group.add_argument("--max-wait", type=int, default=None,
                       help="spot: maximum seconds to wait and run (>= --max-run; "
                            "default twice --max-run)")
    group.add_argument("--checkpoint-s3-uri", default=None,
                       help="S3 URI synced with /opt/ml/checkpoints "
                            "(default with --spot: s3://ARTIFACT_BUCKET/checkpoints/JOB)")
    group.add_argument("--no-wait", dest="wait", action="store_false",
                       help="return once the job has started")
    group.add_argument("--tune", type=int, default=0, metavar="JOBS",
                       help="sagemaker mode: a hyperparameter tuning job of JOBS training jobs "
                            "over the family's documented ranges (hyperparameters you set "
                            "stay fixed)")
    group.add_argument("--tune-parallel", type=int, default=2, metavar="JOBS",
                       help="training jobs a tuning job runs at once (default 2)")


def launch_training(args: argparse.Namespace, hyperparameters: Mapping[str, str]) -> int:
    """Run `genkiln train` for `--mode container|sagemaker`; returns the exit status.

    `args` carries the launch flags above plus the training command's `--data` and
    `--validation` (folders or files; S3 URIs too in sagemaker mode) and `--model-dir`
    (where container mode puts the artifact). Hyperparameters are the extra
    `--key value` tokens, as strings.
    """
    from training.hyperparameters import HyperparameterError

    try:
        # A typo should fail here, in seconds, not in a container after minutes of start-up
        # (and, in sagemaker mode, on a billed instance).
        check_hyperparameters(hyperparameters)
        return _launch_training(args, hyperparameters)
    except HyperparameterError as err:
        print(f"genkiln train: {err}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"genkiln train: {err}", file=sys.stderr)
        return 1


def check_hyperparameters(values: Mapping[str, str]) -> None:
    """Type and range-check the string hyperparameters as the container will.

    Raises `HyperparameterError` naming the key (and, for an unknown key, the valid ones).
    """
    from training.config import TrainConfig
    from training.hyperparameters import build, check_known
    from training.models import get_family

    family = get_family(values.get("family", TrainConfig.family).strip('"'))
    check_known(values, [TrainConfig, family.config_cls])
    build(TrainConfig, values)
    build(family.config_cls, values)


def data_source(text: str) -> Path | str:
    """`--data`/`--validation`: a local path, or an s3:// URI kept verbatim.

    `Path` would turn `s3://bucket/corpus/` into `s3:/bucket/corpus`, another prefix.
    """
    return text if text.startswith("s3://") else Path(text)


def _launch_training(args: argparse.Namespace, hyperparameters: Mapping[str, str]) -> int:
    from training.models import get_family

    channels = {name: str(getattr(args, flag)) for name, flag in CHANNEL_FLAGS.items()
                if getattr(args, flag, None)}
    launch = TrainingLaunch(
        family=hyperparameters.get("family", DEFAULT_FAMILY).strip('"'),
        hyperparameters={str(k): str(v) for k, v in hyperparameters.items()},
        channels=channels,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        job_name=args.job_name,
        spot=args.spot,
        max_run_s=args.max_run,
        max_wait_s=args.max_wait,
        checkpoint_s3_uri=args.checkpoint_s3_uri,
        wait=args.wait,
        tune_jobs=args.tune,
        tune_parallel_jobs=args.tune_parallel,
    )
    if launch.tune_jobs and args.mode != "sagemaker":
        raise ValueError("--tune starts a SageMaker tuning job: use it with --mode sagemaker")
    family = get_family(launch.family)
    if launch.instance_count > 1 and not family.data_parallel:
        raise ValueError(f"the {family.name} family trains on one process only "
                         f"({family.data_parallel_note}); use --instance-count 1")
    if args.mode == "container":
        image = args.image or os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
        model_dir = Path(getattr(args, "model_dir", None) or DEFAULT_MODEL_DIR)
        result = train_in_container(launch, image=image, model_dir=model_dir,
                                    region=args.region)
        print(f"model artifact: {result.model_dir} (and {result.model_tarball})")
        return 0
    if args.mode == "sagemaker":
        targets = resolve_targets(args)
        if launch.tune_jobs:
            name = tune_on_sagemaker(launch, targets,
                                     session=sagemaker_sdk.aws_session(args.region))
            print(f"tuning job: {name} (aws sagemaker describe-hyper-parameter-tuning-job "
                  f"--hyper-parameter-tuning-job-name {name})")
            return 0
        job = train_on_sagemaker(launch, targets, session=sagemaker_sdk.aws_session(args.region))
        print(f"training job: {job.name} ({job.status})")
        if job.model_s3_uri:
            print(f"model artifact: {job.model_s3_uri}")
        return 0 if job.status in ("Completed", "InProgress", "Stopping") else 1
    raise ValueError(f"launch_training handles container and sagemaker modes, not {args.mode!r}")


# -- AWS targets ----------------------------------------------------------------------------


def resolve_targets(
    args: argparse.Namespace, outputs: Mapping[str, Any] | None = None
) -> AwsTargets:
    """Role, image and buckets: explicit flags first, then the CDK outputs file.

    `outputs` is `infra.outputs.load_outputs(...)`'s mapping; it is read from
    `--outputs-file` when not given and when some value is still missing.
    """
    explicit = {"role_arn": args.role, "image_uri": args.image,
                "artifact_bucket": args.bucket, "data_bucket": args.bucket}
    if outputs is None and not all(explicit.values()):
        outputs = _load_outputs(args.outputs_file, stage=args.stage)
    outputs = outputs or {}
    values: dict[str, Any] = {
        "role_arn": args.role or outputs.get("execution_role_arn"),
        "image_uri": args.image or outputs.get("image_uri") or outputs.get("cuda_image_uri"),
        "artifact_bucket": args.bucket or outputs.get("artifact_bucket"),
        "data_bucket": args.bucket or outputs.get("data_bucket"),
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        flags = {"role_arn": "--role", "image_uri": "--image",
                 "artifact_bucket": "--bucket", "data_bucket": "--bucket"}
        raise ValueError(
            f"missing {', '.join(sorted({flags[m] for m in missing}))}: pass them, or deploy "
            f"the stacks with `npx cdk deploy --all --outputs-file {args.outputs_file}`")
    security_group = outputs.get("security_group_id")
    return AwsTargets(
        **values,
        kms_key_arn=outputs.get("key_arn"),
        subnet_ids=tuple(outputs.get("subnet_ids") or ()),
        security_group_ids=(security_group,) if security_group else (),
        cuda_image_uri=outputs.get("cuda_image_uri"),
        serving_role_arn=args.role or outputs.get("serving_role_arn"),
        capture_bucket=outputs.get("capture_bucket"),
        explicit_image=bool(args.image),
    )


def _load_outputs(path: str, *, stage: str) -> Mapping[str, Any] | None:
    if not Path(path).exists():
        return None
    from infra.outputs import load_outputs  # the CDK app's reader; no CDK import

    return load_outputs(path, stage=stage)


# -- container mode ------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalArtifact:
    model_dir: Path
    model_tarball: Path


def train_in_container(
    launch: TrainingLaunch, *, image: str, model_dir: Path, region: str | None = None
) -> LocalArtifact:
    """Train through the SDK's local mode and copy the artifact to `model_dir`.

    Raises RuntimeError with the container's `/opt/ml/output/failure` text when it fails.
    """
    for name, source in launch.channels.items():
        if source.startswith("s3://") or not Path(source).exists():
            raise ValueError(f"container mode reads channels from local folders or files; "
                             f"channel {name!r} is {source!r}")
    instance_type = launch.instance_type or "local_cpu"
    if instance_type not in ("local_cpu", "local_gpu"):
        raise ValueError(f"container mode runs on local_cpu or local_gpu, not {instance_type}")
    with sagemaker_sdk.telemetry_opted_out():
        from sagemaker.core.training.configs import Compute, InputData
        from sagemaker.train import ModelTrainer
        from sagemaker.train.model_trainer import Mode

        root = Path(tempfile.mkdtemp(prefix="genkiln-local-"))
        try:
            trainer = ModelTrainer(
                training_image=image,
                training_mode=Mode.LOCAL_CONTAINER,
                sagemaker_session=sagemaker_sdk.local_session(region),
                compute=Compute(instance_type=instance_type,
                                instance_count=launch.instance_count),
                hyperparameters=dict(launch.hyperparameters),
                base_job_name=launch.base_job_name(),
                local_container_root=str(root),
            )
            inputs = [InputData(channel_name=name,
                                data_source=str(_as_folder(Path(source), root)))
                      for name, source in launch.channels.items()]
            failure: Exception | None = None
            try:
                trainer.train(input_data_config=inputs or None, wait=True)
            except RuntimeError as err:  # the SDK raises when Compose exits non-zero
                failure = err
            return _collect_local_artifact(root, model_dir, failure)
        finally:
            compose_down(root / "docker-compose.yaml")
            shutil.rmtree(root, ignore_errors=True)


def _as_folder(source: Path, root: Path) -> Path:
    """A folder to mount as a channel: the source itself, or a folder holding a file.

    Local mode bind-mounts each channel at /opt/ml/input/data/NAME, which must be a folder.
    """
    if source.is_dir():
        return source.resolve()
    staged = Path(tempfile.mkdtemp(prefix="channel-", dir=root))
    shutil.copy2(source, staged / source.name)
    return staged


def _collect_local_artifact(root: Path, model_dir: Path, failure: Exception | None
                            ) -> LocalArtifact:
    # The SDK gathers /opt/ml/model and /opt/ml/output of every host under artifacts/, and
    # tars them under compressed_artifacts/.
    reason_file = root / "artifacts" / "output" / "failure"
    if reason_file.exists():
        raise RuntimeError(f"training failed: {reason_file.read_text().strip()}") from failure
    produced = root / "artifacts" / "model"
    if failure is not None or not produced.is_dir() or not any(produced.iterdir()):
        raise RuntimeError("training produced no model artifact (see the container log above)"
                           ) from failure
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(produced, model_dir)
    tarball = model_dir.parent / f"{model_dir.name}.tar.gz"
    shutil.copy2(root / "compressed_artifacts" / "model.tar.gz", tarball)
    return LocalArtifact(model_dir=model_dir, model_tarball=tarball)


def compose_command() -> list[str]:
    """Compose v2 as a Docker plugin when present, else the v1 `docker-compose` binary.

    The same order as the SDK, so that cleanup talks to the Compose that started things.
    """
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("Docker Compose is missing: install docker-compose (v1) or the "
                       "docker compose plugin (v2)")


def compose_down(compose_file: Path) -> None:
    """Remove the exited containers and the `sagemaker-local` network local mode leaves."""
    if not compose_file.exists():
        return
    result = subprocess.run([*compose_command(), "-f", str(compose_file), "down",
                             "--remove-orphans"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log.warning("docker compose down failed: %s", result.stderr.strip())


# -- sagemaker mode ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingJobResult:
    name: str
    status: str
    model_s3_uri: str | None


def train_on_sagemaker(launch: TrainingLaunch, targets: AwsTargets, *, session: Any
                       ) -> TrainingJobResult:
    """Start (and by default wait for) a SageMaker training job on the stack's resources."""
    from sagemaker.core.shapes import MetricDefinition, StoppingCondition
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        InputData,
        Networking,
        OutputDataConfig,
    )
    from sagemaker.train import ModelTrainer

    if not launch.instance_type or launch.instance_type.startswith("local"):
        raise ValueError("sagemaker mode needs --instance-type, e.g. ml.m5.xlarge or ml.g5.xlarge")
    run_id = f"{launch.base_job_name()}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    max_wait, checkpoint_uri = _spot_settings(launch, targets, run_id)
    stopping = StoppingCondition(max_runtime_in_seconds=launch.max_run_s,
                                 max_wait_time_in_seconds=max_wait)

    trainer = ModelTrainer(
        training_image=targets.image_for(launch.instance_type),
        sagemaker_session=session,
        role=targets.role_arn,
        base_job_name=run_id,
        compute=Compute(
            instance_type=launch.instance_type,
            instance_count=launch.instance_count,
            enable_managed_spot_training=launch.spot or None,
            # None on instance types with local NVMe storage (SageMaker refuses a key).
            volume_kms_key_id=volume_key(launch.instance_type, targets.kms_key_arn),
            volume_size_in_gb=volume_size(launch.instance_type, 30),
        ),
        stopping_condition=stopping,
        hyperparameters=dict(launch.hyperparameters),
        output_data_config=OutputDataConfig(
            # The execution role may write models/ only (infra/layout.py):
            # models/<job>/output/model.tar.gz.
            s3_output_path=f"s3://{targets.artifact_bucket}/{layout.MODELS.rstrip('/')}",
            kms_key_id=targets.kms_key_arn,
            compression_type="GZIP",
        ),
        networking=Networking(subnets=list(targets.subnet_ids),
                              security_group_ids=list(targets.security_group_ids))
        if targets.subnet_ids else None,
    )
    if checkpoint_uri:
        trainer = trainer.with_checkpoint_config(CheckpointConfig(s3_uri=checkpoint_uri))
    trainer = trainer.with_metric_definitions([
        MetricDefinition(name=m["Name"], regex=m["Regex"])
        for m in metric_definitions(launch.family)
    ])
    inputs = [
        InputData(channel_name=name,
                  data_source=_upload_channel(session, source, targets.data_bucket, run_id, name))
        for name, source in launch.channels.items()
    ]
    trainer.train(input_data_config=inputs or None, wait=launch.wait, logs=launch.wait)
    job = trainer._latest_training_job  # the SDK keeps the job it created here
    job.refresh()
    artifacts = getattr(job, "model_artifacts", None)
    model_uri = getattr(artifacts, "s3_model_artifacts", None) if artifacts else None
    return TrainingJobResult(name=job.training_job_name, status=str(job.training_job_status),
                             model_s3_uri=model_uri if isinstance(model_uri, str) else None)


def _spot_settings(launch: TrainingLaunch, targets: AwsTargets, run_id: str
                   ) -> tuple[int | None, str | None]:
    """Spot's maximum wait (None without spot) and the checkpoint S3 URI, if any."""
    if not launch.spot:
        return None, launch.checkpoint_s3_uri
    max_wait = launch.max_wait_s or 2 * launch.max_run_s
    if max_wait < launch.max_run_s:
        raise ValueError(f"--max-wait ({max_wait} s) must be at least --max-run "
                         f"({launch.max_run_s} s)")
    # A spot job restarts after an interruption; without checkpoints it starts over.
    return max_wait, launch.checkpoint_s3_uri or (
        f"s3://{targets.artifact_bucket}/{layout.CHECKPOINTS}{run_id}")


def tune_on_sagemaker(launch: TrainingLaunch, targets: AwsTargets, *, session: Any) -> str:
    """Start a hyperparameter tuning job over the family's ranges; return its name.

    Its training jobs are those `train_on_sagemaker` would start (image, role, channels,
    outputs, spot and checkpoints), with the launch's hyperparameters held static.
    """
    from genkiln import tuning
    from training.models import get_family

    if not launch.instance_type or launch.instance_type.startswith("local"):
        raise ValueError("sagemaker mode needs --instance-type, e.g. ml.m5.xlarge or ml.g5.xlarge")
    family = get_family(launch.family)
    name = tuning.job_name(launch.base_job_name())
    max_wait, checkpoint_uri = _spot_settings(launch, targets, name)
    static = {"family": launch.family, **launch.hyperparameters}
    ranges = tuning.check(family.tuning, static, max_jobs=launch.tune_jobs,
                          max_parallel_jobs=launch.tune_parallel_jobs)
    for key, r in ranges.items():
        for end in r.ends():  # every corner of the search must be a valid setting
            check_hyperparameters({**static, key: end})
    kms = {"KmsKeyId": targets.kms_key_arn} if targets.kms_key_arn else {}
    volume_kms = volume_key(launch.instance_type, targets.kms_key_arn)
    definition: dict[str, Any] = {
        "AlgorithmSpecification": {"TrainingImage": targets.image_for(launch.instance_type),
                                   "TrainingInputMode": "File",
                                   "MetricDefinitions": metric_definitions(launch.family)},
        "RoleArn": targets.role_arn,
        "InputDataConfig": [
            {"ChannelName": channel, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated",
                "S3Uri": _upload_channel(session, source, targets.data_bucket, name, channel)}}}
            for channel, source in launch.channels.items()],
        "OutputDataConfig": {"S3OutputPath": f"s3://{targets.artifact_bucket}/"
                                             f"{layout.MODELS.rstrip('/')}", **kms},
        "ResourceConfig": {"InstanceType": launch.instance_type,
                           "InstanceCount": launch.instance_count,
                           "VolumeSizeInGB": volume_size(launch.instance_type, 30),
                           **({"VolumeKmsKeyId": volume_kms} if volume_kms else {})},
        "StoppingCondition": {"MaxRuntimeInSeconds": launch.max_run_s,
                              **({"MaxWaitTimeInSeconds": max_wait} if max_wait else {})},
        "EnableManagedSpotTraining": launch.spot,
    }
    if checkpoint_uri:
        definition["CheckpointConfig"] = {"S3Uri": checkpoint_uri,
                                          "LocalPath": "/opt/ml/checkpoints"}
    if targets.subnet_ids:
        definition["VpcConfig"] = {"Subnets": list(targets.subnet_ids),
                                   "SecurityGroupIds": list(targets.security_group_ids)}
    request = tuning.tuning_job_request(
        name=name, tuning=family.tuning, static=static, training=definition,
        max_jobs=launch.tune_jobs, max_parallel_jobs=launch.tune_parallel_jobs)
    session.sagemaker_client.create_hyper_parameter_tuning_job(**request)
    return name


def metric_definitions(family: str) -> list[dict[str, str]]:
    """The family's `{"Name", "Regex"}` pairs, which SageMaker applies to the job's log."""
    from training.models import get_family

    return list(get_family(family).metric_definitions)


def _upload_channel(session: Any, source: str, bucket: str, run_id: str, channel: str) -> str:
    """An S3 URI for a channel: itself when it is one, else the folder uploaded to `bucket`."""
    if source.startswith("s3://"):
        return source
    local = Path(source)
    if local.is_file():
        files, base = [local], local.parent
    elif local.is_dir():
        files, base = sorted(p for p in local.rglob("*") if p.is_file()), local
    else:
        raise ValueError(f"channel {channel!r}: {source} is neither a folder, a file nor an "
                         "s3:// URI")
    prefix = f"{layout.DATASETS}{run_id}/{channel}"
    s3 = session.boto_session.client("s3")
    for path in files:
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(base).as_posix()}")
    return f"s3://{bucket}/{prefix}/"
