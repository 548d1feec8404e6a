"""Docker and the SageMaker SDK for the container tests: present, or skipped (failed in CI).

On a user's machine without Docker these tests are skipped with the reason; in CI
(`CI=true`), where `.ci/run` installs Docker and builds the image first, a missing Docker
or image is a failure: a skip there would hide a broken set-up.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

IMAGE = os.environ.get("GENKILN_IMAGE", "genkiln:latest")


@functools.cache
def docker_problem() -> str | None:
    """Why the Docker tests cannot run here, or None when they can."""
    if shutil.which("docker") is None:
        return "no docker command: install Docker (bash .ci/setup-docker.sh on Debian)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return ("the Docker daemon does not answer (`docker info` failed): start it, "
                "or run bash .ci/setup-docker.sh")
    image = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True,
                           check=False)
    if image.returncode != 0:
        return f"image {IMAGE} is not built: run `make image` (bash .ci/image.sh)"
    return None


def require_docker() -> None:
    """Skip the calling test without Docker, or fail it when CI=true."""
    _skip_or_fail(docker_problem())


def require_sagemaker_sdk() -> None:
    """Skip without the `sagemaker` extra, or fail when CI=true (CI installs it)."""
    try:
        import sagemaker.train  # noqa: F401
    except ImportError:
        _skip_or_fail("the SageMaker SDK is not installed: pip install -e '.[dev,sagemaker]'")


def _skip_or_fail(problem: str | None) -> None:
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true needs this: {problem}")
    pytest.skip(problem)


def docker(*args: str, timeout: float = 120, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    """Run a docker command and return its result (output captured as text)."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def remove_local_mode_leftovers() -> None:
    """Containers of the project image and the `sagemaker-local` network local mode leaves."""
    listed = docker("ps", "-aq", "--filter", f"ancestor={IMAGE}", check=False)
    ids = listed.stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)
    docker("network", "rm", "sagemaker-local", check=False)
