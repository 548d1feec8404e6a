"""Serving speed through the real HTTP server (issue 6, benchmarks 2, 3 and 4).

    python -m bench.serving [--quick] [--threads N] [--skip-torchserve]

2. Aggregate decode tokens/s with 1, 8 and 32 concurrent streaming clients against the
   GPT-2-shaped Transformer (6 layers, 8 heads, width 512, vocabulary 8,192, random
   weights), batching on vs off (two server processes, measured in turn), beside the
   model's own offline batch-32 decode rate and HF transformers `generate` at batch 1 of
   the same shape; time to first token p50/p99.
3. Requests/s and p50/p99 latency for the autoencoder's `score` and a GAN `sample` at
   concurrency 1 and 16, genkiln against TorchServe 0.12 serving the same weights with a
   handler, one worker each (TorchServe runs offline on Java 17, token auth off, its logs
   in a temp dir). Skipped, with the reason, when TorchServe can't start.
4. Cold start: process start to the first 200 on /ping (and TorchServe's to its first
   answer).

Every server listens on 127.0.0.1 only; models, artifacts and TorchServe's model store
live in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.loadclient import Connection
from bench.machine import Report, interleaved
from training.artifact import load_artifact, write_artifact
from training.data.text import bundled_corpus
from training.models.formats.tokenizer import TextTokenizer
from training.models.transformer import GPT, GPTSlots, TransformerConfig

SHAPE = dict(block_size=256, n_layer=6, n_head=8, n_embd=512)
VOCAB = 8192
NEW_TOKENS = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- artifacts --------------------------------------------------------------------------
def text_artifact(root: Path) -> Path:
    """A GPT-2-shaped Transformer with random weights and a BPE tokenizer of 8,192 tokens
    trained on the bundled corpus."""
    corpus = bundled_corpus()
    tokenizer = TextTokenizer.train(corpus.documents, vocab_size=VOCAB)
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, bias=True, **SHAPE)
    torch.manual_seed(0)
    model = GPT(cfg)
    tokenizer.save(root / "tokenizer.json")
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    return write_artifact(root / "gpt", family="transformer", modality="text", config={},
                          model_args=asdict(cfg), tensors=state, data={}, metrics={},
                          extra_files={"tokenizer.json": root / "tokenizer.json"})


def image_artifact(root: Path, family: str) -> Path:
    """A small model of ``family`` trained for a few steps on the bundled digits."""
    from training.entry import run_training
    from training.local import emulate_opt_ml

    opt_ml = emulate_opt_ml(root / f"opt_ml_{family}", hyperparameters={
        "family": family, "max_steps": "20", "eval_interval": "100000",
        "log_interval": "100000", "seed": "1"}, data=None)
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    return opt_ml.model_dir


# --- servers ----------------------------------------------------------------------------
class Server:
    """`genkiln serve` in a child process; ``cold_start`` is process start to /ping 200."""

    def __init__(self, artifact: Path, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "genkiln", "serve", str(artifact), "--host",
             "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, "GENKILN_LOG_LEVEL": "WARNING", **env},
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in 240 s; see {log}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        self.cold_start = time.perf_counter() - started

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class TorchServe:
    """TorchServe 0.12 with one worker running a handler over the same artifact."""

    HANDLER = textwrap.dedent('''
        import json
        from pathlib import Path

        _handler = None

        def handle(data, context):
            global _handler
            if _handler is None:
                from inference.handlers import load_handler
                from training.artifact import load_artifact
                _handler = load_handler(load_artifact(Path({artifact!r})))
            if data is None:
                return None
            out = []
            for row in data:
                body = row.get("body") or row.get("data")
                if isinstance(body, (bytes, bytearray)):
                    body = json.loads(body)
                out.append(_handler.predict(_handler.decode(body)))
            return out
        ''')

    def __init__(self, name: str, artifact: Path, root: Path, threads: int) -> None:
        if shutil.which("java") is None:
            raise RuntimeError("java is not on PATH (TorchServe needs Java 11+)")
        bin_dir = Path(sys.executable).parent
        for tool in ("torchserve", "torch-model-archiver"):
            if not (bin_dir / tool).exists():
                raise RuntimeError(f"{tool} is not installed (pip install -e '.[bench]')")
        self.name, self.root = name, root
        root.mkdir(parents=True, exist_ok=True)
        store = root / "store"
        store.mkdir(exist_ok=True)
        handler = root / "handler.py"
        handler.write_text(self.HANDLER.format(artifact=str(artifact)))
        subprocess.run([str(bin_dir / "torch-model-archiver"), "--model-name", name,
                        "--version", "1.0", "--handler", str(handler), "--export-path",
                        str(store), "--force"], check=True, capture_output=True)
        self.port = free_port()
        (root / "config.properties").write_text(textwrap.dedent(f"""\
            inference_address=http://127.0.0.1:{self.port}
            management_address=http://127.0.0.1:{free_port()}
            metrics_address=http://127.0.0.1:{free_port()}
            disable_token_authorization=true
            default_workers_per_model=1
            model_store={store}
            load_models={name}={name}.mar
            install_py_dep_per_model=false
            disable_system_metrics=true
            async_logging=true
            """))
        self.url = f"http://127.0.0.1:{self.port}/predictions/{name}"
        self.log = (root / "torchserve.log").open("wb")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
               "OMP_NUM_THREADS": str(threads), "GENKILN_NUM_THREADS": str(threads),
               "LOG_LOCATION": str(root / "logs"), "METRICS_LOCATION": str(root / "logs")}
        started = time.perf_counter()
        subprocess.run([str(bin_dir / "torchserve"), "--start", "--ncs", "--ts-config",
                        str(root / "config.properties"), "--model-store", str(store),
                        "--disable-token-auth"],
                       cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                       check=True, timeout=60)
        self.bin_dir, self.env = bin_dir, env
        self.cold_start = float("nan")
        self._started = started

    def wait_ready(self, payload: dict[str, Any]) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.post(self.url, json=payload, timeout=5).status_code == 200:
                    self.cold_start = time.perf_counter() - self._started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"TorchServe did not answer within 240 s; see {self.root}")

    def stop(self) -> None:
        subprocess.run([str(self.bin_dir / "torchserve"), "--stop"], cwd=self.root,
                       env=self.env, capture_output=True, timeout=60)
        self.log.close()


# --- load generators --------------------------------------------------------------------
async def stream_load(url: str, clients: int, per_client: int, max_new: int
                      ) -> tuple[float, list[float]]:
    """Aggregate tokens/s of ``clients`` streaming clients, each making ``per_client``
    requests in a row; and every request's time to first token."""
    ttft: list[float] = []
    tokens = 0

    async def client(i: int) -> None:
        nonlocal tokens
        async with Connection(f"{url}/invocations") as http:
            for j in range(per_client):
                body = {"inputs": f"Return the {i} {j}", "stream": True, "parameters": {
                    "max_new_tokens": max_new, "seed": i * 1000 + j, "temperature": 0.8}}
                sent = time.perf_counter()
                first = None
                async for status, line in http.post_lines(body):
                    assert status == 200, line
                    if first is None:
                        first = time.perf_counter() - sent
                    event = json.loads(line.removeprefix(b"data:"))  # server-sent events
                    assert "error" not in event, event
                    tokens += 1
                ttft.append(first or float("nan"))

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return tokens / (time.perf_counter() - started), ttft


