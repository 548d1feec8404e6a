"""Every family's server names one request in /info that it answers 200: what a
deployment's smoke test (the promotion workflow) sends through InvokeEndpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.server import create_app
from tests.unit.test_server import wait_ready


@pytest.mark.parametrize("family", ["transformer", "gan", "vae", "rbm", "autoencoder",
                                    "musegan", "rnn"])
def test_the_smoke_request_of_info_is_answered(
        family: str, tiny_artifact: Path, image_artifacts: Any, musegan_artifact: Path,
        melody_rnn_artifact: Path) -> None:
    artifact = {"transformer": tiny_artifact, "musegan": musegan_artifact,
                "rnn": melody_rnn_artifact}.get(family) or image_artifacts(family)
    with TestClient(create_app(artifact, feedback_store=None)) as client:
        wait_ready(client)
        # Through /invocations only, as through an endpoint.
        info = client.post("/invocations", content=b'{"info": {}}',
                           headers={"Content-Type": "application/json"}).json()
        assert info["family"] == family
        answer = client.post("/invocations", content=json.dumps(info["smoke_request"]),
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()
