"""`genkiln evaluate`: evaluation.json in the shape the pipeline's JsonGet reads, the report."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genkiln.cli import main
from infra.pipeline_definition import EVALUATION_FILE, REGISTRATION_PASSED, REGISTRATION_REASON
from training.evaluation.evaluate import evaluate_artifact, generation_metrics, write_evaluation
from training.evaluation.report import line_chart, piano_roll
from training.models.formats.notes import Note


def json_get(document: Any, path: str) -> Any:
    """What a SageMaker Pipeline's JsonGet does with a dotted path."""
    for key in path.split("."):
        document = document[key]
    return document


def test_artifacts_keep_their_training_history(tiny_artifact: Path) -> None:
    history = json.loads((tiny_artifact / "genkiln.json").read_text())["history"]
    train = [row for row in history if "train_loss" in row]
    evals = [row for row in history if "val_loss" in row]
    assert [row["step"] for row in train] == [1, 2, 4, 6, 8]  # log_interval 2, and step 1
    assert [row["step"] for row in evals] == [4, 8]  # eval_interval 4


def test_text_evaluation_is_what_the_pipeline_condition_reads(tiny_artifact: Path,
                                                              text_dir: Path,
                                                              tmp_path: Path) -> None:
    evaluation = evaluate_artifact(tiny_artifact, data=text_dir, log=lambda _: None)
    evaluation.register()  # the family's own criterion: val_loss<=5.0
    json_path, report_path = write_evaluation(evaluation, tmp_path)
    document = json.loads(json_path.read_text())
    assert json_path.name == EVALUATION_FILE
    val_loss = document["metrics"]["val_loss"]["value"]
    # An 8-step model is far from the criterion: the pipeline would not register it.
    assert json_get(document, REGISTRATION_PASSED) is False
    assert json_get(document, REGISTRATION_REASON) == \
        f"val_loss = {val_loss:.6g}, misses val_loss<=5.0"
    # The same held-out windows the training run scored: the same value it logged.
    logged = json.loads((tiny_artifact / "genkiln.json").read_text())["metrics"]["val_loss"]
    assert val_loss == pytest.approx(logged, rel=1e-5)
    assert document["metrics"]["val_loss"]["standard_deviation"] > 0
    assert document["metrics"]["val_perplexity"]["value"] > 1
    assert document["baselines"] == {
        "val_perplexity": ["ngram_perplexity", "ngram4_perplexity"],
        "val_bits_per_char": ["ngram_bits_per_char", "ngram4_bits_per_char",
                              "lzma_bits_per_char"]}
    assert 0 < document["metrics"]["lzma_bits_per_char"]["value"] < 8
    for entry in document["metrics"].values():
        assert set(entry) <= {"value", "standard_deviation"}
    html = report_path.read_text()
    assert 'data-name="train_loss"' in html and 'data-name="val_loss"' in html
    # A model this small loses to its baselines, and the report says so in words.
    assert re.search(r"val_perplexity \([0-9.]+\) is behind ngram_perplexity \([0-9.]+\)",
                     html), html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained


def test_the_registration_criterion_may_be_any_measured_metric() -> None:
    from training.evaluation.results import registration

    metrics = {"val_fid": {"value": 12.0}, "val_probe_accuracy": {"value": 0.95}}
    assert registration(metrics, "val_fid<=20")["passed"] is True
    assert registration(metrics, "val_fid < 12")["passed"] is False
    assert registration(metrics, "val_probe_accuracy>=0.9")["passed"] is True
    missing = registration(metrics, "val_loss<=5")
    assert missing["passed"] is False and "val_loss was not measured" in missing["reason"]
    with pytest.raises(ValueError, match="METRIC<=NUMBER"):
        registration(metrics, "val_loss is low")


