"""`genkiln`: the one command line, on a laptop and as a container's entry point.

    genkiln train [--data DIR] [--model-dir DIR] [--key value ...]   # in this process
    genkiln train --mode container|sagemaker ...    # SageMaker local mode / a training job
    genkiln serve [MODEL_DIR]
    genkiln deploy [ARTIFACT] --mode container|sagemaker             # an endpoint
    genkiln invoke "prompt" [--url URL | --endpoint NAME] [--stream]
    genkiln playground [--url URL | --endpoint NAME]     # a web page to generate and judge
    genkiln evaluate [MODEL] [--data DIR] [--output DIR]
    genkiln evaluate --url URL|--endpoint NAME --family F            # a live endpoint
    genkiln monitor [--capture DIR] [--feedback DIR] [--baseline F]
    genkiln data inspect DIR
    genkiln demo                                                       # what `make run` runs

The control plane: it drives the two runtimes (`training`, `inference`) and AWS. Inside
the image SageMaker runs the runtimes' own command lines (`python -m training train`,
`python -m inference serve`), whose arguments `serve`, `evaluate` and `monitor` share.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from genkiln.deploy import add_deploy_arguments
from genkiln.launch import add_training_launch_arguments, data_source
from inference.command import add_serve_arguments
from training import command as job
from training.contract import OptMl
from training.hyperparameters import HyperparameterError, parse_cli_overrides

DEFAULT_LOCAL_MODEL_DIR = Path("artifacts/model")


# --- train ---------------------------------------------------------------------------
def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from training.entry import run_training
    from training.local import train_locally

    try:
        overrides = parse_cli_overrides(extra)
    except HyperparameterError as exc:
        print(f"genkiln train: {exc}", file=sys.stderr)
        return 2
    if args.list_hyperparameters:
        return _list_hyperparameters(overrides.get("family", "transformer"))
    if args.mode != "local":  # a local-mode container or a SageMaker training job
        from genkiln.launch import launch_training

        return launch_training(args, overrides)
    if args.opt_ml is not None:
        return run_training(OptMl(args.opt_ml), overrides)
    channels = {name: Path(path) for name, path in (("model", args.refine),
                                                    ("feedback", args.feedback),
                                                    ("reward", args.reward)) if path}
    return train_locally(model_dir=args.model_dir or DEFAULT_LOCAL_MODEL_DIR,
                         hyperparameters=overrides, data=args.data,
                         validation=args.validation, channels=channels)


def _list_hyperparameters(family_name: str) -> int:
    from training.config import TrainConfig
    from training.models import get_family

    try:
        family = get_family(family_name)
    except HyperparameterError as exc:
        print(f"genkiln train: {exc}", file=sys.stderr)
        return 2
    for cls in (TrainConfig, family.config_cls):
        print(f"# {cls.__name__}")
        for f in dataclasses.fields(cls):
            default = family.train_defaults.get(f.name, f.default) if cls is TrainConfig \
                else f.default
            print(f"  {f.name}={default}")
    return 0


# --- serve ---------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    from inference.command import serve

    return serve(args)


# --- invoke --------------------------------------------------------------------------
def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    names = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed",
             "truncate")
    params = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.stop:
        params["stop"] = args.stop
    if args.details:
        params["details"] = True
    return params


def _invoke(args: argparse.Namespace) -> int:
    from genkiln.client import EndpointError

    client = _client(args)
    params = _parameters(args)
    try:
        if args.stream:
            for event in client.stream(args.prompt, **params):
                if args.json:
                    print(json.dumps(event), flush=True)
                else:
                    print(event["token"]["text"], end="", flush=True)
            if not args.json:
                print()
        else:
            result = client.generate(args.prompt, **params)
            print(json.dumps(result, indent=2) if args.json else result[0]["generated_text"])
    except EndpointError as exc:
        print(f"genkiln invoke: {exc}", file=sys.stderr)
        return 1
    return 0


# --- playground ----------------------------------------------------------------------
def _playground(args: argparse.Namespace) -> int:
    from genkiln.playground.app import run_playground

    run_playground(_client(args), host=args.host, port=args.port)
    return 0


# --- evaluate and monitor -------------------------------------------------------------
def _client(args: argparse.Namespace) -> Any:
    from genkiln.client import EndpointClient

    if args.endpoint:
        return EndpointClient(endpoint_name=args.endpoint, region_name=args.region)
    return EndpointClient(url=args.url)


def _evaluate(args: argparse.Namespace) -> int:
    """An artifact, as the pipeline's Evaluate step scores it; or a live endpoint."""
    from genkiln.client import EndpointError
    from training.evaluation.evaluate import evaluate_endpoint

    score_endpoint = None
    if args.url or args.endpoint:
        if args.model is not None:
            print("genkiln evaluate: give an artifact or --url/--endpoint, not both",
                  file=sys.stderr)
            return 2
        if not args.family:
            print("genkiln evaluate: --family is required with --url or --endpoint (an "
                  "endpoint does not say what it serves)", file=sys.stderr)
            return 2

        def score_endpoint(data: Path | None) -> Any:
            return evaluate_endpoint(_client(args), family=args.family,
                                     measured=args.endpoint or args.url, data=data)

    return job.evaluate(args, score_endpoint=score_endpoint, errors=(EndpointError,),
                        prog="genkiln evaluate")


