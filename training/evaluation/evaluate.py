"""`genkiln evaluate`: score a model on held-out data; write evaluation.json and a report.

For an artifact (a folder or model.tar.gz) the family's own training metrics are measured
again on the held-out split the run used (see `training.rebuild`), beside their baselines,
with a spread where one is measured (over evaluation windows for sequence models, over
sampling seeds for generated images). For a live endpoint only what its answers show can
be measured: a text endpoint returns text, not the logits a perplexity needs, so it is
scored on its generations (diversity, length); an image endpoint's samples get the
Fréchet distance to the held-out images.

evaluation.json has the shape SageMaker's model quality metrics use, which the model
registry shows, and says whether the model meets its registration criterion (the
family's own, or `--register-if`), which the pipeline's condition step reads with JsonGet
(`registration.passed`):

    {"metrics": {"val_loss": {"value": 3.2, "standard_deviation": 0.1}, ...},
     "family": "transformer", "baselines": {"val_perplexity": ["ngram_perplexity", ...]},
     "registration": {"criterion": "val_loss<=5.0", "value": 3.2, "passed": true}, ...}
"""

from __future__ import annotations

import base64
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.artifact import load_artifact
from training.data import tokens as token_data
from training.evaluation.prompting import prompt_metrics
from training.evaluation.racing import endpoint_laps, lap_metrics
from training.evaluation.report import render_report
from training.evaluation.results import EVALUATION_FILE, REPORT_FILE, Evaluation
from training.models.formats.png import decode_png, encode_png, grid
from training.rebuild import rebuild
from training.recipes.diffusion import Recipe as DiffusionRecipe
from training.recipes.image import ImageRecipe
from training.recipes.racer import Recipe as RacerRecipe
from training.recipes.sequence import SequenceRecipe

#: Sampling seeds a generated-image metric is averaged over (its spread is their std).
IMAGE_SEEDS = 3
#: Held-out prompts (text) answered when scoring generations.
TEXT_SAMPLES = 8

