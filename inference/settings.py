"""Everything the serving container takes from its environment, in one place.

The names are the constants below; each setting's default is written once, as its
field's default; `ServingSettings.from_env()` reads them all, once, when the server
starts, and a bad value stops start-up with what to change. SageMaker sets
SAGEMAKER_BIND_TO_PORT; the CDK endpoint (infra/constructs/endpoint.py) and
`genkiln deploy` set the GENKILN_ ones (tests/unit/test_settings.py keeps them equal).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# --- set by SageMaker hosting ---
#: The port to serve on, when SageMaker asks for another than 8080.
SAGEMAKER_BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"

# --- genkiln's own ---
#: Requests in flight (decoding + waiting) before /invocations answers 429 (TGI's
#: max_concurrent_requests).
GENKILN_MAX_CONCURRENT_REQUESTS = "GENKILN_MAX_CONCURRENT_REQUESTS"
#: Sequences decoded together (text) or requests run as one batch (images).
GENKILN_MAX_BATCH_SIZE = "GENKILN_MAX_BATCH_SIZE"
#: "on" (default) or "off": off decodes one request at a time, in arrival order.
GENKILN_BATCHING = "GENKILN_BATCHING"
#: How long an image request waits for others to share its batch, in milliseconds.
GENKILN_BATCH_WAIT_MS = "GENKILN_BATCH_WAIT_MS"
#: Seconds a request may take before it is cut (SageMaker gives /invocations 60 s).
GENKILN_REQUEST_TIMEOUT_SECONDS = "GENKILN_REQUEST_TIMEOUT_SECONDS"
#: Prompts one request may carry (a list of inputs); more is answered 422.
GENKILN_MAX_PROMPTS_PER_REQUEST = "GENKILN_MAX_PROMPTS_PER_REQUEST"
#: Seconds between SIGTERM and the process's exit (SageMaker kills it 30 s after SIGTERM):
#: generations still running 5 s before the end are cut with an event that says so.
GENKILN_SHUTDOWN_GRACE_SECONDS = "GENKILN_SHUTDOWN_GRACE_SECONDS"
#: Weights the Transformer serves with: "fp32" (default), "bf16" or "int8" (weight-only
#: dynamic quantization of the Linear layers).
GENKILN_SERVING_PRECISION = "GENKILN_SERVING_PRECISION"
#: Largest request body /invocations accepts, in bytes (SageMaker real-time: 6 MB; the
#: asynchronous endpoint raises it).
GENKILN_MAX_REQUEST_BYTES = "GENKILN_MAX_REQUEST_BYTES"
#: Intra-op threads; unset: measured at start-up (see inference.threads).
GENKILN_NUM_THREADS = "GENKILN_NUM_THREADS"
#: The model's name in the OpenAI routes (/v1/models, "model" in answers); default
#: genkiln-<family>-<first 12 hex digits of the artifact's digest>.
GENKILN_MODEL_ID = "GENKILN_MODEL_ID"
#: Log level of the server ("INFO" by default).
GENKILN_LOG_LEVEL = "GENKILN_LOG_LEVEL"
# feedback capture (inference/feedback_store.py)
#: "off" records nothing; "on" (the default) records generations and feedback.
GENKILN_FEEDBACK = "GENKILN_FEEDBACK"
#: s3://bucket/prefix/ of the store in AWS (the capture bucket's feedback/ prefix).
GENKILN_FEEDBACK_URI = "GENKILN_FEEDBACK_URI"
#: KMS key (id or ARN) that encrypts records written to GENKILN_FEEDBACK_URI.
GENKILN_FEEDBACK_KMS_KEY_ID = "GENKILN_FEEDBACK_KMS_KEY_ID"
#: A local store directory, when GENKILN_FEEDBACK_URI is unset (default: a temp folder).
GENKILN_FEEDBACK_DIR = "GENKILN_FEEDBACK_DIR"

PRECISIONS = ("fp32", "bf16", "int8")
SWITCHES = {"on": True, "true": True, "1": True, "yes": True,
            "off": False, "false": False, "0": False, "no": False}
#: SageMaker's real-time limit on a request body.
REAL_TIME_REQUEST_BYTES = 6 * 1024 * 1024


@dataclass(frozen=True)
class FeedbackSettings:
    """Where generations and judgements are recorded (inference.feedback_store)."""

    enabled: bool = True
    uri: str = ""  # s3://bucket/prefix/; empty: a local folder
    kms_key_id: str = ""
    directory: str = ""  # empty: a folder in the temp directory


def _number(low: float, high: float, *, whole: bool = False) -> Callable[[str, str], Any]:
    def parse(name: str, raw: str) -> Any:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a number; set it to a value from "
                             f"{low:g} to {high:g} or unset it") from None
        if not low <= value <= high or (whole and value != int(value)):
            kind = "a whole number" if whole else "a value"
            raise ValueError(f"{name}={raw} is out of range; set it to {kind} from "
                             f"{low:g} to {high:g} or unset it")
        return int(value) if whole else value
    return parse


def _switch(name: str, raw: str) -> bool:
    value = SWITCHES.get(raw.strip().lower())
    if value is None:
        raise ValueError(f"{name}={raw!r}: set it to on or off")
    return value


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"{name}={raw!r}: set it to one of {', '.join(allowed)}")
        return value
    return parse


def _text(name: str, raw: str) -> str:
    return raw.strip()


@dataclass(frozen=True)
class ServingSettings:
    #: in flight (running + waiting) before 429; text-generation-inference's default is 128
    max_concurrent_requests: int = 128
    #: text: sequences in one decode step; images: requests in one forward pass
    max_batch_size: int = 32
    #: False decodes one request at a time (the comparison the benchmarks make)
    batching: bool = True
    #: images: how long the first request of a batch waits for company
    batch_wait_ms: float = 5.0
    #: a request is cut after this long; below SageMaker's 60 s for /invocations
    request_timeout_s: float = 55.0
    #: the Transformer's serving weights
    precision: str = "fp32"
    #: prompts one request may carry
    max_prompts: int = 64
    #: SIGTERM to exit; below SageMaker's 30 s before SIGKILL
    shutdown_grace_s: float = 25.0
    #: largest request body, in bytes
    max_request_bytes: int = REAL_TIME_REQUEST_BYTES
    #: intra-op threads; None: the faster of 1 and all cores, measured at start-up
    num_threads: int | None = None
    #: the model's name in the OpenAI routes; None: derived from the artifact
    model_id: str | None = None
    port: int = 8080
    log_level: str = "info"
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)

    @property
    def drain_s(self) -> float:
        """After SIGTERM, generations may run this long; then they are cut, each ending
        with an event that says why, in time for the answer to reach its client."""
        return max(0.0, self.shutdown_grace_s - 5.0)

    @property
    def decode_slots(self) -> int:
        return self.max_batch_size if self.batching else 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """The settings the environment sets; the rest keep their defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (variable, parse) in _READ.items():
            raw = environ.get(variable, "")
            if raw.strip():
                values[name] = parse(variable, raw)
        feedback = {name: values.pop(name) for name in _FEEDBACK if name in values}
        return cls(**values, feedback=FeedbackSettings(**feedback))


