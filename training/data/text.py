"""Text data: the bundled corpus (Python's own docstrings) and user folders of .txt/.jsonl."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data.errors import DataError
from training.data.folder import FolderScan
from training.settings import cache_dir

#: Standard-library folders left out of the bundled corpus: test suites and GUI demos
#: are code-heavy and would teach the model assertion messages rather than prose.
_SKIPPED_PARTS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "tkinter",
                  "turtledemo", "ensurepip", "pydoc_data"}
_MIN_DOCSTRING_CHARS = 40


@dataclass(frozen=True)
class TextCorpus:
    """Documents to train on, and where they came from."""

    documents: list[str]
    source: str
    files: int
    #: how the documents were cut from the files, when not one a file or line
    note: str = ""

    @property
    def characters(self) -> int:
        return sum(len(d) for d in self.documents)


def _extract_docstrings(stdlib: Path) -> tuple[list[str], int]:
    documents: list[str] = []
    files = 0
    for path in sorted(stdlib.rglob("*.py")):
        if _SKIPPED_PARTS.intersection(path.relative_to(stdlib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a handful of stdlib files are templates or Python-2 era fixtures
        files += 1
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= _MIN_DOCSTRING_CHARS:
                    documents.append(doc)
    return documents, files


def bundled_corpus() -> TextCorpus:
    """The docstrings of this Python's standard library: real English prose, no download.

    Extraction parses ~600 modules (seconds), so the result is cached per Python build.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    version = ".".join(map(str, sys.version_info[:3]))
    source = f"bundled: docstrings of the Python {version} standard library"
    key = hashlib.sha256(f"{stdlib}|{sys.version}".encode()).hexdigest()[:16]
    cache = cache_dir() / f"stdlib-docstrings-{key}.json"
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        return TextCorpus(documents=cached["documents"], source=source, files=cached["files"])
    except (OSError, ValueError, KeyError):
        pass
    documents, files = _extract_docstrings(stdlib)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"files": files, "documents": documents}), encoding="utf-8")
        tmp.replace(cache)
    except OSError:
        pass  # a read-only home (some containers) just means no cache
    return TextCorpus(documents=documents, source=source, files=files)


def read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
            f"re-save it as UTF-8 or remove it"
        ) from exc


def jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each JSON object of a .jsonl file with its line number (blank lines skipped); a
    line that is not a JSON object is refused naming the file and line."""
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number} is not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number} is not a JSON object")
        yield number, record


def _read_jsonl(path: Path, text_key: str) -> list[str]:
    documents = []
    for number, record in jsonl_records(path):
        if not isinstance(record.get(text_key), str):
            raise DataError(
                f'{path}:{number} needs a string field "{text_key}" '
                f"(set the hyperparameter text_key to use another field)"
            )
        documents.append(record[text_key])
    return documents


def load_text_folder(scan: FolderScan, *, text_key: str = "text") -> TextCorpus:
    """Documents from a scanned text folder: each .txt file is one, each .jsonl line is one.

    A folder of one document (one big text file: the commonest corpus) is cut into its
    paragraphs (blank-line separated), or its lines where it has no blank lines, so that
    a share of them can be held out for validation, as nanoGPT holds out the end of its
    one file."""
    if scan.modality != "text":
        raise DataError(
            f"{scan.root} holds {scan.modality} files, but this family trains on text "
            f"(.txt or .jsonl)"
        )
    documents: list[str] = []
    for path in scan.files:
        if path.suffix.lower() == ".jsonl":
            documents.extend(_read_jsonl(path, text_key))
        else:
            documents.append(read_utf8(path))
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise DataError(f"{scan.root} holds only empty text files")
    if len(documents) == 1:
        return _cut(documents[0], source=str(scan.root), files=len(scan.files))
    return TextCorpus(documents=documents, source=str(scan.root), files=len(scan.files))


def _cut(text: str, *, source: str, files: int) -> TextCorpus:
    """One document as its paragraphs, else its lines (kept whole where it has neither)."""
    for unit, pieces in (("paragraphs", re.split(r"\n[ \t]*\n", text)),
                         ("lines", text.splitlines())):
        kept = [p.strip("\n") for p in pieces if p.strip()]
        if len(kept) >= 2:
            return TextCorpus(documents=kept, source=source, files=files,
                              note=f"one document, cut into {len(kept):,} {unit} (a share "
                                   f"of them is held out)")
    return TextCorpus(documents=[text], source=source, files=files)
