import json
from pathlib import Path

import pytest

from training.contract import ChannelError, OptMl
from training.entry import EXIT_BAD_INPUT, run_training
from training.local import emulate_opt_ml


def write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_reads_the_sagemaker_layout(opt_ml: OptMl) -> None:
    write(opt_ml.hyperparameters_path, {"batch_size": "25", "bias": False})
    write(opt_ml.resourceconfig_path, {"current_host": "algo-2", "hosts": ["algo-2", "algo-1"],
                                       "network_interface_name": "eth0"})
    assert opt_ml.hyperparameters() == {"batch_size": "25", "bias": "false"}
    resources = opt_ml.resource_config()
    assert resources.hosts == ["algo-1", "algo-2"] and resources.rank == 1


def test_declared_but_missing_channel_is_an_error(opt_ml: OptMl) -> None:
    write(opt_ml.inputdataconfig_path, {"train": {"TrainingInputMode": "File"}})
    with pytest.raises(ChannelError, match="channel 'train' is declared but .* does not exist"):
        opt_ml.channel("train")
    (opt_ml.root / "input" / "data" / "train").mkdir(parents=True)
    with pytest.raises(ChannelError, match="holds no files"):
        opt_ml.channel("train")


def test_undeclared_channel_is_none(opt_ml: OptMl) -> None:
    assert opt_ml.channel("validation") is None


def test_sm_channel_variable_points_elsewhere(opt_ml: OptMl, text_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(text_dir))
    monkeypatch.setenv("GENKILN_OPT_ML", str(opt_ml.root))
    assert OptMl.from_environment().channel("train") == text_dir


def test_missing_channel_fails_the_job_with_a_reason(opt_ml: OptMl) -> None:
    write(opt_ml.inputdataconfig_path, {"train": {"TrainingInputMode": "File"}})
    assert run_training(opt_ml) == EXIT_BAD_INPUT
    reason = opt_ml.failure_path.read_text()
    assert "channel 'train' is declared" in reason
    assert reason.count("\n") == 1  # one line: SageMaker shows it as FailureReason
    assert not opt_ml.model_dir.exists() or not any(opt_ml.model_dir.iterdir())


def test_unknown_hyperparameter_fails_the_job_listing_valid_ones(tmp_path: Path,
                                                                 text_dir: Path) -> None:
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters={"batchsize": "4"}, data=text_dir)
    assert run_training(opt_ml) == EXIT_BAD_INPUT
    reason = opt_ml.failure_path.read_text()
    assert reason.startswith("unknown hyperparameter batchsize; valid ones are:")
    assert "batch_size" in reason
    assert list(opt_ml.model_dir.iterdir()) == []


def test_unknown_family_fails_listing_families(tmp_path: Path) -> None:
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters={"family": "flow-matching"})
    assert run_training(opt_ml) == EXIT_BAD_INPUT
    reason = opt_ml.failure_path.read_text()
    assert reason.startswith("family must be one of ") and "got 'flow-matching'" in reason
    assert "transformer" in reason and "rnn" in reason and reason.count("\n") == 1
    assert list(opt_ml.model_dir.iterdir()) == []


def test_failure_reason_is_capped_for_sagemaker(opt_ml: OptMl) -> None:
    opt_ml.write_failure("x" * 5000 + "\nsecond line")
    text = opt_ml.failure_path.read_text()
    assert len(text) == 1025 and text.endswith("\n")
