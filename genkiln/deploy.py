"""Deploy a model artifact as a SageMaker endpoint: a local-mode container or a real one.

`genkiln deploy ARTIFACT --mode container|sagemaker` makes the same three control-plane
calls in both modes, `CreateModel`, `CreateEndpointConfig` and `CreateEndpoint`:

- `container`: on the SDK's local session client (`LocalSession().sagemaker_client`),
  which runs the project image under Docker Compose with the artifact at `/opt/ml/model`
  and returns once `/ping` answers 200. The command then serves until Ctrl-C / SIGTERM
  and removes the endpoint. The SDK's `ModelBuilder` is not used: in local-container mode
  it calls STS and S3, force-pulls the image and starts a second container.
- `sagemaker`: on boto3's SageMaker client; the artifact is uploaded as `model.tar.gz` to
  the artifact bucket unless it already is an S3 URI, and the endpoint is real-time,
  serverless (`--serverless`) or asynchronous (`--async`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genkiln import launch, sagemaker_sdk
from inference import settings as serving
from infra import layout
from infra.instances import volume_key

log = logging.getLogger(__name__)

DEPLOY_MODES = ("container", "sagemaker")
VARIANT = "AllTraffic"
DEFAULT_LOCAL_PORT = 8080  # where the SDK's local endpoint publishes the container's 8080


@dataclass(frozen=True)
class EndpointSpec:
    """What to create: names, the image, the artifact and how the endpoint scales."""

    name: str
    image: str
    model_data_url: str
    environment: Mapping[str, str]
    instance_type: str
    instance_count: int = 1
    role_arn: str | None = None
    # Serverless endpoints: memory (1024-6144 MB in 1 GB steps) and concurrency.
    serverless_memory_mb: int | None = None
    serverless_max_concurrency: int = 5
    # Asynchronous endpoints: where responses (and failures) are written.
    async_output_s3_uri: str | None = None
    kms_key_arn: str | None = None
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    #: The container gets no network (the model is unpacked for it); off when it writes
    #: feedback records to S3 itself.
    network_isolation: bool = False
    #: Data capture of requests and answers (s3://bucket/capture/), KMS-encrypted.
    capture_s3_uri: str | None = None

    @property
    def serverless(self) -> bool:
        return bool(self.serverless_memory_mb)

    def model_request(self) -> dict[str, Any]:
        request: dict[str, Any] = {
            "ModelName": self.name,
            "PrimaryContainer": {
                "Image": self.image,
                "ModelDataUrl": self.model_data_url,
                # The local client needs the key even when empty.
                "Environment": dict(self.environment),
            },
        }
        if self.role_arn:
            request["ExecutionRoleArn"] = self.role_arn
        # Serverless endpoints take neither a VPC nor network isolation.
        if self.subnet_ids and not self.serverless:
            request["VpcConfig"] = {"Subnets": list(self.subnet_ids),
                                    "SecurityGroupIds": list(self.security_group_ids)}
        if self.network_isolation and not self.serverless:
            request["EnableNetworkIsolation"] = True
        return request

    def endpoint_config_request(self) -> dict[str, Any]:
        variant: dict[str, Any] = {"VariantName": VARIANT, "ModelName": self.name}
        if self.serverless_memory_mb:
            variant["ServerlessConfig"] = {"MemorySizeInMB": self.serverless_memory_mb,
                                           "MaxConcurrency": self.serverless_max_concurrency}
        else:
            variant.update(InstanceType=self.instance_type,
                           InitialInstanceCount=self.instance_count)
        request: dict[str, Any] = {"EndpointConfigName": self.name,
                                   "ProductionVariants": [variant]}
        if self.async_output_s3_uri:
            output = self.async_output_s3_uri.rstrip("/")
            request["AsyncInferenceConfig"] = {
                "OutputConfig": {"S3OutputPath": f"{output}/responses",
                                 "S3FailurePath": f"{output}/failures"},
            }
        # Serverless endpoints and instances with local NVMe storage have no volume the
        # key could encrypt, and the API refuses one there.
        key = None if self.serverless else volume_key(self.instance_type, self.kms_key_arn)
        if key:
            request["KmsKeyId"] = key
        if self.capture_s3_uri and not self.serverless:  # serverless cannot capture
            request["DataCaptureConfig"] = {
                "EnableCapture": True, "InitialSamplingPercentage": 100,
                "DestinationS3Uri": self.capture_s3_uri,
                **({"KmsKeyId": self.kms_key_arn} if self.kms_key_arn else {}),
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
            }
        return request


def create_endpoint(client: Any, spec: EndpointSpec) -> None:
    """CreateModel, CreateEndpointConfig, CreateEndpoint: the same calls on either client."""
    client.create_model(**spec.model_request())
    client.create_endpoint_config(**spec.endpoint_config_request())
    client.create_endpoint(EndpointName=spec.name, EndpointConfigName=spec.name)


def delete_endpoint(client: Any, name: str) -> None:
    """Remove the endpoint, its config and its model (the local client stops the container)."""
    client.delete_endpoint(EndpointName=name)
    client.delete_endpoint_config(EndpointConfigName=name)
    client.delete_model(ModelName=name)


# -- command line -------------------------------------------------------------------------


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    """`genkiln deploy` flags; role, image, buckets and region are the launcher's flags."""
    parser.add_argument("artifact", nargs="?", default="artifacts/model",
                        help="model artifact: a folder, a model.tar.gz, or (sagemaker mode) "
                             "an s3:// URI (default artifacts/model)")
    launch.add_launch_arguments(parser, modes=DEPLOY_MODES, default_mode="container")
    group = parser.add_argument_group("endpoints")
    group.add_argument("--endpoint-name", default=None,
                       help="endpoint name (default genkiln-TIMESTAMP)")
    group.add_argument("--serverless", dest="serverless_memory_mb", type=int, default=None,
                       metavar="MEMORY_MB",
                       help="sagemaker mode: a serverless endpoint with this much memory "
                            "(1024-6144)")
    group.add_argument("--max-concurrency", type=int, default=5,
                       help="serverless: concurrent invocations (default 5)")
    group.add_argument("--async", dest="async_endpoint", action="store_true",
                       help="sagemaker mode: an asynchronous endpoint writing responses to "
                            "s3://ARTIFACT_BUCKET/async/ENDPOINT/")
    group.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                       help="environment variable for the serving container (repeatable)")
    group.add_argument("--port", type=int, default=DEFAULT_LOCAL_PORT,
                       help="container mode: host port of the local endpoint (default 8080)")
    group.add_argument("--no-wait", dest="wait", action="store_false",
                       help="sagemaker mode: return once the endpoint is being created")


