"""The playground in a real headless Chromium, in front of the real server and a tiny
trained Transformer: type a prompt, watch it stream, regenerate, click Better, and find
the preference in the feedback store. And in front of a tiny MuseGAN and a tiny melody
RNN: upload a melody, get the tracks back (four; or the melody and its continuation) and
play them.

Needs Debian's `chromium` and `chromium-driver` (`bash .ci/setup-browser.sh`) and the
`selenium` package (the dev extra). Without them the test is skipped locally; in CI
(CI=true) it fails instead, since CI installs them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY
from tests.e2e.servers import GENKILN, free_port
from training.feedback import read_feedback
from training.local import emulate_opt_ml

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# Without these, Chromium keeps reaching for the (closed) network.
QUIET_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--window-size=1200,900"]


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium and chromedriver are not installed (bash .ci/setup-browser.sh)"
    return None


missing = _browser_missing()
if missing and os.environ.get("CI", "").lower() == "true":
    raise RuntimeError(f"the browser test must run in CI: {missing}")
pytestmark = pytest.mark.skipif(missing is not None, reason=missing or "")


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(0.05)


def start(command: list[str], env: dict[str, str], url: str
          ) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)

    def up() -> bool:
        assert process.poll() is None, f"{' '.join(command)} exited with {process.returncode}"
        try:
            import httpx

            return httpx.get(url, timeout=2).status_code == 200
        except Exception:
            return False

    wait_for(up, f"{url} to answer")
    return process


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, text_dir: Path) -> Path:
    """The tiny Transformer with room for a longer answer, so a stream has many tokens."""
    from training.entry import run_training

    opt_ml = emulate_opt_ml(tmp_path_factory.mktemp("opt_ml_playground"),
                            hyperparameters={**TINY, "block_size": "128",
                                             "val_fraction": "0.4"}, data=text_dir)
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    return opt_ml.model_dir


@contextmanager
def page_for(artifact: Path, store: Path, **env: str) -> Iterator[str]:
    """`genkiln serve` for ``artifact`` and `genkiln playground` in front of it: the URL."""
    env = {**os.environ, "GENKILN_FEEDBACK_DIR": str(store), "GENKILN_LOG_LEVEL": "WARNING",
           **env}
    server_port, page_port = free_port(), free_port()
    processes = []
    try:
        processes.append(start([*GENKILN, "serve", str(artifact), "--port", str(server_port)],
                               env, f"http://127.0.0.1:{server_port}/ping"))
        processes.append(start([*GENKILN, "playground", "--url",
                                f"http://127.0.0.1:{server_port}", "--port", str(page_port)],
                               env, f"http://127.0.0.1:{page_port}/"))
        yield f"http://127.0.0.1:{page_port}/"
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


@pytest.fixture(scope="module")
def playground(artifact: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[str, Path]]:
    store = tmp_path_factory.mktemp("store")
    with page_for(artifact, store) as url:
        yield url, store


@pytest.fixture(scope="module")
def compose_playground(musegan_artifact: Path, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[str]:
    """The playground in front of a MuseGAN trained for a few steps on Bach chorales."""
    with page_for(musegan_artifact, tmp_path_factory.mktemp("store_musegan"),
                  OMP_NUM_THREADS="1") as url:
        yield url


@pytest.fixture(scope="module")
def melody_playground(melody_rnn_artifact: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[str]:
    """The playground in front of a melody RNN trained for a few steps on scales."""
    with page_for(melody_rnn_artifact, tmp_path_factory.mktemp("store_rnn"),
                  OMP_NUM_THREADS="1") as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in QUIET_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_prompt_stream_regenerate_and_prefer_in_a_real_browser(
        playground: tuple[str, Path], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    url, store = playground
    browser.get(url)
    button = browser.find_element(By.ID, "generate")
    wait_for(button.is_enabled, "the page to load the model's description")
    assert "transformer" in browser.find_element(By.ID, "model").text
    browser.find_element(By.ID, "prompt").send_keys("Beautiful is better")

    def generations() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = browser.execute_script(
            "return window.playground.generations")
        return found

    # What the page showed after each event of the stream: it renders token by token.
    # (The page picks a fresh seed each time; an empty answer, or one of one or two
    # tokens, shows nothing, so the question is asked again, at most a few times, until
    # one is longer.)
    partial: set[int] = set()
    for attempt in range(1, 6):
        wait_for(button.is_enabled, "the page to be ready for a question")
        button.click()
        latest = wait_for(lambda n=attempt: generations()[n - 1:n], "a generation")[0]
        log = browser.execute_script("return window.playground.streamLog")
        text = browser.find_element(By.ID, "output").text
        assert text.strip() == latest["output"]["text"].strip()
        if not text.strip():
            continue  # the model ended its answer at once: nothing to watch stream
        lengths = [entry["length"] for entry in log]
        assert lengths == sorted(lengths), "the output only grows while it streams"
        partial = {entry["length"] for entry in log
                   if not entry["done"] and 0 < entry["length"] < lengths[-1]}
        if len(partial) >= 2:
            break
    assert len(partial) >= 2, f"the answer was not shown token by token: {log}"

    browser.find_element(By.ID, "regenerate").click()
    wait_for(lambda: len(generations()) == attempt + 1, "the regenerated output")
    first, second = generations()[-2:]
    assert first["seed"] != second["seed"]
    assert first["id"] != second["id"]

    better = browser.find_element(By.ID, "better")
    wait_for(better.is_enabled, "Better to be enabled")
    better.click()
    status = wait_for(lambda: "recorded" in (s := browser.find_element(By.ID, "status").text)
                      and s, "the feedback to be recorded")

    stored = read_feedback(store)
    [judgement] = stored.feedback
    assert status == f"recorded {judgement.feedback_id}"
    assert (judgement.chosen, judgement.rejected) == (second["id"], first["id"])
    [(chosen, rejected)] = stored.preferences()
    assert chosen.output["text"] == second["output"]["text"]
    assert rejected.inputs == "Beautiful is better"
    assert rejected.parameters["seed"] == first["seed"]


def test_the_page_reads_and_plays_midi_answers(playground: tuple[str, Path],
                                               browser: Any) -> None:
    """What a music family returns (a MIDI file) becomes notes in seconds for the synth."""
    import base64

    from training.models.formats.midi import write_midi
    from training.models.formats.notes import Note

    url, _ = playground
    browser.get(url)
    midi = write_midi([Note(60, 1.0), Note(None, 0.5), Note(64, 0.5), Note(67, 2.0)],
                      tempo_bpm=120, program=0)
    song = browser.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));"
        "const song = GenkilnMidi.parse(bytes);"
        "GenkilnMidi.play(song.notes).stop();"  # schedules WebAudio voices, then stops
        "return song;", base64.b64encode(midi).decode())
    # 120 beats a minute: a quarter note lasts half a second.
    assert [(n["pitch"], n["start"], n["end"]) for n in song["notes"]] == [
        (60, 0.0, 0.5), (64, 0.75, 1.0), (67, 1.0, 2.0)]
    assert song["duration"] == 2.0


TUNE = [72, 71, 69, 67, 65, 64, 62, 60, 62, 64, 65, 67, 69, 71, 72, 72]


def upload_generate_and_play(browser: Any, url: str, folder: Path, family: str,
                             changes: dict[str, Any]) -> list[tuple[str, int]]:
    """Open the page, upload TUNE as a MIDI file through the file input, press Generate
    (the page's request template changed by ``changes``), check that the page shows the
    tracks that came back, press Play and wait for the sound to start: the tracks' names
    and note counts."""
    import json

    from selenium.webdriver.common.by import By

    from training.models.formats.midi import read_midi, write_midi
    from training.models.formats.notes import Note

    melody = folder / "tune.mid"
    melody.write_bytes(write_midi([Note(p, 0.5) for p in TUNE], tempo_bpm=120))
    browser.get(url)
    button = browser.find_element(By.ID, "generate")
    wait_for(button.is_enabled, "the page to load the model's description")
    assert family in browser.find_element(By.ID, "model").text
    upload = browser.find_element(By.ID, "midi-file")
    assert upload.is_displayed(), "the page offers a melody upload for this model"
    assert not browser.find_element(By.ID, "prompt").is_displayed()
    upload.send_keys(str(melody))
    wait_for(lambda: browser.find_element(By.ID, "status").text == "tune.mid: 16 notes",
             "the page to read the uploaded melody")
    template = browser.find_element(By.ID, "template")
    request = json.loads(template.get_attribute("value"))
    assert request["kind"] == "accompany"
    browser.execute_script("arguments[0].value = arguments[1]", template,
                           json.dumps({**request, **changes}))
    button.click()

    [generation] = wait_for(lambda: browser.execute_script(
        "return window.playground.generations"), "the answer")
    status = browser.find_element(By.ID, "status").text
    assert status == "done", status
    song = read_midi(base64.b64decode(generation["output"]["midi_base64"]))
    assert [pitch for pitch, _, _ in song.parts[0].notes] == TUNE  # the melody is kept
    tracks = [(part.name, len(part.notes)) for part in song.parts]

    shown = browser.find_element(By.ID, "midi-output")
    assert shown.is_displayed() and shown.get_attribute("data-tracks") == str(len(tracks))
    total = sum(count for _, count in tracks)
    listed = ", ".join(f"{name} ({count})" for name, count in tracks)
    assert browser.find_element(By.ID, "output").text.startswith(
        f"{len(tracks)} tracks: {listed}; {total} notes")

    browser.find_element(By.ID, "play-output").click()
    played = wait_for(lambda: browser.execute_script("return window.playground.played"),
                      "the answer to be scheduled")
    assert played == {"tracks": len(tracks), "notes": total, "voices": total}
    wait_for(lambda: browser.execute_script("return window.playground.audio.playing()"),
             "the audio clock to reach the first note", timeout=30)
    assert browser.find_element(By.ID, "stop-audio").is_displayed()
    browser.find_element(By.ID, "stop-audio").click()
    return tracks


def test_upload_a_melody_and_play_the_four_track_arrangement(
        compose_playground: str, browser: Any, tmp_path: Path) -> None:
    """The page asks the musegan server the way its /info hints say: the melody goes up as
    a MIDI file through the file input, four tracks come back, and Play schedules them."""
    # A model trained for a few steps is unsure of every pitch: a low threshold lets each
    # voice sing, so the arrangement has notes on all four tracks to play.
    tracks = upload_generate_and_play(browser, compose_playground, tmp_path, "musegan",
                                      {"threshold": 0.05})
    assert [name for name, _ in tracks] == ["Melody", "Alto", "Tenor", "Bass"]
    assert all(count > 0 for _, count in tracks), tracks


def test_upload_a_melody_and_play_the_rnn_continuation(
        melody_playground: str, browser: Any, tmp_path: Path) -> None:
    """The melody rnn, offered the same way: the melody and the model's answer to it."""
    tracks = upload_generate_and_play(browser, melody_playground, tmp_path, "rnn",
                                      {"bars": 2})
    assert [name for name, _ in tracks] == ["Melody", "Continuation"]
    assert tracks[1][1] > 0, tracks


@pytest.fixture(scope="module")
def racer_playground(racer_artifact: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[str]:
    """The playground in front of a racer trained for a few updates."""
    with page_for(racer_artifact, tmp_path_factory.mktemp("store_racer"),
                  OMP_NUM_THREADS="1") as url:
        yield url


def test_pick_or_upload_a_track_and_watch_the_car_lap_it(racer_playground: str, browser: Any,
                                                         tmp_path: Path) -> None:
    """The racer's page offers its tracks and an upload; a lap comes back and is animated
    on the canvas at the simulator's rate."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from training.models.racing.tracks import bundled_tracks

    browser.get(racer_playground)
    button = browser.find_element(By.ID, "generate")
    wait_for(button.is_enabled, "the page to load the model's description")
    assert "racer" in browser.find_element(By.ID, "model").text
    assert not browser.find_element(By.ID, "prompt").is_displayed()
    picker = Select(browser.find_element(By.ID, "track"))
    assert {o.text for o in picker.options} == {"oval", "sbends", "hairpins", "heldout"}
    picker.select_by_visible_text("heldout")
    button.click()
    [generation] = wait_for(lambda: browser.execute_script(
        "return window.playground.generations"), "the lap")
    assert browser.find_element(By.ID, "status").text == "done"
    assert generation["id"].startswith("gen-")
    lap = browser.execute_script("return window.playground.lap.answer")
    assert lap["track"]["name"] == "heldout" and lap["kind"] == "lap"
    assert browser.find_element(By.ID, "lap-output").is_displayed()
    assert browser.find_element(By.ID, "output").text.startswith("heldout (22.0 m), policy: ")
    steps = browser.execute_script("return window.playground.lap.steps")
    assert steps == len(lap["trajectory"]["x"]) > 15
    # The car moves at 15 steps a second: a second in, it has driven about 15.
    wait_for(lambda: browser.execute_script("return window.playground.lap.shown") >= 10,
             "the animation to drive the car along", timeout=10)

    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(bundled_tracks()["oval"].to_json() | {"name": "mine"}))
    browser.find_element(By.ID, "track-file").send_keys(str(mine))
    wait_for(lambda: browser.find_element(By.ID, "status").text.startswith("mine.json: "),
             "the page to read the uploaded track")
    button.click()
    wait_for(lambda: len(browser.execute_script("return window.playground.generations")) == 2,
             "the lap of the uploaded track")
    lap = browser.execute_script("return window.playground.lap.answer")
    assert lap["track"]["name"] == "mine"


@pytest.fixture(scope="module")
def diffusion_playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The playground in front of a diffusion model trained for a few steps on a tiny
    captioned folder."""
    from tests.conftest import DIFFUSION_TINY
    from tests.unit.test_diffusion import captioned_folder
    from training.entry import run_training

    root = tmp_path_factory.mktemp("diffusion_playground")
    opt_ml = emulate_opt_ml(root / "opt_ml", hyperparameters={**DIFFUSION_TINY, "steps": "10"},
                            data=captioned_folder(root / "data"))
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    store = root / "store"
    with page_for(opt_ml.model_dir, store, OMP_NUM_THREADS="1") as url:
        yield url, store


def test_type_a_prompt_watch_it_develop_regenerate_and_prefer(
        diffusion_playground: tuple[str, Path], browser: Any) -> None:
    """A typed prompt streams previews, then its four pictures; Regenerate draws others,
    and Better records the preference with both generations' prompt and pictures."""
    from selenium.webdriver.common.by import By

    url, store = diffusion_playground
    browser.get(url)
    button = browser.find_element(By.ID, "generate")
    wait_for(button.is_enabled, "the page to load the model's description")
    assert "diffusion" in browser.find_element(By.ID, "model").text
    browser.find_element(By.ID, "prompt").send_keys("a red square")
    button.click()

    def generations() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = browser.execute_script(
            "return window.playground.generations")
        return found

    [first] = wait_for(generations, "the pictures")
    log = browser.execute_script("return window.playground.streamLog")
    assert [e["preview"] for e in log if e["preview"] is not None] == [5]  # 10 steps
    pictures = browser.find_elements(By.CSS_SELECTOR, "#images img")
    assert len(pictures) == 4 and all(p.get_attribute("src").startswith("data:image/png")
                                      for p in pictures)
    assert len(first["output"]["images"]) == 4

    browser.find_element(By.ID, "regenerate").click()
    wait_for(lambda: len(generations()) == 2, "the regenerated pictures")
    second = generations()[1]
    assert second["seed"] != first["seed"] and second["output"] != first["output"]
    better = browser.find_element(By.ID, "better")
    wait_for(better.is_enabled, "Better to be enabled")
    better.click()
    wait_for(lambda: "recorded" in browser.find_element(By.ID, "status").text,
             "the feedback to be recorded")
    [(chosen, rejected)] = read_feedback(store).preferences()
    assert chosen.generation_id == second["id"] and rejected.generation_id == first["id"]
    assert rejected.inputs == {"prompt": "a red square"}
    assert len(chosen.output["images"]) == 4
