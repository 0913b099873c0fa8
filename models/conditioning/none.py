"""`none`: no condition at all, the unconditional VAE of the estimator papers
(REBAR, Tucker et al. 2017; RELAX, Grathwohl et al. 2018; DisARM, Dong et
al. 2020; Gumbel-softmax, Jang et al. 2017; ReinMax, Liu et al. 2023).

Every hook keeps its "does not enter here" default, so the networks ignore
c, and `uses_condition = False` tells a family to build nothing for the
label either: no label embeddings, and one learned prior table (D, K)
instead of one per class. The label is then read nowhere, so two batches
that differ only in c give identical outputs.
"""
from __future__ import annotations

from .base import Conditioning, register


@register
class NoCondition(Conditioning):
    name = "none"
    # the MLP image family (registered as "image"); the conv family builds its
    # label embeddings and per-class prior itself and does not read the flag yet
    families = ("image",)
    uses_condition = False