#: field -> (environment variable, parser); FeedbackSettings' fields are read alike.
_READ: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "max_concurrent_requests": (GENKILN_MAX_CONCURRENT_REQUESTS,
                                _number(1, 100_000, whole=True)),
    "max_batch_size": (GENKILN_MAX_BATCH_SIZE, _number(1, 1024, whole=True)),
    "batching": (GENKILN_BATCHING, _switch),
    "batch_wait_ms": (GENKILN_BATCH_WAIT_MS, _number(0.0, 1000.0)),
    "request_timeout_s": (GENKILN_REQUEST_TIMEOUT_SECONDS, _number(0.1, 3600.0)),
    "precision": (GENKILN_SERVING_PRECISION, _choice(*PRECISIONS)),
    "max_prompts": (GENKILN_MAX_PROMPTS_PER_REQUEST, _number(1, 100_000, whole=True)),
    "shutdown_grace_s": (GENKILN_SHUTDOWN_GRACE_SECONDS, _number(1.0, 3600.0)),
    "max_request_bytes": (GENKILN_MAX_REQUEST_BYTES, _number(0, 2**40, whole=True)),
    "num_threads": (GENKILN_NUM_THREADS, _number(1, 4096, whole=True)),
    "model_id": (GENKILN_MODEL_ID, _text),
    "port": (SAGEMAKER_BIND_TO_PORT, _number(1, 65535, whole=True)),
    "log_level": (GENKILN_LOG_LEVEL, _choice("debug", "info", "warning", "error")),
    "enabled": (GENKILN_FEEDBACK, _switch),
    "uri": (GENKILN_FEEDBACK_URI, _text),
    "kms_key_id": (GENKILN_FEEDBACK_KMS_KEY_ID, _text),
    "directory": (GENKILN_FEEDBACK_DIR, _text),
}
_FEEDBACK = {f.name for f in fields(FeedbackSettings)}
#: The defaults, as a server without any of these variables runs.
DEFAULTS = ServingSettings()
#: Every variable the server reads.
NAMES = frozenset(variable for variable, _ in _READ.values())
