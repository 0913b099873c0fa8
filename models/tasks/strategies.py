"""`strategies`: sequences whose target is one of K_true hidden transformations
of the context — a task with a known discrete latent.

Batch: c (B, Lc) long context tokens; x (B, L) long target tokens (L = Lc);
       truth (B,) long index of the transformation applied (evaluation only).
spec:  vocab_size, n_symbols, length, context_length,
       n_strategies, strategies (names), specials {name: id}.

Token ids: the first len(SPECIALS) ids are reserved for the sequence template
the decoder uses (`<bos> <x> ... </x> <z> k </z> <y> ... </y> <eos>`); a data
symbol s in [0, V) has id len(SPECIALS) + s, so tasks and models agree on ids
without a tokenizer.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from ..data import Batch
from ..registry import check_range
from .base import Task, register

SPECIALS = ("<pad>", "<bos>", "<eos>", "<x>", "</x>", "<z>", "</z>", "<y>", "</y>")
N_SPECIAL = len(SPECIALS)


def _rotate(s: Tensor, V: int) -> Tensor:
    return s.roll(-1, dims=-1)


def _swap_pairs(s: Tensor, V: int) -> Tensor:
    # swap positions (0,1), (2,3), ...; a trailing odd position stays
    L = s.shape[-1]
    idx = torch.arange(L, device=s.device)
    idx = torch.where(idx % 2 == 0, (idx + 1).clamp(max=L - 1), idx - 1)
    return s[..., idx]


# name -> f(symbols (N, L) long in [0, V), V) -> (N, L); order = default catalogue order
TRANSFORMS: dict[str, Callable[[Tensor, int], Tensor]] = {
    "copy": lambda s, V: s.clone(),
    "reverse": lambda s, V: s.flip(-1),
    "sort": lambda s, V: s.sort(-1).values,
    "rotate": _rotate,
    "add_one": lambda s, V: (s + 1) % V,
    "sort_desc": lambda s, V: s.sort(-1, descending=True).values,
    "swap_pairs": _swap_pairs,
    "complement": lambda s, V: V - 1 - s,
}


def resolve(strategies: Union[int, Sequence[str]]) -> list[str]:
    """An int k means the first k of the catalogue; a list names them."""
    if isinstance(strategies, int) and not isinstance(strategies, bool):
        check_range("strategies", strategies, 1, len(TRANSFORMS), integer=True)
        return list(TRANSFORMS)[:strategies]
    if isinstance(strategies, str):
        strategies = [s.strip() for s in strategies.split(",") if s.strip()]
    names = list(strategies)
    bad = [s for s in names if s not in TRANSFORMS]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"strategies={strategies!r} is not valid; give an int in "
                         f"[1, {len(TRANSFORMS)}] or distinct names from {list(TRANSFORMS)}")
    return names


def apply(names: Sequence[str], symbols: Tensor, which: Tensor, V: int) -> Tensor:
    """Target symbols: row n gets transformation names[which[n]] of symbols[n]. (N, L)"""
    out = torch.empty_like(symbols)
    for k, name in enumerate(names):          # a loop over K_true, never over rows
        rows = which == k
        out[rows] = TRANSFORMS[name](symbols[rows], V)
    return out


def generate(n: int, length: int, vocab: int, names: Sequence[str],
             generator: torch.Generator) -> Batch:
    """n examples as ids (offset past the specials): Batch(x=target, c=context, truth)."""
    sym = torch.randint(vocab, (n, length), generator=generator)
    which = torch.randint(len(names), (n,), generator=generator)
    target = apply(names, sym, which, vocab)
    return Batch(target + N_SPECIAL, sym + N_SPECIAL, which)


@register("strategies")
def load_strategies(*, device="cpu", seed: int = 0, length: int = 8, vocab: int = 10,
                    strategies: Union[int, Sequence[str]] = 4, n_train: int = 10000,
                    n_val: int = 1000, n_test: int = 1000) -> Task:
    """Synthetic strategy sequences; `strategies` = K_true (first k of TRANSFORMS) or names."""
    check_range("length", length, 2, integer=True)
    check_range("vocab", vocab, 2, integer=True)
    for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        check_range(key, n, 1, integer=True)
    names = resolve(strategies)
    g = torch.Generator().manual_seed(seed)
    splits = {k: generate(n, length, vocab, names, g)
              for k, n in (("train", n_train), ("val", n_val), ("test", n_test))}
    spec = {"vocab_size": N_SPECIAL + vocab, "n_symbols": vocab,
            "length": length, "context_length": length, "n_strategies": len(names),
            "strategies": names, "specials": {s: i for i, s in enumerate(SPECIALS)}}
    return Task("strategies", "sequence", spec, splits, device=device, seed=seed)
