"""Conditional VAEs, conditioning types, tasks and evaluation metrics.

The contract the harness relies on (stated once, here):

Batch  (`models.data.Batch`, a NamedTuple; every tensor already on the device)
    x      what is generated: pixels (B, P) float in {0, 1}, or target tokens (B, L) long
    c      the condition: class label (B,) long, or context tokens (B, Lc) long
    truth  (B,) long hidden strategy (the `strategies` task) or None

Task   `models.tasks.load(name, device=..., seed=..., **options) -> Task`
    .name, .spec (dict of sizes a model needs), .split(name) -> Batch for
    "train" | "val" | "test", .sample(split, batch_size, generator) -> Batch
    (a random minibatch drawn by index on the device: no host copy per step).

Latent `models.latents.build("categorical", D=..., K=...) | build("gaussian", D=...)`
    .param_shape  (D, K) logits, or (D, 2) [mean, log_std]
    .kl(q, p) -> (B, D)            analytic KL per latent variable
    .log_prob(params, z) -> (S, B)
    .sample(params, S) -> z        (S, B, D, K) one-hot, or (S, B, D)
    .estimator_kind                "categorical" | "gaussian" (matches Estimator.latent)

Model  `models.build(task, latent, conditioning=..., **options) -> nn.Module`
    .latent                          the Latent above
    .posterior(batch) -> params      q(z | x, c): (B, D, K) logits or (B, D, 2)
    .prior(batch) -> params | None   p(z | c): fixed, learned, or a router; None = no KL term
    .log_likelihood(batch, z) -> (S, B)  log p(x | z, c); z (S, B, D, K) float
                                     (one-hot, soft or straight-through) or (S, B, D);
                                     latent dropout applies in training mode
    .context(batch) -> (B, C)        detached features for input-dependent baselines

Estimators see f(z) = model.log_likelihood(batch, z) (plus log p(z) - log q(z)
for multi-sample bounds); the KL term is analytic wherever it exists.

Entry points: `models.build`, `models.options(task)`, `models.families()`,
`models.evaluate(model, batch, n_iw=...)`, `models.tasks`, `models.latents`,
`models.conditioning`, `models.metrics`. Model families: models/image.py,
models/conv.py (`family="conv"`), models/sequence.py, models/toy.py; add one by
subclassing `models.base.LatentModel`.
"""
from . import conditioning, latents, metrics, tasks
from .base import FAMILIES, LatentModel
from .data import Batch
from .evaluate import evaluate
from .zoo import build, default_latent, families, options

__all__ = ["Batch", "FAMILIES", "LatentModel", "build", "conditioning", "default_latent",
           "evaluate", "families", "latents", "metrics", "options", "tasks"]
