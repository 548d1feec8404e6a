"""Refinement: improve a trained model from people's judgements of its generations.

A training job with a `model` channel (the previous artifact: its folder or model.tar.gz)
and a `feedback` channel (the store's layout: generations/*.json, feedback/*.json; see
`training.feedback`) continues training the previous model on what people preferred:

- Transformer and RNN (text and melodies): Direct Preference Optimization (Rafailov et
  al. 2023) on the chosen/rejected pairs, the previous artifact frozen as the reference
  policy: loss = -log σ(β [(log π(y_c|x) - log π_ref(y_c|x)) - (log π(y_r|x) -
  log π_ref(y_r|x))]). Without pairs, fine-tuning on the well-rated outputs
  (rating >= min_rating; a preference's chosen output counts as well rated).
- GAN and VAE (generators of images): a small reward model is fit to the ratings (the
  judged PNGs themselves, so exactly what was rated; a preference counts as a 5 for the
  chosen and a 1 for the rejected image), and the generator is fine-tuned to raise the
  reward of its samples (a step at `reward_weight` times the learning rate), each beside a
  step of the family's own objective on training images, which keeps the distribution
  anchored to the data. Re-weighting the likelihood of the model's own samples was tried
  first and barely moves a generator: its own samples are already what it models best
  (docs/families.md has the figures).
- RBM and autoencoder (no differentiable sampler): the family's own objective on batches
  of which `feedback_share` are images rated well, drawn in proportion to their rating,
  the rest training images. Poorly rated images are not used there: a likelihood or a
  reconstruction loss has no honest way to push away from one example.

A sequence model's step may add `anchor_weight` times the next-token loss on training
text, so preference learning does not wander off the data (held-out perplexity is
reported before and after). The refined artifact records its lineage in genkiln.json:
the parent's digest, how many pairs and ratings were used, and the metrics before.
"""