def write_evaluation(evaluation: Evaluation, output_dir: Path) -> tuple[Path, Path]:
    """Write evaluation.json and report.html into ``output_dir``; return both paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / EVALUATION_FILE
    json_path.write_text(json.dumps(evaluation.to_json(), indent=2) + "\n", encoding="utf-8")
    report_path = output_dir / REPORT_FILE
    report_path.write_text(render_report(evaluation), encoding="utf-8")
    return json_path, report_path


# --- an artifact ----------------------------------------------------------------------
def evaluate_artifact(path: Path, *, data: Path | None = None,
                      validation: Path | None = None, device: str = "cpu",
                      log: Callable[[str], None] = print) -> Evaluation:
    artifact = load_artifact(path)
    rebuilt = rebuild(artifact, train_dir=data, validation_dir=validation,
                      device=torch.device(device), log=log)
    recipe = rebuilt.recipe
    out = Evaluation(family=artifact.family, measured=str(path), modality=artifact.modality,
                     history=list(artifact.manifest.get("history", [])),
                     lineage=artifact.manifest.get("lineage"))
    if isinstance(recipe, SequenceRecipe):
        _sequence_metrics(recipe, out)
    elif isinstance(recipe, ImageRecipe):
        _image_metrics(recipe, out)
    elif isinstance(recipe, RacerRecipe):
        lap_metrics(recipe, out)
    elif isinstance(recipe, DiffusionRecipe):
        prompt_metrics(recipe, out)
    else:
        _arrangement_metrics(recipe, out)
    if not isinstance(recipe, RacerRecipe):
        out.notes.append(f"held-out split rebuilt from seed {rebuilt.run.seed} and "
                         f"val_fraction {rebuilt.run.val_fraction} of "
                         f"{artifact.manifest['data'].get('source')}")
    return out


def _sequence_metrics(recipe: SequenceRecipe, out: Evaluation) -> None:
    recipe.model.eval()
    run = recipe.run
    # The held-out windows training scored (strided, `token_data.held_out_batches`), so
    # the loss is the one it logged; the spread is that of the windows' losses.
    scored = token_data.held_out_batches(
        recipe.loss, recipe.val_tokens, batches=run.eval_batches * run.batch_size,
        batch_size=1, length=recipe.window, device=recipe.device)
    loss = sum(mean * n for mean, n in scored) / max(1, sum(n for _, n in scored))
    std = statistics.stdev(m for m, _ in scored) if len(scored) > 1 else None
    out.put("val_loss", loss, std)
    out.put("val_perplexity", math.exp(min(loss, 50.0)))
    if recipe.val_characters:
        out.put("val_bits_per_char", recipe.bits_per_char(loss))
    for name, value in recipe.baseline.items():
        out.put(name, value)
    if recipe.modality == "music":
        pairs = recipe.continuations()
        if pairs:
            from training.data.music import in_key_share

            shares = [in_key_share(p, c) for p, c in pairs]
            out.put("in_key_share", sum(shares) / len(shares),
                    statistics.stdev(shares) if len(shares) > 1 else None)
        out.melodies = pairs[:4]
    else:
        out.texts = _text_samples(recipe)
        if out.texts:
            for name, value in generation_metrics([t for _, t in out.texts]).items():
                out.put(name, value)


def held_out_prompts(recipe: SequenceRecipe, n: int, words: int = 3) -> list[str]:
    """The first words of ``n`` held-out documents: prompts the model has not seen."""
    assert recipe.tokenizer is not None
    text = recipe.tokenizer.decode(recipe.val_tokens[:20000].tolist())
    documents = [d.split() for d in text.split("<|endoftext|>")]
    prompts = [" ".join(d[:words]) for d in documents if len(d) > words]
    return prompts[:n]


def _text_samples(recipe: SequenceRecipe) -> list[tuple[str, str]]:
    assert recipe.tokenizer is not None
    samples = []
    limit = recipe.model.context_limit
    for i, prompt in enumerate(held_out_prompts(recipe, TEXT_SAMPLES)):
        ids = recipe.tokenizer.encode(prompt)[-limit // 2:]
        generator = torch.Generator(device=recipe.device).manual_seed(recipe.run.seed + i)
        new = [t.id for t in recipe.model.generate(
            ids, max_new_tokens=min(40, limit - len(ids)), temperature=1.0,
            generator=generator)]
        samples.append((prompt, recipe.tokenizer.decode(new)))
    return samples


def generation_metrics(texts: Sequence[str]) -> dict[str, float]:
    """What a set of generations shows by itself: distinct-1/2 (Li et al. 2016, the share of
    unique words and word pairs: low for repetitive text) and mean length in words."""
    words = [t.split() for t in texts]
    unigrams = [w for ws in words for w in ws]
    bigrams = [pair for ws in words for pair in pairwise(ws)]
    return {"sample_distinct_1": len(set(unigrams)) / max(1, len(unigrams)),
            "sample_distinct_2": len(set(bigrams)) / max(1, len(bigrams)),
            "sample_mean_words": len(unigrams) / max(1, len(texts))}


def _arrangement_metrics(recipe: Any, out: Evaluation) -> None:
    """MuseGAN's: its accompaniment of the held-out melodies, on MuseGAN's music metrics,
    beside Bach's own and the untrained generator's."""
    for name, value in {**recipe.evaluate(), **recipe.references}.items():
        out.put(name, value)


def _image_metrics(recipe: ImageRecipe, out: Evaluation) -> None:
    for module in recipe.modules():
        module.eval()
    base = recipe.run
    runs = []
    seeds = IMAGE_SEEDS if recipe.sampled_metrics else 1
    for k in range(seeds):  # the first seed is the one training's log used
        recipe.run = replace(base, seed=base.seed + 1000 * k)
        runs.append(recipe.evaluate())
    recipe.run = base
    for name in runs[0]:
        values = [r[name] for r in runs]
        out.put(name, sum(values) / len(values),
                statistics.stdev(values) if len(values) > 1 else None)
    for name, value in recipe.references.items():
        out.put(name, value)
    samples = recipe.samples()
    out.put("sample_mean_ink", float(np.mean(samples)))
    scale = max(1, 64 // recipe.spec.size)
    out.grid_png = encode_png(grid(samples), scale=scale)
    if seeds > 1:
        out.notes.append(f"generated-image metrics: mean and standard deviation over "
                         f"{seeds} sampling seeds")


# --- a live endpoint ------------------------------------------------------------------
def evaluate_endpoint(client: Any, *, family: str, measured: str, data: Path | None = None,
                      prompts: Sequence[str] = (), samples: int = 64,
                      log: Callable[[str], None] = print) -> Evaluation:
    """Score what an endpoint returns. Text: its generations for ``prompts`` (held-out
    text is not needed); images: Fréchet distance of its samples to the held-out images
    of ``data`` (the bundled digits when None)."""
    from training.models import get_family

    modality = get_family(family).modalities[0]
    out = Evaluation(family=family, measured=measured, modality=modality)
    if modality == "text":
        prompts = list(prompts) or ["The", "Return a", "This is", "If the"]
        texts = []
        for i, prompt in enumerate(prompts):
            answer = client.generate(prompt, max_new_tokens=40, seed=i + 1, temperature=1.0)
            texts.append((prompt, answer[0]["generated_text"]))
        for name, value in generation_metrics([t for _, t in texts]).items():
            out.put(name, value)
        out.texts = texts
        out.notes.append("endpoint: scored on its generations only; held-out perplexity "
                         "needs the model's logits, which an endpoint does not return "
                         "(evaluate the artifact for it)")
        return out
    if modality == "track":
        endpoint_laps(client, out)
        return out
    if family not in ("gan", "vae", "rbm"):
        raise ValueError(f"an endpoint of family {family} does not generate images to score; "
                         f"evaluate its artifact instead")
    from training.evaluation.images import FeatureSpace, frechet_distance
    from training.recipes.image import load_images

    train, val = load_images(data, None, size=8 if data is None else _endpoint_size(client),
                             val_fraction=0.2, seed=1337, log=log)
    features = FeatureSpace(torch.from_numpy(train.images),
                            None if train.labels is None else torch.from_numpy(train.labels),
                            len(train.classes), seed=1337)
    answer = client.invoke({"kind": "sample", "n": samples, "seed": 1})
    images = np.stack([decode_png(base64.b64decode(i)) for i in answer["images"]])
    generated = torch.from_numpy(images)
    out.put("val_fid", frechet_distance(features.features(generated),
                                        features.features(torch.from_numpy(val.images))))
    out.put("val_fid_floor", frechet_distance(features.features(torch.from_numpy(val.images)),
                                              features.features(torch.from_numpy(train.images))))
    out.put("sample_mean_ink", float(images.mean()))
    out.grid_png = encode_png(grid(images[:64]), scale=8)
    out.notes.append(f"endpoint: {samples} samples (seed 1) scored against a held-out split "
                     f"of the data given; the model's own split is not known to an endpoint")
    return out


def _endpoint_size(client: Any) -> int:
    answer = client.invoke({"kind": "sample", "n": 1, "seed": 1})
    return int(decode_png(base64.b64decode(answer["images"][0])).shape[-1])
