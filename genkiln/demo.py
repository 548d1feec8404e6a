"""`genkiln demo` (what `make run` runs): train, serve, generate, on the embedded default.

Nothing here is a shortcut: training goes through the SageMaker contract on an emulated
/opt/ml, the server is the real one in its own process, and generation goes over HTTP
through `EndpointClient`, exactly as a deployed endpoint would be used.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from genkiln.client import EndpointClient
from inference.settings import GENKILN_LOG_LEVEL
from training.local import train_locally

READY_TIMEOUT_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(*, model_dir: Path, seconds: float, prompt: str, port: int = 0) -> int:
    print(f"== 1/3 training the bundled Transformer for {seconds:g} s (local mode)",
          flush=True)
    code = train_locally(model_dir=model_dir, hyperparameters={
        "family": "transformer", "max_seconds": str(seconds), "max_steps": "100000",
        "eval_interval": "100", "log_interval": "25"})
    if code != 0:
        return code

    port = port or _free_port()
    print(f"\n== 2/3 serving {model_dir} on http://127.0.0.1:{port}", flush=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "genkiln", "serve", str(model_dir), "--port", str(port)],
        env={**os.environ, GENKILN_LOG_LEVEL: "warning"})
    client = EndpointClient(url=f"http://127.0.0.1:{port}")
    try:
        started = time.monotonic()
        while not client.ping():
            if server.poll() is not None or time.monotonic() - started > READY_TIMEOUT_SECONDS:
                print("the server did not become ready", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print(f"ready after {time.monotonic() - started:.2f} s", flush=True)

        print(f"\n== 3/3 generating for the prompt {prompt!r}\n-- streamed (seed 1):",
              flush=True)
        print(prompt, end="", flush=True)
        tokens, t0 = 0, time.perf_counter()
        for event in client.stream(prompt, max_new_tokens=80, temperature=0.8, top_k=50,
                                   seed=1):
            print(event["token"]["text"], end="", flush=True)
            tokens += 1
        rate = tokens / (time.perf_counter() - t0)
        print(f"\n   ({tokens} tokens, {rate:.0f} tokens/s over HTTP)")
        for seed in (2, 3):
            [result] = client.generate(prompt, max_new_tokens=60, temperature=0.8, top_k=50,
                                       seed=seed)
            print(f"-- seed {seed}:\n{prompt}{result['generated_text']}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print(f"\nDone. Serve it again with: genkiln serve {model_dir}")
    return 0
