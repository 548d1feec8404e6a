"""The serving concurrency settings, read from the environment (names in
training.environment), each checked so a bad value stops start-up with what to change."""

from __future__ import annotations

import os
from dataclasses import dataclass

from training import environment as env

PRECISIONS = ("fp32", "bf16", "int8")


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

    @property
    def drain_s(self) -> float:
        """After SIGTERM, generations may run this long; then they are cut, each ending
        with an event that says why, in time for the answer to reach its client."""
        return max(0.0, self.shutdown_grace_s - 5.0)

    @property
    def decode_slots(self) -> int:
        return self.max_batch_size if self.batching else 1

    @classmethod
    def from_env(cls) -> ServingSettings:
        def number(name: str, default: float, low: float, high: float) -> float:
            raw = os.environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number; set it to a value from "
                                 f"{low:g} to {high:g} or unset it") from None
            if not low <= value <= high:
                raise ValueError(f"{name}={raw} is out of range; set it to a value from "
                                 f"{low:g} to {high:g} or unset it")
            return value

        batching = os.environ.get(env.GENKILN_BATCHING, "on").strip().lower()
        if batching not in ("on", "off", "true", "false", "1", "0"):
            raise ValueError(f"{env.GENKILN_BATCHING}={batching!r}: set it to on or off")
        precision = os.environ.get(env.GENKILN_SERVING_PRECISION, "fp32").strip().lower()
        if precision not in PRECISIONS:
            raise ValueError(f"{env.GENKILN_SERVING_PRECISION}={precision!r}: set it to one "
                             f"of {', '.join(PRECISIONS)}")
        return cls(
            max_concurrent_requests=int(number(env.GENKILN_MAX_CONCURRENT_REQUESTS, 128, 1,
                                               100_000)),
            max_batch_size=int(number(env.GENKILN_MAX_BATCH_SIZE, 32, 1, 1024)),
            batching=batching in ("on", "true", "1"),
            batch_wait_ms=number(env.GENKILN_BATCH_WAIT_MS, 5.0, 0.0, 1000.0),
            request_timeout_s=number(env.GENKILN_REQUEST_TIMEOUT_SECONDS, 55.0, 0.1, 3600.0),
            precision=precision,
            max_prompts=int(number(env.GENKILN_MAX_PROMPTS_PER_REQUEST, 64, 1, 100_000)),
            shutdown_grace_s=number(env.GENKILN_SHUTDOWN_GRACE_SECONDS, 25.0, 1.0, 3600.0),
        )
