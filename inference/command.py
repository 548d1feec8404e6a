"""The serving image's command line: `python -m inference [MODEL_DIR]`, what SageMaker's
`IMAGE serve` runs (the image's entry point maps `serve` here).

`genkiln serve` offers the same on a laptop, with these very arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

#: Where SageMaker unpacks the model for a serving container.
CONTAINER_MODEL_DIR = Path("/opt/ml/model")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, nargs="?",
                        help=f"artifact folder or model.tar.gz (default: {CONTAINER_MODEL_DIR})")
    parser.add_argument("--host", help="default 127.0.0.1 locally, 0.0.0.0 in a container")
    parser.add_argument("--port", type=int, help="default $SAGEMAKER_BIND_TO_PORT or 8080")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM; with no MODEL_DIR, the container's model on every interface."""
    from inference.server import serve as run

    model_dir, host = args.model_dir, args.host
    if model_dir is None:
        model_dir, host = CONTAINER_MODEL_DIR, host or "0.0.0.0"
    run(model_dir, host=host or "127.0.0.1", port=args.port, device=args.device)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_arguments(sub.add_parser("serve", help="serve an artifact on /ping and "
                                                     "/invocations"))
    return serve(parser.parse_args(argv))
