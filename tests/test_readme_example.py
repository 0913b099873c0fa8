"""The README's library example runs as printed: its loss, minus an ELBO of
binary pixels, is finite and positive, and its backward pass reaches both
networks."""
from __future__ import annotations

import re

import torch

from tests.processes import ROOT


def test_the_readme_library_example_runs_and_trains_both_networks():
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## In your own model\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(code.splitlines()) <= 15
    threads = torch.get_num_threads()
    scope: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), scope)             # noqa: S102
    finally:
        torch.set_num_threads(threads)
    loss = (scope["out"].loss + scope["kl"]).item()
    assert loss > 0 and torch.isfinite(torch.tensor(loss))          # -ELBO of 784 binary pixels
    assert scope["kl"].item() > 0
    for net in (scope["enc"], scope["dec"]):
        assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
