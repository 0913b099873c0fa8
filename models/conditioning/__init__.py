"""Conditioning types: how the condition (and, in the sequence model, z) enters
a network. One file per type, found by discovery; the contract and the hooks
a model family calls are in `models.conditioning.base`.

| name   | module                         | image model (MLP)                 | sequence model (transformer)          |
|--------|--------------------------------|-----------------------------------|---------------------------------------|
| concat | Linear([h, c])                 | label embedding joins the input   | z vector joins every token embedding  |
| add    | h + W c                        | label embedding added per block   | z vector added to token embeddings    |
| film   | (1 + γ(c)) · norm(h) + β(c)    | per block, from the label         | per sublayer, from the z vector       |
| xattn  | h + Attn(norm(h), memory)      | —                                 | every block attends to [x tokens; z]  |
| prefix | [prefix tokens; h]             | —                                 | the template <x> … </x> <z> k </z>    |

Convolutional image model (`model.family=conv`) only:

| name           | how the label enters                                                         |
|----------------|------------------------------------------------------------------------------|
| spatial_concat | a learned 1 x h x w map concatenated to the features before the latent head   |
|                | (encoder) and to z at the decoder input                                      |
| adaln          | (1 + γ(y)) · GroupNorm(h) + β(y) in every residual block, zero-initialised    |
|                | (adaLN-Zero without DiT's residual gate: a block starts as its unconditioned  |
|                | self); film's map, per channel after each GroupNorm, broadcast over space    |

FiLM's γ, β come from a zero-initialised linear map, so every FiLM block starts
as the identity and a FiLM network at initialisation equals the same network
without conditioning (Perez et al. 2018; zero-init as in x-transformers).

    cls = models.conditioning.get("film")            # the class (hooks + module)
    models.conditioning.supported("image")           # ['add', 'concat', 'film']
    models.conditioning.check("xattn", "image")      # ValueError naming the supported ones

Another installed package adds a type through the entry-point group
`discrete_latent_bench.conditioning` (docs/models.md, "Adding a conditioning type").
"""
from __future__ import annotations

from .base import CONDITIONING, Conditioning, DecoderTokens, register


def names() -> list[str]:
    return CONDITIONING.names()


def get(name: str) -> type[Conditioning]:
    return CONDITIONING.get(name)


def supported(family: str) -> list[str]:
    """Conditioning types a model family supports (each type's `families`)."""
    return [n for n in names() if family in get(n).families]


def check(name: str, family: str) -> None:
    """Refuse an unknown name or one the family does not support, naming the supported ones."""
    if family not in get(name).families:
        raise ValueError(f"conditioning {name!r} is not supported by the {family} model; "
                         f"supported: {supported(family)}")


__all__ = ["CONDITIONING", "Conditioning", "DecoderTokens", "check", "get", "names",
           "register", "supported"]
