"""Sessions of the SageMaker Python SDK (3.x) for the launcher and the deployer.

The SDK is an optional dependency (`pip install 'genkiln[sagemaker]'`): it is imported here,
lazily, so that `genkiln train` in-process and the serving image never need it.

Two facts shape this module:
- The SDK sends telemetry (an STS call and an HTTPS request) from every decorated call
  unless its config says `TelemetryOptOut: true`. Local mode must make no AWS call at all,
  so the launcher points `SAGEMAKER_USER_CONFIG_OVERRIDE` at a config that opts out before
  any session exists (sessions read their config when they are created).
- `LocalSession` needs a region name even though local mode calls no AWS service.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SDK_EXTRA_HINT = "the SageMaker Python SDK is missing: pip install 'genkiln[sagemaker]'"
USER_CONFIG_ENV = "SAGEMAKER_USER_CONFIG_OVERRIDE"
DEFAULT_REGION = "us-east-1"

# The SDK's config schema (sagemaker.core.config.config_schema): SageMaker.PythonSDK.Modules.
_OPT_OUT_CONFIG = """\
SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


def region_name(region: str | None = None) -> str:
    """The region to use: the argument, else the AWS environment, else us-east-1."""
    import boto3  # imported late: `genkiln serve` builds the parser that reaches this module

    return (
        region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or boto3.Session().region_name
        or DEFAULT_REGION
    )


@contextlib.contextmanager
def telemetry_opted_out() -> Iterator[Path]:
    """Point the SDK at a config with `TelemetryOptOut: true` while the block runs.

    A config the user already points to is left in place only if it opts out itself;
    otherwise ours replaces it for the block, since one file is all the SDK reads.
    """
    previous = os.environ.get(USER_CONFIG_ENV)
    if previous and _opts_out(Path(previous)):
        yield Path(previous)
        return
    with tempfile.TemporaryDirectory(prefix="genkiln-sdk-") as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(_OPT_OUT_CONFIG)
        os.environ[USER_CONFIG_ENV] = str(config)
        try:
            yield config
        finally:
            if previous is None:
                os.environ.pop(USER_CONFIG_ENV, None)
            else:
                os.environ[USER_CONFIG_ENV] = previous


def _opts_out(config: Path) -> bool:
    import yaml  # type: ignore[import-untyped]  # the SDK's dependency; no stubs here

    try:
        document = yaml.safe_load(config.read_text()) or {}
        modules = document["SageMaker"]["PythonSDK"]["Modules"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return False
    return modules.get("TelemetryOptOut") is True


def local_session(region: str | None = None, *, serving_port: int | None = None) -> Any:
    """A `LocalSession` whose clients run containers with Docker instead of calling AWS.

    `serving_port` is the host port a local endpoint publishes (the SDK's default is 8080);
    the session's runtime client calls that port.
    """
    try:
        from sagemaker.core.local.local_session import LocalSession
    except ImportError as err:
        raise RuntimeError(SDK_EXTRA_HINT) from err
    import boto3

    session = LocalSession(boto_session=boto3.Session(region_name=region_name(region)))
    if serving_port is not None:
        # The local-mode config (~/.sagemaker/config.yaml's `local:`) keeps the user's other
        # settings; its setter validates it and updates the runtime client.
        config = dict(session.config or {})
        config["local"] = {**config.get("local", {}), "serving_port": serving_port}
        session.config = config
    return session


def aws_session(region: str | None = None) -> Any:
    """A SageMaker `Session` on the default AWS credential chain."""
    try:
        from sagemaker.core.helper.session_helper import Session
    except ImportError as err:
        raise RuntimeError(SDK_EXTRA_HINT) from err
    import boto3

    return Session(boto_session=boto3.Session(region_name=region_name(region)))