async def request_load(url: str, payload: dict[str, Any], concurrency: int, total: int
                       ) -> tuple[float, list[float]]:
    """Requests/s and latencies of ``total`` requests from ``concurrency`` clients."""
    latencies: list[float] = []
    remaining = total

    async def client() -> None:
        nonlocal remaining
        async with Connection(url) as http:
            while remaining > 0:
                remaining -= 1
                sent = time.perf_counter()
                status, body = await http.post(payload)
                assert status == 200, body
                latencies.append(time.perf_counter() - sent)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return total / (time.perf_counter() - started), latencies


# --- offline references -----------------------------------------------------------------
def offline_batch_rate(artifact: Path, batch: int, new: int) -> float:
    """The model's own decode tokens/s at ``batch`` sequences, in this process."""
    from training.models.transformer import from_artifact

    model = from_artifact(load_artifact(artifact)).model
    slots = GPTSlots(model, batch)
    slots.prefill([[1, 2, 3, i + 4] for i in range(batch)])
    tokens = [5] * batch
    started = time.perf_counter()
    for _ in range(new):
        tokens = slots.step(tokens).argmax(-1).tolist()
    return batch * new / (time.perf_counter() - started)


def hf_batch1_rate(vocab: int, new: int) -> float:
    from bench.transformer import hf_model

    shape = {**SHAPE, "vocab_size": vocab}
    hf = hf_model(shape)
    prompt = torch.randint(0, vocab, (1, 8))

    def once() -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                        min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0)
        return new / (time.perf_counter() - started)

    return interleaved(3, once)[0]


