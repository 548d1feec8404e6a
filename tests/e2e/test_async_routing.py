"""Requests over SageMaker's 6 MB real-time limit, or marked long, go to the stage's
asynchronous endpoint through the same call: the body to S3 (moto's), InvokeEndpointAsync
to the runtime stand-in, the answer polled from the output location it names."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genkiln.client import ASYNC_REQUESTS, EndpointClient, EndpointError
from infra import layout
from tests.e2e.sagemaker_runtime import runtime_client, runtime_for
from tests.e2e.servers import serving

moto = pytest.importorskip("moto")
BIG = 64 * 1024 * 1024  # what an asynchronous endpoint's server takes (infra sets 1 GB)
CAPTURE, ARTIFACTS = "genkiln-capture", "genkiln-artifacts"


@pytest.fixture(scope="module")
def aws(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import boto3

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    env = {**os.environ, "GENKILN_MAX_REQUEST_BYTES": str(BIG),
           "GENKILN_FEEDBACK_DIR": str(tmp_path_factory.mktemp("async-records"))}
    with moto.mock_aws(), serving(tiny_artifact, env=env) as served, runtime_for(
            served.url, async_output=f"s3://{ARTIFACTS}/async/genkiln-dev-async") as runtime:
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in (CAPTURE, ARTIFACTS):
            s3.create_bucket(Bucket=bucket)
        yield runtime, s3
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def client(aws: Any, *, with_async: bool = True) -> EndpointClient:
    runtime, s3 = aws
    return EndpointClient(endpoint_name="genkiln-dev-endpoint",
                          runtime_client=runtime_client(runtime), s3_client=s3,
                          async_endpoint_name="genkiln-dev-async" if with_async else None,
                          async_bucket=CAPTURE if with_async else None, poll_seconds=0.05)


def test_the_prefix_is_the_layouts() -> None:
    assert ASYNC_REQUESTS == layout.ASYNC_REQUESTS


def uploads(aws: Any) -> int:
    return int(aws[1].list_objects_v2(Bucket=CAPTURE, Prefix=ASYNC_REQUESTS)["KeyCount"])


def test_a_long_request_goes_async_and_answers_as_real_time_does(aws: Any) -> None:
    endpoint = client(aws)
    params = {"max_new_tokens": 6, "do_sample": True, "seed": 3}
    before = uploads(aws)
    [fast] = endpoint.generate("Flat is", **params)
    assert uploads(aws) == before  # a small request goes straight to the endpoint
    [slow] = endpoint.generate("Flat is", long=True, **params)
    assert slow["generated_text"] == fast["generated_text"]
    assert uploads(aws) == before + 1


def test_a_body_over_six_megabytes_goes_async(aws: Any) -> None:
    prompt = "Beautiful is better than ugly. " * 240_000  # 7.2 MB
    [answer] = client(aws).generate(prompt, max_new_tokens=3, truncate=16)
    assert isinstance(answer["generated_text"], str)
    sizes = [o["Size"] for o in aws[1].list_objects_v2(
        Bucket=CAPTURE, Prefix=ASYNC_REQUESTS)["Contents"]]
    assert max(sizes) > 6 * 1024 * 1024


def test_an_async_failure_says_what_went_wrong(aws: Any) -> None:
    prompt = "x " * 3_500_000
    with pytest.raises(EndpointError, match="more than this model's context") as failed:
        client(aws).generate(prompt, max_new_tokens=3)  # no truncate: cannot fit
    assert failed.value.status == 424


def test_without_an_async_endpoint_a_large_request_is_refused_clearly(aws: Any) -> None:
    with pytest.raises(EndpointError, match="over SageMaker's 6 MB real-time limit"):
        client(aws, with_async=False).invoke({"inputs": "y" * (7 * 1024 * 1024)})


def test_from_outputs_finds_both_endpoints(tmp_path: Path) -> None:
    from infra import outputs as names

    path = tmp_path / "cdk-outputs.json"
    path.write_text(json.dumps({
        "genkiln-dev-data": {names.DATA_BUCKET: "d", names.ARTIFACT_BUCKET: ARTIFACTS,
                             names.CAPTURE_BUCKET: CAPTURE, names.ACCESS_LOG_BUCKET: "l",
                             names.KEY_ARN: "k"},
        "genkiln-dev-training": {names.EXECUTION_ROLE_ARN: "r", names.IMAGE_URI: "i",
                                 names.MODEL_PACKAGE_GROUP: "g", names.PIPELINE_NAME: "p"},
        "genkiln-dev-serving": {names.ENDPOINT_NAME: "genkiln-dev-endpoint-m5-large",
                                names.ASYNC_ENDPOINT_NAME: "genkiln-dev-endpoint-async-m5"}}))
    endpoint = EndpointClient.from_outputs(path, runtime_client=object(), s3_client=object())
    assert endpoint.endpoint_name == "genkiln-dev-endpoint-m5-large"
    assert endpoint.async_endpoint_name == "genkiln-dev-endpoint-async-m5"
    assert endpoint.async_bucket == CAPTURE