def test_musegan_evaluates_on_its_own_metrics(musegan_artifact: Path, chorale_dir: Path,
                                              tmp_path: Path) -> None:
    evaluation = evaluate_artifact(musegan_artifact, data=chorale_dir, log=lambda _: None)
    assert {"val_metric_gap", "val_metric_gap_untrained", "val_pitch_classes_real"} <= set(
        evaluation.metrics)
    evaluation.register()
    assert evaluation.registration is not None
    assert evaluation.registration["criterion"] == "val_metric_gap<=0.2"
    write_evaluation(evaluation, tmp_path)  # the report renders for music too


def test_image_evaluation_reports_spread_baselines_and_samples(
        image_artifacts: Callable[[str], Path], digits_dir: Path, tmp_path: Path) -> None:
    evaluation = evaluate_artifact(image_artifacts("gan"), data=digits_dir,
                                   log=lambda _: None)
    fid = evaluation.metrics["val_fid"]
    assert fid["value"] > 0 and fid["standard_deviation"] > 0  # over sampling seeds
    assert {"val_fid_floor", "val_fid_untrained", "val_fid_gaussian",
            "val_fid_gmm"} <= set(evaluation.metrics)
    _, report = write_evaluation(evaluation, tmp_path)
    html = report.read_text()
    assert 'src="data:image/png;base64,' in html
    assert html.count('class="bar"') == 5  # val_fid beside its four baselines
    # A GAN trained for a few steps loses to a Gaussian fitted in a second: said in words.
    assert "val_fid (" in html and "is behind val_fid_gaussian" in html


def test_cli_writes_both_files_and_refuses_without_the_training_data(
        tiny_artifact: Path, text_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tiny_artifact), "--data", str(text_dir),
                 "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out/evaluation.json").is_file()
    assert (tmp_path / "out/report.html").is_file()
    assert "val_perplexity=" in capsys.readouterr().out
    assert main(["evaluate", str(tiny_artifact), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "input/data/train" in err and "--data" in err and len(err.splitlines()) == 1


def test_generation_metrics_see_repetition() -> None:
    varied = generation_metrics(["the cat sat on a mat", "dogs run far away now"])
    repeated = generation_metrics(["the the the the", "the the the the"])
    assert varied["sample_distinct_2"] == 1.0
    assert repeated["sample_distinct_1"] == 1 / 8
    assert repeated["sample_mean_words"] == 4


def test_plots_draw_what_they_are_given() -> None:
    chart = line_chart({"train_loss": [(1, 5.0), (2, 4.0), (3, 3.5)]}, title="loss")
    (points,) = re.findall(r'points="([^"]+)"', chart)
    ys = [float(p.split(",")[1]) for p in points.split()]
    assert ys == sorted(ys)  # a falling loss is drawn going down (SVG y grows downwards)
    notes = [Note(60, 1.0), Note(None, 0.5), Note(64, 0.5), Note(67, 2.0)]
    roll = piano_roll(notes, primer_length=2, title="m")
    assert roll.count('class="note"') == 3  # the rest draws nothing
    assert roll.count('fill="#999"') == 1  # one pitched primer note, in grey


class _TextEndpoint:
    """Stands in for EndpointClient: answers every prompt with the same words."""

    def generate(self, prompt: str, **parameters: Any) -> list[dict[str, Any]]:
        return [{"generated_text": " and so on and so on"}]


def test_an_endpoint_is_scored_on_its_generations_and_says_so(tmp_path: Path) -> None:
    from training.evaluation.evaluate import evaluate_endpoint

    evaluation = evaluate_endpoint(_TextEndpoint(), family="transformer", measured="fake",
                                   prompts=["A", "B"])
    assert "val_perplexity" not in evaluation.metrics
    assert evaluation.metrics["sample_distinct_1"]["value"] == 3 / 12  # and, so, on
    assert any("logits" in note for note in evaluation.notes)
    document = json.loads(write_evaluation(evaluation, tmp_path)[0].read_text())
    assert document["measured"] == "fake" and document["modality"] == "text"


def test_cli_needs_the_family_of_an_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--url", "http://127.0.0.1:9"]) == 2
    assert "--family is required" in capsys.readouterr().err
