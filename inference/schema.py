"""The request and response shapes of text generation: Hugging Face TGI's, so existing
SageMaker clients (the SDK's predictors, LangChain, LiteLLM) work unchanged.

    request   {"inputs": "...", "parameters": {...}, "stream": false}
    response  [{"generated_text": "...", "details": {...}}]
    stream    one JSON line per token: {"index", "token", "generated_text", "details"};
              the last line carries generated_text and details
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1"

#: "deadline": cut at the server's request timeout (GENKILN_REQUEST_TIMEOUT_SECONDS).
FinishReason = Literal["length", "eos_token", "stop_sequence", "deadline"]


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    do_sample: bool = Field(False, description="sample; false is greedy unless a sampling "
                            "parameter (temperature, top_k, top_p) is given")
    max_new_tokens: int | None = Field(None, ge=1, description="tokens to generate at most")
    temperature: float | None = Field(None, ge=0.0, le=100.0, description="0 is greedy")
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    stop: list[str] = Field(default_factory=list, max_length=8)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    truncate: int | None = Field(None, ge=1, description="keep only the last N prompt tokens")
    return_full_text: bool = False
    details: bool = False

    @property
    def sampling(self) -> bool:
        if self.temperature == 0.0:
            return False
        return self.do_sample or any(
            v is not None for v in (self.temperature, self.top_k, self.top_p))


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="a prompt, or a list of prompts (not streamed)")
    parameters: GenerateParameters = Field(default_factory=lambda: GenerateParameters())
    stream: bool = False


VALID_KEYS = {
    "body": sorted(GenerateRequest.model_fields),
    "parameters": sorted(GenerateParameters.model_fields),
}


class Token(BaseModel):
    id: int
    text: str
    logprob: float
    special: bool


class StreamDetails(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None


class Details(StreamDetails):
    prefill: list[Token] = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)


class Generation(BaseModel):
    generated_text: str
    details: Details | None = None


class StreamEvent(BaseModel):
    index: int
    token: Token
    generated_text: str | None = None
    details: StreamDetails | None = None
