"""Each runtime reads its environment in one module, once, with each default written once,
and a bad value stops start-up naming the variable and what to set."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from inference import settings as serving
from inference.settings import DEFAULTS, NAMES, ServingSettings
from training.settings import JobSettings, cache_dir

ROOT = Path(__file__).resolve().parents[2]


def environment_reads(package: str) -> list[str]:
    """Files of ``package`` that touch os.environ or call os.getenv."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                found.append(str(path.relative_to(ROOT)))
                break
    return found


def test_serving_reads_its_environment_in_one_module() -> None:
    assert environment_reads("inference") == ["inference/settings.py"]


def test_training_reads_its_environment_in_one_module() -> None:
    # distributed.py writes MASTER_ADDR and the ranks for torch.distributed; it reads none.
    assert environment_reads("training") == ["training/distributed.py", "training/settings.py"]
    source = (ROOT / "training/distributed.py").read_text()
    assert "os.environ.get" not in source and "os.environ[" not in source


def test_an_empty_environment_gives_the_defaults() -> None:
    assert ServingSettings.from_env({}) == DEFAULTS == ServingSettings()
    assert JobSettings.from_env({}) == JobSettings()


def test_every_serving_variable_reaches_its_setting(tmp_path: Path) -> None:
    given = {
        "GENKILN_MAX_CONCURRENT_REQUESTS": "7", "GENKILN_MAX_BATCH_SIZE": "4",
        "GENKILN_BATCHING": "off", "GENKILN_BATCH_WAIT_MS": "2.5",
        "GENKILN_REQUEST_TIMEOUT_SECONDS": "20", "GENKILN_SERVING_PRECISION": "BF16",
        "GENKILN_MAX_PROMPTS_PER_REQUEST": "3", "GENKILN_SHUTDOWN_GRACE_SECONDS": "9",
        "GENKILN_MAX_REQUEST_BYTES": "1073741824", "GENKILN_NUM_THREADS": "2",
        "GENKILN_MODEL_ID": " mine ", "SAGEMAKER_BIND_TO_PORT": "9000",
        "GENKILN_LOG_LEVEL": "WARNING", "GENKILN_FEEDBACK": "off",
        "GENKILN_FEEDBACK_URI": "s3://b/p/", "GENKILN_FEEDBACK_KMS_KEY_ID": "alias/k",
        "GENKILN_FEEDBACK_DIR": str(tmp_path)}
    assert set(given) == NAMES  # the test covers every variable the server reads
    s = ServingSettings.from_env(given)
    assert (s.max_concurrent_requests, s.max_batch_size, s.batching, s.batch_wait_ms) == \
        (7, 4, False, 2.5)
    assert (s.request_timeout_s, s.precision, s.max_prompts, s.shutdown_grace_s) == \
        (20.0, "bf16", 3, 9.0)
    assert (s.max_request_bytes, s.num_threads, s.model_id, s.port, s.log_level) == \
        (2**30, 2, "mine", 9000, "warning")
    assert (s.feedback.enabled, s.feedback.uri, s.feedback.kms_key_id,
            s.feedback.directory) == (False, "s3://b/p/", "alias/k", str(tmp_path))
    changed = {f.name for f in fields(s) if getattr(s, f.name) != getattr(DEFAULTS, f.name)}
    assert changed == {f.name for f in fields(s)}, "a variable was read but changed nothing"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("GENKILN_MAX_BATCH_SIZE", "many", "GENKILN_MAX_BATCH_SIZE='many' is not a number"),
    ("GENKILN_MAX_BATCH_SIZE", "2.5", "set it to a whole number from 1 to 1024"),
    ("GENKILN_REQUEST_TIMEOUT_SECONDS", "0", "GENKILN_REQUEST_TIMEOUT_SECONDS=0 is out of"),
    ("GENKILN_BATCHING", "maybe", "GENKILN_BATCHING='maybe': set it to on or off"),
    ("GENKILN_SERVING_PRECISION", "fp8", "set it to one of fp32, bf16, int8"),
    ("SAGEMAKER_BIND_TO_PORT", "70000", "SAGEMAKER_BIND_TO_PORT=70000 is out of range"),
    ("GENKILN_FEEDBACK", "sometimes", "GENKILN_FEEDBACK='sometimes': set it to on or off"),
])
def test_a_bad_serving_value_names_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(".", r"\.")):
        ServingSettings.from_env({name: value})


def test_the_job_environment_moves_the_tree_and_its_channels(tmp_path: Path) -> None:
    s = JobSettings.from_env({"GENKILN_OPT_ML": str(tmp_path), "SM_MODEL_DIR": "/m",
                              "SM_OUTPUT_DATA_DIR": "/o", "SM_CHANNEL_TRAIN": "/data/train",
                              "SM_CHANNEL_VALIDATION": "", "SM_NUM_GPUS": "8",
                              "MASTER_PORT": "7777"})
    assert (s.opt_ml, s.model_dir, s.output_data_dir) == (tmp_path, Path("/m"), Path("/o"))
    assert s.channels == {"train": Path("/data/train")}
    assert (s.num_gpus, s.master_port) == (8, 7777)
    with pytest.raises(ValueError, match="SM_NUM_GPUS='eight': set it to a whole number"):
        JobSettings.from_env({"SM_NUM_GPUS": "eight"})


def test_the_cache_follows_genkiln_then_xdg(tmp_path: Path) -> None:
    assert cache_dir({"GENKILN_CACHE_DIR": str(tmp_path)}) == tmp_path / "genkiln"
    assert cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/genkiln")
    assert cache_dir({}) == Path.home() / ".cache" / "genkiln"


def test_genkiln_deploy_refuses_a_variable_the_server_would_ignore() -> None:
    from genkiln.deploy import _parse_env

    assert _parse_env(["GENKILN_MAX_BATCH_SIZE=8", "OTHER=x"]) == {
        "GENKILN_MAX_BATCH_SIZE": "8", "OTHER": "x"}
    with pytest.raises(ValueError, match="GENKILN_MAX_BATCHSIZE: the server reads no such"):
        _parse_env(["GENKILN_MAX_BATCHSIZE=8"])
    with pytest.raises(ValueError, match="GENKILN_BATCHING='sure'"):
        _parse_env(["GENKILN_BATCHING=sure"])
    assert serving.GENKILN_FEEDBACK_URI in NAMES