# --- the benchmarks ---------------------------------------------------------------------
def text_serving(report: Report, root: Path, threads: int, quick: bool,
                 levels: list[int], new_tokens: int) -> None:
    artifact = text_artifact(root)
    vocab = load_artifact(artifact).model_args["vocab_size"]
    # No deadline cuts here: with batching off, 32 clients queue for minutes on a small CPU.
    env = {"GENKILN_NUM_THREADS": str(threads), "GENKILN_MAX_BATCH_SIZE": "32",
           "GENKILN_REQUEST_TIMEOUT_SECONDS": "3600"}
    servers = {"on": Server(artifact, {**env, "GENKILN_BATCHING": "on"}, root / "on.log"),
               "off": Server(artifact, {**env, "GENKILN_BATCHING": "off"}, root / "off.log")}
    try:
        report.add(f"cold start, process start to first /ping 200 (GPT-2 shape, "
                   f"{threads} threads): batching on {servers['on'].cold_start:.2f} s, "
                   f"off {servers['off'].cold_start:.2f} s")
        offline = offline_batch_rate(artifact, 32, new_tokens)
        hf1 = hf_batch1_rate(vocab, new_tokens)
        report.add(f"offline references: genkiln batch-32 decode {offline:.0f} tokens/s; "
                   f"HF generate batch 1 {hf1:.1f} tokens/s")
        report.add("")
        report.add(f"streaming clients, {new_tokens} new tokens per request (sampled, seeded)")
        report.add(f"{'clients':>7} {'batching':>8} {'tokens/s':>9} {'vs off':>7} "
                   f"{'vs HF b1':>8} {'of offline b32':>14} {'TTFT p50':>9} {'TTFT p99':>9}")
        for clients in levels:
            per_client = (2 if quick else 4) if clients < 32 else (1 if quick else 2)
            results = {}
            for mode in ("on", "off"):  # in turn, so load bursts hit both
                rate, ttft = asyncio.run(stream_load(servers[mode].url, clients, per_client,
                                                     new_tokens))
                results[mode] = (rate, ttft)
            for mode, (rate, ttft) in results.items():
                report.add(f"{clients:>7} {mode:>8} {rate:>9.1f} "
                           f"{rate / results['off'][0]:>6.2f}x {rate / hf1:>7.1f}x "
                           f"{rate / offline:>13.0%} {percentile(ttft, 50):>8.3f}s "
                           f"{percentile(ttft, 99):>8.3f}s")
        report.add("targets at 32 clients: >= 10x HF batch 1, >= 80 % of offline batch 32")
    finally:
        for server in servers.values():
            server.stop()


def image_serving(report: Report, root: Path, threads: int, quick: bool,
                  torchserve: bool) -> None:
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[0] / 16.0 * 255).round().astype("uint8")  # a real 8x8 digit
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    image = base64.b64encode(png.getvalue()).decode()
    cases = {"autoencoder score": ("autoencoder", {"kind": "score", "image": image}),
             "gan sample": ("gan", {"kind": "sample", "n": 1, "seed": 1})}
    total = 200 if quick else 1000
    report.add("")
    report.add(f"small models on /invocations, {total} requests per row, one worker and one "
               f"intra-op thread each (what genkiln's thread fit picks for models this small)")
    report.add(f"{'model':<18} {'server':<11} {'conc':>4} {'req/s':>8} {'p50 ms':>8} "
               f"{'p99 ms':>8} {'vs TorchServe':>13}")
    for label, (family, payload) in cases.items():
        artifact = image_artifact(root, family)
        # genkiln as shipped records every generation for feedback (a file per request);
        # TorchServe records nothing, so genkiln with capture off is the like-for-like row.
        ours = {"genkiln": Server(artifact, {"GENKILN_NUM_THREADS": "1"},
                                  root / f"{family}.log"),
                "no capture": Server(artifact, {"GENKILN_NUM_THREADS": "1",
                                                "GENKILN_FEEDBACK": "off"},
                                     root / f"{family}-off.log")}
        theirs: TorchServe | None = None
        note = ""
        if torchserve:
            try:
                theirs = TorchServe(family, artifact, root / f"ts-{family}", 1)
                theirs.wait_ready(payload)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                note = f"TorchServe row skipped: {exc}"
                if theirs is not None:
                    theirs.stop()
                theirs = None
        else:
            note = "TorchServe row skipped: --skip-torchserve"
        try:
            cold = f"cold start to /ping 200: genkiln {ours['genkiln'].cold_start:.2f} s"
            if theirs is not None:
                cold += f", TorchServe to first answer {theirs.cold_start:.2f} s"
            report.add(f"{label}: {cold}")
            for concurrency in (1, 16):
                results = {name: asyncio.run(request_load(f"{server.url}/invocations",
                                                          payload, concurrency, total))
                           for name, server in ours.items()}
                other = asyncio.run(request_load(theirs.url, payload, concurrency, total)) \
                    if theirs is not None else None
                for name, result in (*results.items(), ("TorchServe", other)):
                    if result is None:
                        continue
                    rate, latencies = result
                    ratio = f"{rate / other[0]:.2f}x" if other is not None else "-"
                    report.add(f"{label:<18} {name:<11} {concurrency:>4} {rate:>8.1f} "
                               f"{1000 * percentile(latencies, 50):>8.2f} "
                               f"{1000 * percentile(latencies, 99):>8.2f} {ratio:>13}")
            if note:
                report.add(note)
        finally:
            for server in ours.values():
                server.stop()
            if theirs is not None:
                theirs.stop()
    report.add("target: >= 3x TorchServe's requests/s at concurrency 16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests per row")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-torchserve", action="store_true")
    parser.add_argument("--only", choices=["text", "images"], default=None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32],
                        help="concurrent streaming clients, one row each")
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = Report("serving", "serving bench (issue 6: 2, 3 and 4)")
    with tempfile.TemporaryDirectory(prefix="genkiln-bench-") as tmp:
        root = Path(tmp)
        if args.only in (None, "text"):
            text_serving(report, root, args.threads, args.quick, args.clients, args.new_tokens)
        if args.only in (None, "images"):
            image_serving(report, root, args.threads, args.quick, not args.skip_torchserve)
    report.save()


if __name__ == "__main__":
    main()
