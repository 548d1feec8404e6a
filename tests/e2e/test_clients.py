"""The clients people point at text endpoints, unchanged, against the real server process:
huggingface_hub's InferenceClient and the OpenAI SDK over HTTP; LangChain's
SagemakerEndpoint, LiteLLM's `sagemaker` and `sagemaker_chat` providers and genkiln's own
EndpointClient through boto3 and a stand-in for the SageMaker runtime API that frames
streams as the real one does (tests/e2e/sagemaker_runtime.py).

Each streamed answer is checked against the same seeded request made whole: a client that
drops or mangles events (reads JSON lines as SSE, misses a line split across parts) gets
a different text."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sagemaker_runtime import runtime_client, runtime_for
from tests.e2e.servers import serving

pytest.importorskip("huggingface_hub")
pytest.importorskip("openai")

PROMPT = "Beautiful is"
ENDPOINT = "genkiln-dev-endpoint"


@pytest.fixture(scope="module")
def url(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**os.environ, "GENKILN_FEEDBACK_DIR": str(tmp_path_factory.mktemp("feedback"))}
    with serving(tiny_artifact, env=env) as served:
        yield served.url


@pytest.fixture(scope="module")
def runtime(url: str) -> Iterator[str]:
    """The runtime cutting events into parts at arbitrary bytes, and the wire too."""
    with runtime_for(url, seed=7) as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def whole_parts_runtime(url: str) -> Iterator[str]:
    """The runtime forwarding each event as one part (the wire still cut anywhere)."""
    with runtime_for(url, seed=8, split_parts=False) as stand_in:
        yield stand_in


# --- huggingface_hub ---------------------------------------------------------------------
def test_huggingface_hub_generates_and_streams_the_same_text(url: str) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=url)
    kwargs: dict[str, Any] = {"max_new_tokens": 12, "seed": 4, "do_sample": True}
    whole = client.text_generation(PROMPT, **kwargs)
    tokens = list(client.text_generation(PROMPT, stream=True, **kwargs))
    assert len(tokens) == 12 and "".join(tokens) == whole
    events = list(client.text_generation(PROMPT, stream=True, details=True, **kwargs))
    final = events[-1]
    assert final.generated_text == whole and final.details is not None
    assert final.details.seed == 4 and final.details.generated_tokens == 12
    assert [e.index for e in events] == list(range(1, 13))


def test_huggingface_hub_details_with_tgis_whole_parameter_set(url: str) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=url)
    out = client.text_generation(
        PROMPT, max_new_tokens=5, details=True, best_of=2, do_sample=True, typical_p=0.95,
        watermark=True, decoder_input_details=True, top_n_tokens=3, frequency_penalty=0.2,
        repetition_penalty=1.1, stop=["zzz"], truncate=20, return_full_text=False)
    details = out.details
    # best_of takes no seed (as in TGI), and the tiny model may draw its end token early:
    # then the answer says so and counts what it did generate.
    assert details is not None and len(details.tokens) == details.generated_tokens
    assert ((details.finish_reason == "length" and details.generated_tokens == 5)
            or (details.finish_reason == "eos_token" and details.generated_tokens <= 5)), details
    assert [t.text for t in details.prefill][-1] == " is" or details.prefill  # the prompt
    assert details.prefill[0].logprob is None and details.prefill[1].logprob < 0
    assert details.top_tokens is not None and all(len(t) == 3 for t in details.top_tokens)
    assert details.best_of_sequences is not None and len(details.best_of_sequences) == 1
    # The answer is the likelier of the two sequences.
    other = details.best_of_sequences[0]
    assert sum(t.logprob for t in details.tokens) >= sum(t.logprob for t in other.tokens)


def test_huggingface_hub_chat_completion(url: str) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=url)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Why?"}]
    whole = client.chat_completion(messages=messages, max_tokens=8, seed=3)
    text = whole.choices[0].message.content
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                       client.chat_completion(messages=messages, max_tokens=8, seed=3,
                                              stream=True) if chunk.choices)
    assert streamed == text and whole.usage.completion_tokens == 8


# --- the OpenAI SDK ------------------------------------------------------------------------
def test_openai_chat_completions_whole_streamed_and_with_usage(url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="not-needed")
    messages: Any = [{"role": "user", "content": "Say something flat."}]
    whole = client.chat.completions.create(model="tgi", messages=messages, max_tokens=9,
                                           seed=11, logprobs=True, top_logprobs=2)
    choice = whole.choices[0]
    assert choice.finish_reason in ("length", "stop") and whole.usage is not None
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
    chunks = list(client.chat.completions.create(
        model="tgi", messages=messages, max_tokens=9, seed=11, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].total_tokens == whole.usage.total_tokens
    assert {c.id for c in chunks} == {chunks[0].id}  # one id for the whole stream


def test_openai_completions_and_models(url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="not-needed")
    whole = client.completions.create(model="tgi", prompt=PROMPT, max_tokens=7, seed=5, n=2)
    assert len(whole.choices) == 2 and whole.choices[0].index == 0
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tgi", prompt=PROMPT, max_tokens=7, seed=5, stream=True))
    assert streamed == whole.choices[0].text
    [model] = client.models.list().data
    assert model.id.startswith("genkiln-transformer-")


def test_openai_errors_say_what_to_change(url: str) -> None:
    import openai
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError, match="must fit this model's context"):
        client.chat.completions.create(model="tgi", max_tokens=5000,
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError, match="cannot call tools"):
        client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "x"}],
                                       tools=[{"type": "function", "function": {"name": "f"}}])


# --- through the SageMaker runtime ---------------------------------------------------------
def test_boto3_stream_reassembles_lines_split_across_parts(url: str, runtime: str) -> None:
    from genkiln.client import EndpointClient

    client = EndpointClient(endpoint_name=ENDPOINT, runtime_client=runtime_client(runtime))
    direct = EndpointClient(url=url)
    params = {"max_new_tokens": 10, "seed": 9, "do_sample": True}
    events = list(client.stream(PROMPT, **params))
    [whole] = direct.generate(PROMPT, **params)
    assert events[-1]["generated_text"] == whole["generated_text"]
    assert len(events) == 10


def test_langchain_sagemaker_endpoint_streams_tgi_events(runtime: str) -> None:
    pytest.importorskip("langchain_aws")
    from langchain_aws import SagemakerEndpoint
    from langchain_aws.llms.sagemaker_endpoint import LLMContentHandler

    class TGI(LLMContentHandler):
        """The content handler people write for TGI endpoints: SSE lines out."""

        content_type = "application/json"
        accepts = "application/json"

        def transform_input(self, prompt: str, model_kwargs: dict[str, Any]) -> bytes:
            return json.dumps({"inputs": prompt, "parameters": model_kwargs,
                               "stream": model_kwargs.pop("stream", False)}).encode()

        def transform_output(self, output: Any) -> str:
            if isinstance(output, bytes):  # one line of a stream
                line = output.decode()
                if not line.startswith("data:"):
                    return ""
                return str(json.loads(line[len("data:"):])["token"]["text"])
            return str(json.loads(output.read())[0]["generated_text"])

    kwargs = {"max_new_tokens": 10, "seed": 21, "do_sample": True}
    common: dict[str, Any] = {"endpoint_name": ENDPOINT, "client": runtime_client(runtime),
                              "content_handler": TGI()}
    whole = SagemakerEndpoint(**common, model_kwargs=kwargs).invoke(PROMPT)
    streamer = SagemakerEndpoint(**common, model_kwargs={**kwargs, "stream": True},
                                 streaming=True)
    pieces = list(streamer.stream(PROMPT))
    assert "".join(pieces) == whole


@pytest.fixture
def litellm_offline(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION_NAME", "us-east-1")
    return pytest.importorskip("litellm")


def test_litellm_sagemaker_provider(whole_parts_runtime: str, litellm_offline: Any) -> None:
    litellm = litellm_offline
    base = f"{whole_parts_runtime}/endpoints/{ENDPOINT}"
    messages = [{"role": "user", "content": "Beautiful is"}]
    # The provider passes no seed unless told to (allowed_openai_params), as its users do
    # to replay a sample.
    greedy = {"seed": 2, "allowed_openai_params": ["seed"], "temperature": 0.9,
              "max_tokens": 8, "hf_model_name": "gpt2"}
    whole = litellm.completion(model=f"sagemaker/{ENDPOINT}", messages=messages,
                               sagemaker_base_url=f"{base}/invocations", **greedy)
    text = whole.choices[0].message.content
    assert isinstance(text, str)
    chunks = litellm.completion(model=f"sagemaker/{ENDPOINT}", messages=messages,
                                stream=True, **greedy,
                                sagemaker_base_url=f"{base}/invocations-response-stream")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == text
    # LiteLLM's n maps to TGI's best_of; its own sagemaker_base_url leaks into parameters
    # and is ignored, as TGI ignores unknown fields.
    best = litellm.completion(model=f"sagemaker/{ENDPOINT}", messages=messages, max_tokens=4,
                              sagemaker_base_url=f"{base}/invocations", hf_model_name="gpt2",
                              n=2)
    assert isinstance(best.choices[0].message.content, str)


def test_litellm_sagemaker_chat_provider(whole_parts_runtime: str,
                                         litellm_offline: Any) -> None:
    litellm = litellm_offline
    base = f"{whole_parts_runtime}/endpoints/{ENDPOINT}"
    messages = [{"role": "user", "content": "Tell me about flat things."}]
    whole = litellm.completion(model=f"sagemaker_chat/{ENDPOINT}", messages=messages,
                               max_tokens=8, seed=6, sagemaker_base_url=f"{base}/invocations")
    text = whole.choices[0].message.content
    assert isinstance(text, str) and whole.usage.completion_tokens == 8
    chunks = litellm.completion(model=f"sagemaker_chat/{ENDPOINT}", messages=messages,
                                max_tokens=8, seed=6, stream=True,
                                sagemaker_base_url=f"{base}/invocations-response-stream")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
