"""`genkiln monitor`: what an endpoint served over a window, as health figures and alarms.

It reads what the endpoint left behind: SageMaker's data capture (one JSON line per
request and answer: `captureData.endpointInput/endpointOutput`, `eventMetadata`) and the
server's own feedback store (`generations/*.json` with each answer's latency and model,
`feedback/*.json` with people's ratings and preferences). For the window it computes:

    requests                       requests captured
    request_bytes, answer_bytes    mean size; also their 95th percentile (`_p95`)
    refusal_rate                   answers that were a JSON error (4xx the client got)
    latency_ms, latency_ms_p95     request read to answer ready, from the records
    rating_mean, ratings           people's 1-5 ratings of the window's generations
    preference_win_rate            of the preferences between two models, the share the
                                   newest model won (with one model: not computed)
    the family's own figure        text: distinct-1/2 and mean length of the answers
                                   (sample_distinct_1, ...); images: mean ink of the
                                   returned PNGs (sample_mean_ink)
    quality_drift                  the largest relative distance of those figures from
                                   the same figures in the model's evaluation.json

and says which alarms it raises (`quality_drift` above 0.25, `refusal_rate` above 0.2).
As a SageMaker processing job (the monitor pipeline the serving stack schedules) it reads
/opt/ml/processing/{capture,feedback,baseline}, writes monitor.json to
/opt/ml/processing/monitor, and publishes every figure as a CloudWatch metric
(namespace `genkiln`, dimension EndpointName), where the stack's alarms watch them.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from training.evaluation.evaluate import generation_metrics
from training.feedback import read_feedback

MONITOR_FILE = "monitor.json"
NAMESPACE = "genkiln"
#: figure -> the value above which it raises an alarm
ALARMS = {"quality_drift": 0.25, "refusal_rate": 0.2}
#: the family figures compared with the evaluation's, when both have them
QUALITY = ("sample_distinct_1", "sample_distinct_2", "sample_mean_words", "sample_mean_ink")


@dataclass
class Exchange:
    """One captured request and its answer."""

    time: datetime
    request: bytes
    answer: bytes
    answer_type: str

    def answer_json(self) -> Any:
        try:
            return json.loads(self.answer)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None


def _decode(part: Mapping[str, Any]) -> bytes:
    data = str(part.get("data", ""))
    if str(part.get("encoding", "")).upper() == "BASE64":
        return base64.b64decode(data)
    return data.encode()


def _time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_capture(folder: Path) -> Iterator[Exchange]:
    """Every exchange in a data-capture folder (`<endpoint>/<variant>/y/m/d/h/*.jsonl`)."""
    for path in sorted(Path(folder).rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            data = record.get("captureData", {})
            output = data.get("endpointOutput", {})
            yield Exchange(time=_time(record["eventMetadata"]["inferenceTime"]),
                           request=_decode(data.get("endpointInput", {})),
                           answer=_decode(output),
                           answer_type=str(output.get("observedContentType", "")))


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _texts(answer: Any) -> list[str]:
    """The generated texts of a TGI or OpenAI answer."""
    items = answer if isinstance(answer, list) else [answer]
    texts = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("generated_text"), str):
            texts.append(item["generated_text"])
        for choice in item.get("choices") or []:
            message = choice.get("message") or {}
            text = message.get("content") if message else choice.get("text")
            if isinstance(text, str):
                texts.append(text)
    return texts


def _ink(answer: Any) -> list[float]:
    """Mean pixel value of each PNG an image family answered with."""
    from training.models.formats.png import decode_png

    images = answer.get("images") if isinstance(answer, dict) else None
    return [float(decode_png(base64.b64decode(png)).mean()) for png in images or []
            if isinstance(png, str)]


@dataclass
class Report:
    endpoint: str
    start: datetime
    end: datetime
    figures: dict[str, float] = field(default_factory=dict)
    alarms: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "figures": self.figures,
                "alarms": self.alarms, "notes": self.notes}


def monitor(*, capture: Path | None, feedback: Path | None, end: datetime, hours: float,
            endpoint: str = "", baseline: Mapping[str, Any] | None = None) -> Report:
    """The window's figures and alarms (``baseline``: the model's evaluation.json)."""
    start = end - timedelta(hours=hours)
    report = Report(endpoint=endpoint, start=start, end=end)
    figures = report.figures
    exchanges = [e for e in (read_capture(capture) if capture else [])
                 if start <= e.time < end]
    figures["requests"] = float(len(exchanges))
    if exchanges:
        for name, sizes in (("request_bytes", [len(e.request) for e in exchanges]),
                            ("answer_bytes", [len(e.answer) for e in exchanges])):
            figures[name] = sum(sizes) / len(sizes)
            figures[f"{name}_p95"] = float(_p95([float(s) for s in sizes]))
        answers = [e.answer_json() for e in exchanges]
        refused = [a for a in answers if isinstance(a, dict) and "error" in a]
        figures["refusal_rate"] = len(refused) / len(exchanges)
        texts = [t for a in answers for t in _texts(a)]
        if texts:
            figures.update(generation_metrics(texts))
        ink = [v for a in answers for v in _ink(a)]
        if ink:
            figures["sample_mean_ink"] = sum(ink) / len(ink)
    else:
        report.notes.append("no captured requests in the window")
    if feedback is not None and Path(feedback).is_dir():
        _feedback_figures(read_feedback(feedback), start, end, figures)
    if baseline:
        metrics = baseline.get("metrics", {})
        drifts = {name: abs(figures[name] - metrics[name]["value"])
                  / max(abs(metrics[name]["value"]), 1e-9)
                  for name in QUALITY if name in figures and name in metrics}
        if drifts:
            figures["quality_drift"] = max(drifts.values())
            worst = max(drifts, key=lambda n: drifts[n])
            report.notes.append(f"quality drift from {worst}: {figures[worst]:.4g} live "
                                f"against {metrics[worst]['value']:.4g} evaluated")
    report.alarms = [name for name, bound in ALARMS.items() if figures.get(name, 0) > bound]
    return report


def _feedback_figures(records: Any, start: datetime, end: datetime,
                      figures: dict[str, float]) -> None:
    in_window = {g.generation_id: g for g in records.generations.values()
                 if start <= _time(g.created) < end}
    latencies = [g.latency_ms for g in in_window.values() if g.latency_ms is not None]
    if latencies:
        figures["latency_ms"] = sum(latencies) / len(latencies)
        figures["latency_ms_p95"] = _p95(latencies)
    ratings = [r for g, r in records.ratings() if g.generation_id in in_window]
    if ratings:
        figures["rating_mean"] = sum(ratings) / len(ratings)
        figures["ratings"] = float(len(ratings))
    pairs = [(c, r) for c, r in records.preferences()
             if c.generation_id in in_window or r.generation_id in in_window]
    across = [(c, r) for c, r in pairs if c.model and r.model and c.model != r.model]
    if across:
        newest = max((g for pair in across for g in pair), key=lambda g: _time(g.created)).model
        contested = [(c, r) for c, r in across if newest in (c.model, r.model)]
        figures["preference_win_rate"] = sum(c.model == newest for c, _ in contested) / len(
            contested)
    figures["preferences"] = float(len(pairs))


def publish(report: Report, cloudwatch: Any) -> None:
    """Every figure as a CloudWatch metric of the endpoint, at the window's end."""
    data = [{"MetricName": name, "Value": value, "Timestamp": report.end,
             "Dimensions": [{"Name": "EndpointName", "Value": report.endpoint}]}
            for name, value in report.figures.items() if math.isfinite(value)]
    for i in range(0, len(data), 20):  # PutMetricData takes up to 1,000; stay modest
        cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data[i:i + 20])


def write(report: Report, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MONITOR_FILE
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return path