def deploy(args: argparse.Namespace) -> int:
    """Run `genkiln deploy`; returns the exit status."""
    environment = _parse_env(args.env)
    name = args.endpoint_name or f"genkiln-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    if args.mode == "container":
        image = args.image or os.environ.get(launch.IMAGE_ENV, launch.DEFAULT_IMAGE)
        with local_endpoint(Path(args.artifact), image=image, name=name,
                            environment=environment, instance_type=args.instance_type,
                            region=args.region, port=args.port) as endpoint:
            print(f"endpoint {name} is in service: {endpoint.url}/invocations "
                  "(Ctrl-C to stop)", flush=True)
            _wait_for_stop_signal()
        return 0
    if args.mode == "sagemaker":
        targets = launch.resolve_targets(args)
        session = sagemaker_sdk.aws_session(args.region)
        status = deploy_to_sagemaker(args, targets, session=session, name=name,
                                     environment=environment)
        print(f"endpoint {name}: {status}")
        return 0 if status in ("InService", "Creating") else 1
    raise ValueError(f"genkiln deploy runs in container or sagemaker mode, not {args.mode!r}")


def _parse_env(pairs: list[str]) -> dict[str, str]:
    """--env KEY=VALUE pairs; a GENKILN_ name the server does not read is refused (a typo
    would otherwise be ignored by the endpoint), and every value is checked as the server
    will check it at start-up."""
    environment = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env takes KEY=VALUE, not {pair!r}")
        if key.startswith("GENKILN_") and key not in serving.NAMES:
            raise ValueError(f"--env {key}: the server reads no such variable; it reads "
                             f"{', '.join(sorted(n for n in serving.NAMES if 'GENKILN_' in n))}")
        environment[key] = value
    serving.ServingSettings.from_env(environment)
    return environment


def _wait_for_stop_signal() -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- container mode ------------------------------------------------------------------------


@dataclass
class LocalEndpoint:
    """A running local-mode endpoint and the session that created it."""

    name: str
    session: Any
    url: str

    def invoke(self, payload: Mapping[str, Any]) -> Any:
        """InvokeEndpoint through the SDK's local runtime client; the decoded JSON answer."""
        response = self.session.sagemaker_runtime_client.invoke_endpoint(
            EndpointName=self.name, Body=json.dumps(payload),
            ContentType="application/json", Accept="application/json")
        return json.loads(response["Body"].read())


@contextlib.contextmanager
def local_endpoint(
    artifact: Path, *, image: str, name: str = "genkiln-local",
    environment: Mapping[str, str] | None = None, instance_type: str | None = None,
    region: str | None = None, port: int = DEFAULT_LOCAL_PORT,
) -> Iterator[LocalEndpoint]:
    """Serve `artifact` (a folder or a model.tar.gz) as a local-mode endpoint while in use.

    The SDK runs one local endpoint per session and port.
    """
    with sagemaker_sdk.telemetry_opted_out(), _model_folder(artifact) as folder:
        session = sagemaker_sdk.local_session(region, serving_port=port)
        spec = EndpointSpec(name=name, image=image, model_data_url=f"file://{folder}",
                            environment=environment or {},
                            instance_type=instance_type or "local_cpu")
        client = session.sagemaker_client
        before = _containers_of(image)
        try:
            create_endpoint(client, spec)  # returns once /ping answers 200
            yield LocalEndpoint(name=name, session=session, url=f"http://localhost:{port}")
        finally:
            delete_endpoint(client, name)
            _remove_stopped(_containers_of(image) - before)


