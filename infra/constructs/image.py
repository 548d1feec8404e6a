"""The project image, built from the root Dockerfile and pushed by `cdk deploy`."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import IgnoreMode
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

# Never part of the build context: they are large, machine-specific or secret, and a
# venv copied into cdk.out would make every synth slow and every asset hash unstable.
# The Dockerfile's own .dockerignore is honoured as well.
BUILD_CONTEXT_EXCLUDES = [
    ".venv", "venv", "node_modules", "cdk.out", ".git", "**/__pycache__", "*.pyc",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.egg-info", "build", "dist",
    "artifacts", "bench/results", ".env",
]


#: The Dockerfile's TORCH_VARIANT build argument, by image variant.
VARIANTS = ("cpu", "cuda")


class ProjectImage(Construct):
    """One image for both SageMaker verbs (`train`, `serve`, and the pipeline's
    `evaluate`), built for x86-64 because SageMaker's ml.* CPU and GPU hosts run it.

    `variant` picks the torch build: `cpu`, or `cuda` for GPU instances (PyPI's torch
    with its CUDA libraries; the instance supplies the NVIDIA driver)."""

    def __init__(self, scope: Construct, construct_id: str, *, project_root: Path,
                 variant: str = "cpu", dockerfile: str = "Dockerfile") -> None:
        super().__init__(scope, construct_id)
        if variant not in VARIANTS:
            raise ValueError(f"image variant must be one of {', '.join(VARIANTS)}, "
                             f"not {variant!r}")
        if not (project_root / dockerfile).is_file():
            raise FileNotFoundError(f"{project_root / dockerfile} is needed to build the "
                                    "project image")
        self.asset = ecr_assets.DockerImageAsset(
            self, "Asset",
            directory=str(project_root),
            file=dockerfile,
            exclude=BUILD_CONTEXT_EXCLUDES,
            ignore_mode=IgnoreMode.DOCKER,
            platform=ecr_assets.Platform.LINUX_AMD64,
            build_args={"TORCH_VARIANT": variant},
        )
        self.variant = variant
        self.image_uri = self.asset.image_uri
        self.repository = self.asset.repository
