import json
from pathlib import Path

import pytest

from genkiln.cli import main
from training.data.errors import DataError
from training.data.folder import scan_folder
from training.data.inspect import summarize
from training.data.text import bundled_corpus, load_text_folder


def test_text_folder_reads_txt_and_jsonl(text_dir: Path) -> None:
    corpus = load_text_folder(scan_folder(text_dir))
    assert corpus.files == len(list(text_dir.iterdir()))
    assert any(d.startswith("BEAUTIFUL IS BETTER") for d in corpus.documents)
    assert any("\nBeautiful is better" in d for d in corpus.documents)


def test_mixed_folder_is_refused_naming_the_odd_files(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text("hello")
    (tmp_path / "cat.png").write_bytes(b"\x89PNG")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "song.mid").write_bytes(b"MThd")
    with pytest.raises(DataError) as info:
        scan_folder(tmp_path)
    message = str(info.value)
    assert "mixes modalities (3 text, 1 image, 1 music files)" in message
    assert "cat.png" in message and "sub/song.mid" in message and "doc0.txt" not in message


def test_unsupported_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hi")
    (tmp_path / "table.csv").write_text("a,b")
    (tmp_path / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored
    with pytest.raises(DataError, match=r"cannot read: table\.csv\. Remove them"):
        scan_folder(tmp_path)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no files"):
        scan_folder(tmp_path)


def test_non_utf8_text_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt is not UTF-8 text"):
        load_text_folder(scan_folder(tmp_path))


def test_bad_jsonl_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r'd\.jsonl:2 needs a string field "text"'):
        load_text_folder(scan_folder(tmp_path))
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2 is not valid JSON"):
        load_text_folder(scan_folder(tmp_path))


@pytest.mark.slow
def test_bundled_corpus_is_real_prose() -> None:
    corpus = bundled_corpus()
    assert corpus.files > 100 and len(corpus.documents) > 1000
    assert corpus.characters > 500_000
    assert "standard library" in corpus.source
    assert bundled_corpus().documents == corpus.documents  # cached copy is identical


def test_inspect_summarises_text(text_dir: Path) -> None:
    summary = summarize(text_dir, vocab_size=300)
    assert summary["modality"] == "text"
    assert set(summary["families"].split(", ")) == {"transformer", "rnn"}
    assert summary["examples"] == len(load_text_folder(scan_folder(text_dir)).documents)
    assert 0 < summary["tokens"] < summary["characters"]


def test_inspect_command(text_dir: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "inspect", str(text_dir), "--json", "--vocab-size", "300"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == len(list(text_dir.iterdir()))
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8")
    assert main(["data", "inspect", str(tmp_path)]) == 2
    assert "mixes modalities" in capsys.readouterr().err


def test_one_big_text_file_is_cut_into_paragraphs_to_hold_some_out(tmp_path: Path) -> None:
    (tmp_path / "book.txt").write_text("First paragraph,\nstill first.\n\nSecond one.\n"
                                       "  \nThird.\n", encoding="utf-8")
    corpus = load_text_folder(scan_folder(tmp_path))
    assert corpus.documents == ["First paragraph,\nstill first.", "Second one.", "Third."]
    assert corpus.note.startswith("one document, cut into 3 paragraphs")


def test_one_file_without_blank_lines_is_cut_into_lines(tmp_path: Path) -> None:
    (tmp_path / "lines.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    corpus = load_text_folder(scan_folder(tmp_path))
    assert corpus.documents == ["one", "two", "three"] and "3 lines" in corpus.note


def test_several_files_stay_one_document_each(text_dir: Path) -> None:
    corpus = load_text_folder(scan_folder(text_dir))
    assert corpus.note == "" and len(corpus.documents) >= 2


def test_a_single_line_still_asks_for_more_data(tmp_path: Path) -> None:
    from training.config import TrainConfig
    from training.recipes.sequence import tokenize_text

    (tmp_path / "tiny.txt").write_text("just one line", encoding="utf-8")
    corpus = load_text_folder(scan_folder(tmp_path))
    with pytest.raises(DataError, match="a held-out split needs at least two"):
        tokenize_text(corpus, TrainConfig(), validation_dir=None, vocab_size=300)