def _containers_of(image: str) -> set[str]:
    listed = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", f"ancestor={image}"],
                            capture_output=True, text=True, check=False)
    return set(listed.stdout.split())


def _remove_stopped(containers: set[str]) -> None:
    """What the local client leaves behind: its stopped container and `sagemaker-local`.

    Deleting a local endpoint stops Compose but removes neither. The network stays when
    another local-mode container still uses it.
    """
    if containers:
        subprocess.run(["docker", "rm", "-f", *sorted(containers)], capture_output=True,
                       check=False)
    subprocess.run(["docker", "network", "rm", "sagemaker-local"], capture_output=True,
                   check=False)


@contextlib.contextmanager
def _model_folder(artifact: Path) -> Iterator[Path]:
    """A folder to mount at /opt/ml/model.

    The local client unpacks tarballs it finds in the folder it mounts, beside them; a
    tarball is unpacked into a temporary folder here instead, and a folder is copied, so
    that the user's files are never written to.
    """
    if not artifact.exists():
        raise FileNotFoundError(f"no model artifact at {artifact}: train one first "
                                "(genkiln train --model-dir ...)")
    with tempfile.TemporaryDirectory(prefix="genkiln-model-") as scratch:
        folder = Path(scratch) / "model"
        if artifact.is_dir():
            shutil.copytree(artifact, folder)
        else:
            folder.mkdir()
            with tarfile.open(artifact) as tar:
                tar.extractall(folder, filter="data")
        yield folder


# -- sagemaker mode ------------------------------------------------------------------------


def deploy_to_sagemaker(args: argparse.Namespace, targets: launch.AwsTargets, *, session: Any,
                        name: str, environment: Mapping[str, str]) -> str:
    """Create a real endpoint; returns its status (InService once waited for)."""
    if args.serverless_memory_mb and args.async_endpoint:
        raise ValueError("--serverless and --async are exclusive")
    if not args.serverless_memory_mb and not args.instance_type:
        raise ValueError("sagemaker mode needs --instance-type (e.g. ml.m5.xlarge) "
                         "or --serverless MEMORY_MB")
    instance_type = args.instance_type or ""
    spec = EndpointSpec(
        name=name,
        image=targets.image_for("cpu" if args.serverless_memory_mb else instance_type),
        model_data_url=upload_artifact(session, args.artifact, targets.artifact_bucket, name),
        environment=environment,
        instance_type=instance_type,
        instance_count=args.instance_count,
        role_arn=targets.endpoint_role_arn,
        serverless_memory_mb=args.serverless_memory_mb,
        serverless_max_concurrency=args.max_concurrency,
        async_output_s3_uri=(f"s3://{targets.artifact_bucket}/{layout.ASYNC_RESULTS}{name}"
                             if args.async_endpoint else None),
        kms_key_arn=targets.kms_key_arn,
        subnet_ids=targets.subnet_ids,
        security_group_ids=targets.security_group_ids,
        network_isolation=serving.GENKILN_FEEDBACK_URI not in environment,
        capture_s3_uri=(f"s3://{targets.capture_bucket}/{layout.CAPTURE}"
                        if targets.capture_bucket else None),
    )
    client = session.sagemaker_client
    create_endpoint(client, spec)
    if args.wait:
        client.get_waiter("endpoint_in_service").wait(EndpointName=name)
    return str(client.describe_endpoint(EndpointName=name)["EndpointStatus"])


def upload_artifact(session: Any, artifact: str, bucket: str, name: str) -> str:
    """The artifact's S3 URI: itself if it is one, else uploaded as a model.tar.gz.

    SageMaker requires `ModelDataUrl` to be a .tar.gz, which it unpacks into /opt/ml/model.
    """
    if artifact.startswith("s3://"):
        if not artifact.endswith(".tar.gz"):
            raise ValueError(f"ModelDataUrl must be a .tar.gz, not {artifact}")
        return artifact
    path = Path(artifact)
    key = f"{layout.MODELS}{name}/model.tar.gz"
    s3 = session.boto_session.client("s3")
    if path.is_file() and path.name.endswith(".tar.gz"):
        s3.upload_file(str(path), bucket, key)
    elif path.is_dir():
        with tempfile.TemporaryDirectory(prefix="genkiln-upload-") as scratch:
            tarball = Path(scratch) / "model.tar.gz"
            with tarfile.open(tarball, "w:gz") as tar:
                for member in sorted(path.iterdir()):
                    tar.add(member, arcname=member.name)
            s3.upload_file(str(tarball), bucket, key)
    else:
        raise FileNotFoundError(f"no model artifact at {artifact}")
    return f"s3://{bucket}/{key}"