# --- data ----------------------------------------------------------------------------
def _inspect(args: argparse.Namespace) -> int:
    from training.data.errors import DataError
    from training.data.inspect import summarize

    try:
        summary = summarize(args.path, vocab_size=args.vocab_size)
    except DataError as exc:
        print(f"genkiln data inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            shown = f"{value:,}" if isinstance(value, int) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from genkiln.demo import run_demo

    return run_demo(model_dir=args.model_dir, seconds=args.seconds, prompt=args.prompt,
                    port=args.port)


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `--mod 3` must reach training as a hyperparameter, not be taken
    # for --model-dir.
    parser = argparse.ArgumentParser(prog="genkiln", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", allow_abbrev=False,
        help="train a model (any extra --key value is a hyperparameter)")
    train.add_argument("--data", type=data_source, help="folder (or file) of training data; "
                       "omitted: the family's bundled data set")
    train.add_argument("--validation", type=data_source, help="held-out data folder (optional)")
    train.add_argument("--model-dir", type=Path,
                       help=f"where the artifact goes (default {DEFAULT_LOCAL_MODEL_DIR})")
    train.add_argument("--opt-ml", type=Path, help="run on this SageMaker-style /opt/ml tree")
    train.add_argument("--refine", type=data_source, help="refine this artifact (folder or "
                       "model.tar.gz; the job's 'model' channel) on --feedback")
    train.add_argument("--feedback", type=data_source, help="a feedback store folder "
                       "(generations/, feedback/; the job's 'feedback' channel)")
    train.add_argument("--reward", type=data_source, help="racer: a DeepRacer reward function "
                       "file (the job's 'reward' channel); omitted: the default reward")
    train.add_argument("--list-hyperparameters", action="store_true",
                       help="print every hyperparameter with its default and exit")
    add_training_launch_arguments(train)

    add_deploy_arguments(sub.add_parser(
        "deploy", help="serve an artifact as a SageMaker endpoint: local container or AWS"))

    add_serve_arguments(sub.add_parser("serve", help="serve an artifact on /ping and "
                                                     "/invocations"))

    invoke = sub.add_parser("invoke", help="call an endpoint")
    invoke.add_argument("prompt")
    where = invoke.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:8080", help="a local server")
    where.add_argument("--endpoint", help="a SageMaker endpoint name (uses AWS credentials)")
    invoke.add_argument("--region", help="AWS region of the endpoint")
    invoke.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    invoke.add_argument("--json", action="store_true", help="print raw JSON responses")
    invoke.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    invoke.add_argument("--temperature", type=float)
    invoke.add_argument("--top-k", dest="top_k", type=int)
    invoke.add_argument("--top-p", dest="top_p", type=float)
    invoke.add_argument("--repetition-penalty", dest="repetition_penalty", type=float)
    invoke.add_argument("--seed", type=int)
    invoke.add_argument("--truncate", type=int)
    invoke.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    invoke.add_argument("--details", action="store_true")

    playground = sub.add_parser(
        "playground", help="a web page to prompt, regenerate and judge a model's outputs")
    where = playground.add_mutually_exclusive_group()
    where.add_argument("--url", default="http://127.0.0.1:8080", help="a local server")
    where.add_argument("--endpoint", help="a SageMaker endpoint name (uses AWS credentials)")
    playground.add_argument("--region", help="AWS region of the endpoint")
    playground.add_argument("--host", default="127.0.0.1",
                            help="where the page is served (default 127.0.0.1)")
    playground.add_argument("--port", type=int, default=8000, help="default 8000")

    evaluate = sub.add_parser(
        "evaluate", help="score a model on held-out data: evaluation.json and report.html")
    job.add_evaluate_arguments(evaluate)
    target = evaluate.add_mutually_exclusive_group()
    target.add_argument("--url", help="score a running server instead of an artifact")
    target.add_argument("--endpoint", help="score a SageMaker endpoint (uses AWS credentials)")
    evaluate.add_argument("--region", help="AWS region of the endpoint")
    evaluate.add_argument("--family", help="the endpoint's model family (with --url/--endpoint)")

    job.add_monitor_arguments(sub.add_parser(
        "monitor", help="health figures of what an endpoint served over a window "
                        "(SageMaker: the monitor pipeline's processing job)"))

    data = sub.add_parser("data", help="check data before training")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser("inspect", help="check a folder holds one type; summarise")
    inspect.add_argument("path", type=Path)
    inspect.add_argument("--vocab-size", type=int, default=2048,
                         help="BPE vocabulary used to count tokens in text (default 2048)")
    inspect.add_argument("--json", action="store_true")

    demo = sub.add_parser("demo", help="train the bundled Transformer, serve it, generate")
    demo.add_argument("--seconds", type=float, default=60.0, help="training budget")
    demo.add_argument("--model-dir", type=Path, default=Path("artifacts/demo"))
    demo.add_argument("--prompt", default="Return a new")
    demo.add_argument("--port", type=int, default=0, help="default: a free port")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = job.parse_arguments(build_parser(), argv)
    if args.command == "train":
        return _train(args, extra)
    if args.command == "serve":
        return _serve(args)
    if args.command == "invoke":
        return _invoke(args)
    if args.command == "data":
        return _inspect(args)
    if args.command == "playground":
        return _playground(args)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "monitor":
        return job.monitor(args, prog="genkiln monitor")
    if args.command == "deploy":
        from genkiln.deploy import deploy

        return deploy(args)
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
