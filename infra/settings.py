"""Every `cdk.json` context key the app reads, typed and checked in one place.

A user changes the deployment by editing `cdk.json` or by passing `-c KEY=VALUE` to
`npx cdk`. Values given on the command line arrive as strings, so every key is parsed
here into its type and checked, and a bad value fails synthesis with a message that
names the key. Nothing in this module imports CDK, so the keys can be listed and
tested on their own.

Keys, defaults and meaning (also the `cdk.json` defaults):

- `genkiln:project` = `genkiln`:
  name prefix for stacks and named resources
- `genkiln:stage` = `dev`:
  deployment stage, one of the stages in `infra/app.py`
- `genkiln:useVpc` = `false`:
  run jobs and endpoints in a private VPC made for them
- `genkiln:noncurrentVersionDays` = `30`:
  days an overwritten or deleted object version is kept
- `genkiln:accessLogDays` = `365`:
  days S3 access logs are kept
- `genkiln:trainingInstanceType` = `ml.m5.xlarge`:
  instance type of the pipeline's training and evaluation steps; a GPU type builds the
  CUDA image for them, a type with local NVMe storage gets no volume key (see
  `infra/instances.py`)
- `genkiln:family` = `transformer`:
  default model family the pipeline trains
- `genkiln:registerIf` = `""`:
  the pipeline registers a model only when its evaluation meets this, e.g.
  `val_loss<=4.5` or `val_probe_accuracy>=0.95`; empty: the trained family's own
  criterion (`register_if` in `training/models/__init__.py`)
- `genkiln:images` = `auto`:
  which images to build: `cpu`, `cuda`, `both`, or `auto` (the CPU image, and the CUDA
  image too when the training or endpoint instance type has a GPU)
- `genkiln:modelArtifact` = `""`:
  `s3://…/model.tar.gz` to serve, under the artifacts bucket's `models/` prefix (the
  only place the execution role reads models); setting it, or the next key, adds the
  serving stack
- `genkiln:modelPackageArn` = `""`:
  a registered model package to serve instead of an artifact
- `genkiln:endpointKind` = `realtime`:
  `realtime`, `serverless` or `async`
- `genkiln:asyncEndpoint` = `false`:
  beside a real-time endpoint, an asynchronous one serving the same model, for requests
  over 6 MB or marked long (`EndpointClient` routes them there)
- `genkiln:instanceType` = `ml.m5.large`:
  endpoint instance type (real-time and asynchronous)
- `genkiln:minInstances` = `1`:
  autoscaling floor (0 is allowed for asynchronous endpoints only)
- `genkiln:maxInstances` = `2`:
  autoscaling ceiling
- `genkiln:targetInvocationsPerInstance` = `50`:
  set point of target tracking: invocations per instance per minute (real-time),
  or queued requests per instance (asynchronous)
- `genkiln:startupHealthCheckSeconds` = `600`:
  time the container has to answer `/ping` after start
- `genkiln:serverlessMemoryMb` = `4096`:
  memory of a serverless endpoint
- `genkiln:serverlessMaxConcurrency` = `5`:
  concurrent invocations of a serverless endpoint
- `genkiln:dataCapturePercent` = `100`:
  share of requests captured to the capture bucket
- `genkiln:latencyAlarmMs` = `2000`:
  average model latency that raises the latency alarm
- `genkiln:alarmEmail` = `""`:
  address subscribed to the alarm topic (none when empty)
- `genkiln:captureDays` = `90`:
  days captured requests and answers (the capture bucket's `capture/` prefix) are kept
- `genkiln:feedbackDays` = `365`:
  days generation records and judgements (`feedback/`) are kept
- `genkiln:promotion` = `false`:
  add the promotion stack: approving a model package in the registry deploys it to a
  staging endpoint, smoke-tests it, waits for a person's approval, then deploys it to prod
- `genkiln:account` = `""`:
  the account of this deployment (the registry's); needed when a stage below is another
- `genkiln:stagingAccount` = `""`:
  the account of the staging endpoint (empty: this one)
- `genkiln:prodAccount` = `""`:
  the account of the prod endpoint (empty: this one); another account gets a
  deploy-target stack to deploy there, and access to the registry, models and key
- `genkiln:approvalEmail` = `""`:
  address the promotion's approval requests go to (empty: `alarmEmail`)
- `genkiln:monitorHours` = `24`:
  the window, and the schedule, of the endpoint monitor (0: no monitor)
- `genkiln:feedbackCapture` = `false`:
  the endpoint records every generation and people's feedback under the capture
  bucket's `feedback/` prefix (KMS), where refinement jobs read them; the container then
  needs S3, so the model runs without network isolation (in the VPC, S3 is reached
  through the gateway endpoint only). Off: the endpoint is isolated and records nothing
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PREFIX = "genkiln:"

ENDPOINT_KINDS = ("realtime", "serverless", "async")
IMAGES = ("auto", "cpu", "cuda", "both")
# A registration criterion: a metric, a comparison and a number.
_CRITERION = re.compile(r"^[a-z][a-z0-9_]*(<=|>=|<|>)-?[0-9.]+(e-?[0-9]+)?$")

# Instance types SageMaker accepts look like ml.<family>.<size>.
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+(\.[a-z0-9-]+)+$")
# Project names become parts of resource names (S3 prefixes, model package groups).
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")
# Serverless endpoints take memory in 1 GB steps between 1 GB and 6 GB.
_SERVERLESS_MEMORY = (1024, 2048, 3072, 4096, 5120, 6144)


class SettingsError(ValueError):
    """A context value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Settings:
    project: str = "genkiln"  # prefix of stack names and named resources
    stage: str = "dev"  # which stage profile of infra/app.py applies
    use_vpc: bool = False  # jobs and endpoints in private subnets of a VPC of their own
    noncurrent_version_days: int = 30  # how long old object versions are kept
    access_log_days: int = 365  # how long S3 server access logs are kept
    training_instance_type: str = "ml.m5.xlarge"  # pipeline default for the training step
    family: str = "transformer"  # pipeline default for the model family
    register_if: str = ""  # registration criterion; empty: the family's own
    images: str = "auto"  # cpu | cuda | both | auto
    model_artifact: str = ""  # s3://bucket/key/model.tar.gz to serve
    model_package_arn: str = ""  # or a registered model package to serve
    endpoint_kind: str = "realtime"  # realtime | serverless | async
    async_endpoint: bool = False  # a second, asynchronous endpoint beside a real-time one
    instance_type: str = "ml.m5.large"  # endpoint instances (real-time, asynchronous)
    min_instances: int = 1  # autoscaling floor
    max_instances: int = 2  # autoscaling ceiling
    target_invocations_per_instance: int = 50  # target-tracking set point, per minute
    startup_health_check_seconds: int = 600  # /ping must pass within this after start
    serverless_memory_mb: int = 4096  # serverless memory size
    serverless_max_concurrency: int = 5  # serverless concurrency limit
    data_capture_percent: int = 100  # share of requests and responses captured
    latency_alarm_ms: int = 2000  # average ModelLatency that raises the alarm
    alarm_email: str = ""  # subscribed to the alarm topic when set
    capture_days: int = 90  # captured requests and answers expire after this
    feedback_days: int = 365  # generation records and judgements expire after this
    promotion: bool = False  # approval in the registry deploys staging, then prod
    account: str = ""  # this deployment's account, when other accounts are named
    staging_account: str = ""  # staging endpoint's account ("": this one)
    prod_account: str = ""  # prod endpoint's account ("": this one)
    approval_email: str = ""  # promotion approval requests ("": alarm_email)
    monitor_hours: int = 24  # endpoint monitor window and schedule (0: none)
    feedback_capture: bool = False  # the endpoint writes generations and feedback to S3

    @property
    def serving(self) -> bool:
        """The serving stack exists only once there is something to serve."""
        return bool(self.model_artifact or self.model_package_arn)

    def other_accounts(self) -> dict[str, str]:
        """Promotion stage -> its account, for the stages in an account not this one."""
        if not self.promotion:
            return {}
        named = {"staging": self.staging_account, "prod": self.prod_account}
        return {stage: a for stage, a in named.items() if a and a != self.account}

    def image_variants(self) -> tuple[str, ...]:
        """The images to build: `cpu` and/or `cuda`."""
        from infra.instances import is_gpu

        if self.images == "auto":
            gpu = is_gpu(self.training_instance_type) or (
                self.endpoint_kind != "serverless" and is_gpu(self.instance_type))
            return ("cpu", "cuda") if gpu else ("cpu",)
        return {"cpu": ("cpu",), "cuda": ("cuda",), "both": ("cpu", "cuda")}[self.images]

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> Settings:
        """Read every key through `get` (e.g. `app.node.try_get_context`)."""
        defaults = cls()
        values: dict[str, Any] = {}
        for field_name, key in KEYS.items():
            raw = get(key)
            default = getattr(defaults, field_name)
            values[field_name] = default if raw is None else _parse(key, raw, type(default))
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        _require(_PROJECT.match(self.project) is not None, "project",
                 "must be 3-32 lower-case letters, digits and hyphens, starting with a letter")
        for name in ("training_instance_type", "instance_type"):
            _require(_INSTANCE_TYPE.match(getattr(self, name)) is not None, name,
                     "must be a SageMaker instance type such as ml.m5.large")
        _require(self.noncurrent_version_days >= 1, "noncurrent_version_days", "must be >= 1")
        _require(self.access_log_days >= 1, "access_log_days", "must be >= 1")
        _require(not self.register_if or _CRITERION.match(self.register_if) is not None,
                 "register_if", "must read METRIC<=NUMBER or METRIC>=NUMBER (or < and >), "
                 "e.g. val_loss<=4.5, or be empty for the family's own criterion")
        _require(self.images in IMAGES, "images", f"must be one of {', '.join(IMAGES)}")
        _require(self.capture_days >= 1, "capture_days", "must be >= 1")
        for name in ("account", "staging_account", "prod_account"):
            value = getattr(self, name)
            _require(not value or re.fullmatch(r"\d{12}", value) is not None, name,
                     "must be a 12-digit AWS account id or empty")
        _require(not (self.staging_account or self.prod_account) or bool(self.account),
                 "account", "name this deployment's account when a stage is in another")
        _require(not self.approval_email or "@" in self.approval_email, "approval_email",
                 "must be an e-mail address or empty")
        _require(0 <= self.monitor_hours <= 168, "monitor_hours", "must be 0 to 168")
        _require(self.feedback_days >= 1, "feedback_days", "must be >= 1")
        _require(not (self.model_artifact and self.model_package_arn), "model_artifact",
                 f"name either {KEYS['model_artifact']} or {KEYS['model_package_arn']}, not both")
        _require(not self.model_artifact or (self.model_artifact.startswith("s3://")
                                             and self.model_artifact.endswith(".tar.gz")),
                 "model_artifact", "must be an s3:// URI of a .tar.gz (SageMaker unpacks it)")
        _require(not self.model_package_arn
                 or ":model-package/" in self.model_package_arn, "model_package_arn",
                 "must be the ARN of a model package version")
        _require(self.endpoint_kind in ENDPOINT_KINDS, "endpoint_kind",
                 f"must be one of {', '.join(ENDPOINT_KINDS)}")
        _require(not self.async_endpoint or self.endpoint_kind == "realtime", "async_endpoint",
                 "adds an asynchronous endpoint beside a real-time one: set "
                 "genkiln:endpointKind to realtime (or async, for one endpoint)")
        # Real-time instance endpoints cannot scale to zero; asynchronous ones can, and
        # serverless ones have no instances to count.
        floor = 1 if self.endpoint_kind == "realtime" else 0
        _require(self.min_instances >= floor, "min_instances", f"must be >= {floor} "
                 f"for a {self.endpoint_kind} endpoint")
        _require(self.max_instances >= max(1, self.min_instances), "max_instances",
                 "must be >= 1 and >= minInstances")
        _require(self.target_invocations_per_instance >= 1,
                 "target_invocations_per_instance", "must be >= 1")
        # SageMaker accepts 60 s to 3600 s for ContainerStartupHealthCheckTimeoutInSeconds.
        _require(60 <= self.startup_health_check_seconds <= 3600,
                 "startup_health_check_seconds", "must be between 60 and 3600")
        _require(self.serverless_memory_mb in _SERVERLESS_MEMORY, "serverless_memory_mb",
                 f"must be one of {_SERVERLESS_MEMORY}")
        _require(1 <= self.serverless_max_concurrency <= 200, "serverless_max_concurrency",
                 "must be between 1 and 200")
        _require(1 <= self.data_capture_percent <= 100, "data_capture_percent",
                 "must be between 1 and 100")
        _require(self.latency_alarm_ms >= 1, "latency_alarm_ms", "must be >= 1")
        _require(not self.alarm_email or "@" in self.alarm_email, "alarm_email",
                 "must be an e-mail address or empty")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


# Field name -> context key, e.g. use_vpc -> genkiln:useVpc.
KEYS: dict[str, str] = {
    name: PREFIX + _camel(name) for name in Settings.__dataclass_fields__
}


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise SettingsError(f"context key {KEYS[field_name]}: {message}")


def _parse(key: str, raw: Any, kind: type) -> Any:
    """Turn a context value (JSON from cdk.json, or a string from -c) into `kind`."""
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no", ""):
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(f"not an integer: {raw!r}")
            return int(raw)
        if kind is float:
            if isinstance(raw, bool):
                raise ValueError(f"not a number: {raw!r}")
            return float(raw)
        return str(raw).strip()
    except ValueError as err:
        raise SettingsError(f"context key {key}: {err}") from err
