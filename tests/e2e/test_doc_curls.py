"""Every `curl` in the README and docs/, run as written (in order, with bash and the real
curl) against real servers: a newcomer who pastes one gets a 200 and an answer. Only the
address changes, to the test server's; a curl naming a request `kind` goes to an image
model's server, the others to a text model's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.servers import serving

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def curls(path: Path) -> list[str]:
    """The curl commands of a Markdown file's bash blocks, continuation lines joined."""
    commands, current, quoted = [], "", False
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.splitlines():
            if not current and not line.startswith("curl "):
                continue
            current += line + "\n"
            quoted ^= line.count("'") % 2 == 1
            if not quoted and not line.rstrip().endswith("\\"):
                commands.append(current)
                current = ""
    return commands


ALL = [(path.name, command) for path in DOCS for command in curls(path)]


def test_the_docs_have_curls() -> None:
    assert len(ALL) >= 8, ALL


@pytest.fixture(scope="module")
def servers(tiny_artifact: Path, image_artifacts: Any, diffusion_artifact: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    env = {**os.environ, "GENKILN_FEEDBACK_DIR": str(tmp_path_factory.mktemp("curls"))}
    with serving(tiny_artifact, env=env) as text, serving(image_artifacts("gan"), env=env) as gan, \
            serving(diffusion_artifact, env=env) as diffusion:
        yield {"text": text.url, "image": gan.url, "diffusion": diffusion.url}


@pytest.mark.parametrize(("doc", "command"), ALL, ids=[f"{d}:{i}" for i, (d, _) in
                                                       enumerate(ALL)])
def test_every_curl_runs_as_written(doc: str, command: str, servers: dict[str, str],
                                    tmp_path: Path) -> None:
    url = servers["diffusion" if '"kind": "generate"' in command
                  else "image" if '"kind"' in command else "text"]
    headers = tmp_path / "headers"
    # The same command, with the address and a -D to read its status: nothing else.
    run = command.replace("http://localhost:8080", url).replace("localhost:8080", url)
    run = run.replace("curl ", f"curl -D {headers} ", 1)
    done = subprocess.run(["bash", "-c", run], cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    status = int(headers.read_text().split()[1])
    assert status == 200, (command, done.stdout[:500])
    written = [p for p in tmp_path.iterdir() if p.name != "headers"]
    out = written[0].read_bytes() if written else done.stdout
    assert out
    if not written:
        text = out.decode()
        if text.startswith("data:"):
            assert all(chunk.startswith("data:") for chunk in text.split("\n\n") if chunk)
        else:
            json.loads(text)
