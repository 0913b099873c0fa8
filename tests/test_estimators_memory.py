"""rebar and relax hold no memory across steps (other implementations' REBAR
grows ~65 KB per step by keeping graphs alive)."""
import os

import pytest
import torch
from torch import nn

import estimators


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_memory_flat_over_2000_steps(name):
    torch.manual_seed(0)
    enc, dec = nn.Linear(64, 8 * 4), nn.Linear(8 * 4, 64)
    x = torch.bernoulli(torch.full((128, 64), 0.3))
    est = estimators.build(name)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), *est.parameters()], lr=1e-3)

    def step():
        logits = enc(x).view(-1, 8, 4)
        out = est(logits, lambda z: -nn.functional.binary_cross_entropy_with_logits(
            dec(z.flatten(2)), x.expand(z.shape[0], -1, -1), reduction="none").sum(-1))
        opt.zero_grad()
        (out.loss + out.aux_loss).backward()
        opt.step()

    for _ in range(200):          # allocator and optimiser state settle
        step()
    before = rss_bytes()
    for _ in range(2000):
        step()
    growth = rss_bytes() - before
    print(f"\n{name}: RSS growth over 2000 steps {growth / 1024:.0f} KB")
    # 65 KB/step would be 130 MB; allow 4 MB of allocator noise (2 KB/step)
    assert growth < 4 * 2**20
