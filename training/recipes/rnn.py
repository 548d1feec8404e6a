"""Training recipe of the RNN family: melodies (the default: Bach chorales) or text.

The modality follows the data: no train channel or a MIDI folder trains a melody model
on note events; a text folder trains a text model with a byte-level BPE tokenizer, the
same one the Transformer uses.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from training.artifact import write_artifact
from training.config import TrainConfig
from training.data import tokens as token_data
from training.data.folder import scan_folder
from training.data.music import (
    MusicCorpus,
    augment,
    bundled_chorales,
    in_key_share,
    load_midi_folder,
    melody_tune,
    split_by_tune,
)
from training.data.text import load_text_folder
from training.models.formats.chat_template import CHAT_TEMPLATE_FILE, write_chat_template
from training.models.formats.midi import write_midi
from training.models.formats.notes import VOCABULARY_FILE, EventVocabulary, Note
from training.models.formats.tokenizer import TOKENIZER_FILE, TextTokenizer
from training.models.rnn import RNNConfig, SequenceRNN, continue_melody
from training.recipes.sequence import SequenceRecipe, tokenize_text

FAMILY = "rnn"
PRIMER_NOTES = 16  # notes of a held-out melody given as the primer when evaluating
KEY_EVAL_MELODIES = 16  # held-out melodies continued to measure in-key share


class Recipe(SequenceRecipe):
    def __init__(self, run: TrainConfig, model_cfg: RNNConfig, *, train_dir: Path | None,
                 validation_dir: Path | None, device: torch.device,
                 log: Callable[[str], None] = print) -> None:
        self.run, self.device = run, device
        scan = scan_folder(train_dir) if train_dir is not None else None
        self.modality = scan.modality if scan is not None else "music"
        self.vocabulary: EventVocabulary | None = None
        self.tokenizer: TextTokenizer | None = None
        self.held_out_melodies: list[list[Note]] = []

        if self.modality == "music":
            corpus = bundled_chorales() if scan is None else load_midi_folder(scan)
            log(("no train channel: using the " if scan is None else "train channel: ")
                + f"{corpus.source} ({len(corpus.melodies)} melodies)")
            train, val, self.held_out_by = self._music_splits(corpus, validation_dir)
            self.vocabulary = vocab = EventVocabulary()
            # <end> m1 <end> m2 ...: the end marker both closes and opens a melody.
            self.train_tokens = token_data.concat(
                [vocab.encode(m, close=False) for m in augment(train, run.seed)])
            self.val_tokens = token_data.concat([vocab.encode(m, close=False) for m in val])
            self.held_out_melodies = val
            vocab_size, source, files = self.vocabulary.size, corpus.source, corpus.files
            examples = len(train) + len(val)
        else:
            assert scan is not None
            corpus_text = load_text_folder(scan, text_key=run.text_key)
            log(f"train channel: {len(corpus_text.documents)} documents from "
                f"{corpus_text.files} files"
                + (f"; {corpus_text.note}" if corpus_text.note else ""))
            text = tokenize_text(corpus_text, run, validation_dir=validation_dir,
                                 vocab_size=model_cfg.vocab_size)
            self.use_text(text)
            vocab_size, source, files = (text.tokenizer.vocab_size, corpus_text.source,
                                         corpus_text.files)
            examples = text.documents

        self.model_cfg = RNNConfig(**{**asdict(model_cfg), "vocab_size": vocab_size})
        torch.manual_seed(run.seed)
        self.model: SequenceRNN = SequenceRNN(self.model_cfg).to(device)
        self._setup_training(run, vocab_size=vocab_size, window=self.model_cfg.seq_len,
                             window_key="seq_len")
        self.data_summary = {
            "source": source, "modality": self.modality, "files": files,
            "examples": examples, "train_tokens": len(self.train_tokens),
            "validation_tokens": len(self.val_tokens), "vocab_size": vocab_size,
        }
        if self.modality == "music":
            self.data_summary["held_out"] = self.held_out_by
        log(f"model: {self.model.num_parameters():,} parameters ({self.modality}); data: "
            f"{len(self.train_tokens):,} train / {len(self.val_tokens):,} held-out tokens; "
            f"baseline perplexity: trigram {self.baseline['ngram_perplexity']:.2f}, tuned "
            f"4-gram {self.baseline['ngram4_perplexity']:.2f}")

    def _music_splits(self, corpus: MusicCorpus, validation_dir: Path | None
                      ) -> tuple[list[list[Note]], list[list[Note]], str]:
        """Training and held-out melodies, and how they were split."""
        if validation_dir is not None:
            return (corpus.melodies, load_midi_folder(scan_folder(validation_dir)).melodies,
                    "the validation channel")
        return split_by_tune(corpus.melodies, melody_tune, self.run.val_fraction,
                             self.run.seed, corpus.source)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, loss, _ = self.model(x, y)
        assert loss is not None
        return loss

    def continuations(self) -> list[tuple[list[Note], list[Note]]]:
        assert self.vocabulary is not None
        self.model.eval()
        rng = random.Random(self.run.seed)
        melodies = [m for m in self.held_out_melodies if len(m) > PRIMER_NOTES]
        pairs = []
        for melody in rng.sample(melodies, min(KEY_EVAL_MELODIES, len(melodies))):
            primer = melody[:PRIMER_NOTES]
            generator = torch.Generator(device=self.device).manual_seed(self.run.seed)
            pairs.append((primer, continue_melody(
                self.model, self.vocabulary, primer, max_new_notes=32, temperature=1.0,
                top_k=None, generator=generator)))
        return pairs

    def export(self, directory: Path, *, config: dict[str, object],
               metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            extra: dict[str, Path] = {}
            if self.vocabulary is not None:
                pairs = self.continuations()
                if pairs:
                    metrics = {**metrics, "in_key_share": sum(
                        in_key_share(p, c) for p, c in pairs) / len(pairs)}
                for i, (primer, continuation) in enumerate(pairs[:4]):
                    path = Path(tmp) / f"sample-{i}.mid"
                    path.write_bytes(write_midi([*primer, *continuation]))
                    extra[f"samples/sample-{i}.mid"] = path
                vocab_path = Path(tmp) / VOCABULARY_FILE
                vocab_path.write_text(json.dumps(self.vocabulary.to_json()))
                extra[VOCABULARY_FILE] = vocab_path
            else:
                assert self.tokenizer is not None
                self.tokenizer.save(Path(tmp) / TOKENIZER_FILE)
                extra[TOKENIZER_FILE] = Path(tmp) / TOKENIZER_FILE
                extra[CHAT_TEMPLATE_FILE] = write_chat_template(Path(tmp))
            write_artifact(directory, family=FAMILY, modality=self.modality, config=config,
                           model_args=asdict(self.model_cfg),
                           tensors=self.model.state_dict(), data=self.data_summary,
                           metrics=metrics, extra_files=extra)
