"""The request and response shapes of text generation: Hugging Face TGI's, so existing
clients (huggingface_hub, the SageMaker SDK's predictors, LangChain, LiteLLM) work unchanged.

    request   {"inputs": "...", "parameters": {...}, "stream": false}
    response  [{"generated_text": "...", "details": {...}}]
    stream    server-sent events, one per token: data:{"index", "token", "top_tokens",
              "generated_text", "details"}; the last carries generated_text and details
              (JSON lines instead when the client asks for application/jsonlines)

TGI's whole parameter set is accepted. As TGI does (its serde structs ignore unknown
fields), a key this server does not know is ignored, not refused: client libraries leak
their own settings into `parameters` (LiteLLM's `sagemaker_base_url`). The server names
what it ignored in the `X-Genkiln-Ignored-Parameters` response header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "2"

#: TGI's three reasons, and "deadline": cut at the server's request timeout
#: (GENKILN_REQUEST_TIMEOUT_SECONDS).
FinishReason = Literal["length", "eos_token", "stop_sequence", "deadline"]
#: best_of above this is refused (TGI's --max-best-of defaults to 2).
MAX_BEST_OF = 4
#: top_n_tokens above this is refused (TGI's --max-top-n-tokens defaults to 5).
MAX_TOP_N_TOKENS = 5
MAX_STOP_SEQUENCES = 8
#: Characters in one stop sequence.
MAX_STOP_LENGTH = 256


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    best_of: int | None = Field(None, ge=1, le=MAX_BEST_OF, description=(
        "sample this many sequences and answer the one of highest total log-probability; "
        "the others are in details.best_of_sequences (needs sampling, no seed, no stream)"))
    decoder_input_details: bool = Field(False, description=(
        "return the prompt's tokens with their log-probabilities in details.prefill"))
    details: bool = Field(False, description="return finish reason, tokens and seed")
    do_sample: bool = Field(False, description="sample; false is greedy unless a sampling "
                            "parameter (temperature, top_k, top_p, typical_p) is given")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, description=(
        "subtract this times each token's share of the text so far from its logit"))
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description=(
        "OpenAI's presence penalty (not TGI's): subtract it from the logit of every token "
        "already in the text"))
    grammar: Any = Field(None, description="constrained decoding: not supported here "
                         "(refused, as TGI refuses it with grammar support disabled)")
    max_new_tokens: int | None = Field(None, ge=1, description="tokens to generate at most")
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    return_full_text: bool | None = Field(False, description="prepend the prompt")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    temperature: float | None = Field(None, ge=0.0, le=100.0, description="0 is greedy")
    top_k: int | None = Field(None, ge=1)
    top_n_tokens: int | None = Field(None, ge=0, le=MAX_TOP_N_TOKENS, description=(
        "also return the most likely alternatives for each generated token"))
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    truncate: int | None = Field(None, ge=1, description="keep only the last N prompt tokens")
    typical_p: float | None = Field(None, gt=0.0, le=1.0, description=(
        "typical decoding (Meister et al. 2022): keep the tokens whose surprise is closest "
        "to the distribution's entropy, up to this much probability mass"))
    watermark: bool = Field(False, description=(
        "bias a pseudo-random half of the vocabulary, seeded by the previous token "
        "(Kirchenbauer et al. 2023), so the text can later be recognised"))
    adapter_id: str | None = Field(None, description="LoRA adapter: none are served here")

    @property
    def sampling(self) -> bool:
        return sampling_requested(self.model_dump())


def sampling_requested(parameters: Mapping[str, Any]) -> bool:
    """TGI's rule: sampling when do_sample or any sampling parameter is given; a
    temperature of 0 means greedy whatever else is set."""
    if parameters.get("temperature") == 0:
        return False
    return bool(parameters.get("do_sample")) or any(
        parameters.get(k) is not None for k in ("temperature", "top_k", "top_p", "typical_p"))


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] = Field(description="a prompt, or a list of prompts (not streamed)")
    parameters: GenerateParameters = Field(default_factory=lambda: GenerateParameters())
    stream: bool = False


class Token(BaseModel):
    id: int
    text: str
    logprob: float
    special: bool


class PrefillToken(BaseModel):
    id: int
    text: str
    logprob: float | None  # the first prompt token has no context, so no log-probability


class StreamDetails(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None
    input_length: int


class BestOfSequence(BaseModel):
    generated_text: str
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None
    prefill: list[PrefillToken] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)
    top_tokens: list[list[Token]] | None = None


class Details(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None
    input_length: int
    prefill: list[PrefillToken] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)
    top_tokens: list[list[Token]] | None = None
    best_of_sequences: list[BestOfSequence] | None = None


class Generation(BaseModel):
    generated_text: str
    details: Details | None = None


class StreamEvent(BaseModel):
    index: int
    token: Token
    top_tokens: list[Token] | None = None
    generated_text: str | None = None
    details: StreamDetails | None = None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer (TGI's shape): what went wrong, and its kind."""

    error: str
    error_type: str


def known_parameters() -> list[str]:
    return sorted(GenerateParameters.model_fields)


class Judgement(BaseModel):
    """A rating of one generation, or a preference of `chosen` over `rejected`."""

    model_config = ConfigDict(extra="forbid")

    feedback_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                                    description="makes a retry idempotent")
    generation_id: str | None = Field(None, description="the generation rated")
    rating: int | None = Field(None, ge=1, le=5, description="1 (bad) to 5 (good)")
    chosen: str | None = Field(None, description="the generation preferred")
    rejected: str | None = Field(None, description="the generation it beat")
    comment: str | None = Field(None, max_length=4000)


class FeedbackRequest(BaseModel):
    """`{"feedback": {...}}` on /invocations: a person's judgement of a generation."""

    model_config = ConfigDict(extra="forbid")

    feedback: Judgement


class InfoRequest(BaseModel):
    """`{"info": {}}` on /invocations: what GET /info answers."""

    model_config = ConfigDict(extra="forbid")

    info: dict[str, Any] = Field(default_factory=dict, max_length=0)
