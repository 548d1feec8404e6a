"""`genkiln monitor` over a captured folder in SageMaker's data-capture format, with a
drift planted in it that the monitor must flag, and its figures published to CloudWatch."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from genkiln.cli import main
from training.evaluation.monitor import monitor, read_capture
from training.feedback import FeedbackRecord, GenerationRecord, LocalFeedbackStore

END = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def capture_line(when: datetime, request: Any, answer: Any, *, base64_answer: bool = False
                 ) -> str:
    """One request and answer as SageMaker's data capture writes them."""
    body = json.dumps(answer)
    output = ({"observedContentType": "application/json", "mode": "OUTPUT",
               "data": base64.b64encode(body.encode()).decode(), "encoding": "BASE64"}
              if base64_answer else
              {"observedContentType": "application/json", "mode": "OUTPUT", "data": body,
               "encoding": "JSON"})
    return json.dumps({"captureData": {
        "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                          "data": json.dumps(request), "encoding": "JSON"},
        "endpointOutput": output},
        "eventMetadata": {"eventId": f"e-{when.timestamp()}",
                          "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "eventVersion": "0"})


def write_capture(root: Path, texts: list[str], *, refusals: int = 0) -> Path:
    folder = root / "capture" / "genkiln-dev-endpoint" / "AllTraffic" / "2026/12/03/11"
    folder.mkdir(parents=True)
    lines = [capture_line(END - timedelta(minutes=5 + i), {"inputs": "The"},
                          [{"generated_text": text}], base64_answer=i % 2 == 1)
             for i, text in enumerate(texts)]
    lines += [capture_line(END - timedelta(minutes=1), {"inputs": 7},
                           {"error": "inputs: ...", "error_type": "validation"})] * refusals
    # An exchange from before the window: not counted.
    lines.append(capture_line(END - timedelta(days=3), {"inputs": "old"},
                              [{"generated_text": "old old old"}]))
    (folder / "capture-1.jsonl").write_text("\n".join(lines) + "\n")
    return root / "capture"


VARIED = ["beautiful is better than ugly", "explicit is better than implicit",
          "simple is better than complex", "flat is better than nested"]
BROKEN = ["the the the the the the"] * 4  # what a model gone wrong answers


def baseline_of(texts: list[str]) -> dict[str, Any]:
    from training.evaluation.evaluate import generation_metrics

    return {"metrics": {k: {"value": v} for k, v in generation_metrics(texts).items()}}


def test_a_planted_drift_is_flagged(tmp_path: Path) -> None:
    capture = write_capture(tmp_path, BROKEN, refusals=1)
    report = monitor(capture=capture, feedback=None, end=END, hours=24,
                     endpoint="genkiln-dev-endpoint", baseline=baseline_of(VARIED))
    assert report.figures["requests"] == 5  # four answers and a refusal, not the old one
    assert report.figures["refusal_rate"] == pytest.approx(0.2)
    assert report.figures["sample_distinct_1"] == pytest.approx(1 / 24)
    assert report.figures["quality_drift"] > 0.9
    assert report.alarms == ["quality_drift"]
    assert "sample_distinct" in report.notes[0]


def test_a_healthy_window_raises_nothing(tmp_path: Path) -> None:
    capture = write_capture(tmp_path, VARIED)
    report = monitor(capture=capture, feedback=None, end=END, hours=24,
                     baseline=baseline_of(VARIED))
    assert report.figures["quality_drift"] == pytest.approx(0.0)
    assert report.figures["refusal_rate"] == 0 and report.alarms == []
    sizes = [len(e.answer) for e in read_capture(capture)]
    assert report.figures["answer_bytes_p95"] <= max(sizes)


def test_feedback_gives_latency_ratings_and_the_newest_models_win_rate(
        tmp_path: Path) -> None:
    store = LocalFeedbackStore(tmp_path / "feedback")
    when = (END - timedelta(hours=1)).isoformat()
    later = (END - timedelta(minutes=30)).isoformat()
    for gid, model, latency, created in (("g-old", "m-1", 40.0, when),
                                         ("g-new", "m-2", 20.0, later),
                                         ("g-new2", "m-2", 30.0, later)):
        store.put(GenerationRecord(generation_id=gid, family="transformer", kind="generate",
                                   inputs="x", parameters={}, output={"text": "y"},
                                   model=model, latency_ms=latency, created=created))
    store.put(FeedbackRecord(feedback_id="f1", generation_id="g-new", rating=5))
    store.put(FeedbackRecord(feedback_id="f2", generation_id="g-old", rating=2))
    store.put(FeedbackRecord(feedback_id="f3", chosen="g-new", rejected="g-old"))
    store.put(FeedbackRecord(feedback_id="f4", chosen="g-old", rejected="g-new2"))
    store.put(FeedbackRecord(feedback_id="f5", chosen="g-new", rejected="g-new2"))
    figures = monitor(capture=None, feedback=tmp_path / "feedback", end=END, hours=24).figures
    assert figures["latency_ms"] == pytest.approx(30.0)
    assert figures["rating_mean"] == pytest.approx(3.5) and figures["ratings"] == 2
    assert figures["preferences"] == 3
    # Of the two preferences between models, the newest (m-2) won one.
    assert figures["preference_win_rate"] == pytest.approx(0.5)


def test_the_command_writes_monitor_json_and_publishes_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    capture = write_capture(tmp_path, BROKEN)
    baseline = tmp_path / "evaluation.json"
    baseline.write_text(json.dumps(baseline_of(VARIED)))
    with moto.mock_aws():
        assert main(["monitor", "--capture", str(capture), "--baseline", str(baseline),
                     "--until", END.isoformat(), "--endpoint", "genkiln-dev-endpoint",
                     "--output", str(tmp_path / "out"), "--publish"]) == 0
        metrics = boto3.client("cloudwatch").list_metrics(Namespace="genkiln")["Metrics"]
    names = {m["MetricName"] for m in metrics}
    assert {"requests", "quality_drift", "refusal_rate", "sample_distinct_1"} <= names
    assert all(m["Dimensions"] == [{"Name": "EndpointName", "Value": "genkiln-dev-endpoint"}]
               for m in metrics)
    written = json.loads((tmp_path / "out/monitor.json").read_text())
    assert written["alarms"] == ["quality_drift"]
    assert "alarms: quality_drift" in capsys.readouterr().out
