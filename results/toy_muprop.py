"""REBAR with the MuProp relaxation on the toy (Tucker et al. 2017): the
variance of the single-sample d/dtheta estimate relative to plain REINFORCE,
measured and predicted by quadrature, for results/README.md.

    python -m results.toy_muprop [--draws 1000000]

Toy: maximise E_{b~Bern(sigmoid(theta))}[-(b - t)^2], t = 0.45, at fixed
tau = lambda = 2 and fixed eta (REBAR evaluated at initialisation: its own
parameters only move through its optimiser). Seed fixed, float64.
"""
from __future__ import annotations

import argparse

import torch

import estimators
from estimators.sampling import conditional_perturbed, relaxed, relaxed_muprop
from tests.test_estimators_muprop import (DTYPE, LAM, T, optimal_eta, predicted_ratio,
                                          toy_estimates, variance_ratio)

THETAS = (-2.0, -4.0)


def relaxed_given_zero(theta: float, N: int):
    """Mean relaxed sample s(z~) and rms of f(0) - f(s(z~)) given b = 0, the
    common outcome, for either relaxation (the sentence under the table)."""
    th = torch.full((N,), theta, dtype=DTYPE)
    logits = torch.stack([torch.zeros_like(th), th], -1).unsqueeze(1)   # (N, 1, 2)
    b = torch.zeros(1, N, 1, 2, dtype=DTYPE)
    b[..., 0] = 1
    zt = conditional_perturbed(logits, b)                                # (1, N, 1, 2)
    out = {}
    for rel, s in (("concrete", relaxed(zt, LAM)), ("muprop", relaxed_muprop(zt, logits, LAM))):
        s1 = s[..., 1].flatten()
        resid = -T ** 2 + (s1 - T) ** 2
        out[rel] = (s1.mean().item(), resid.pow(2).mean().sqrt().item())
    return out


def main(draws: int, seed: int = 0) -> None:
    torch.manual_seed(seed)
    print(f"draws per estimator: {draws:,}; t = {T}, lambda = tau = {LAM}, seed {seed}\n")
    print("| theta | relaxation | eta | measured Var(REBAR)/Var(REINFORCE) | s.e. | predicted |")
    print("|---|---|---|---|---|---|")
    for theta in THETAS:
        plain = toy_estimates(estimators.build("reinforce", baseline="none", n_samples=1),
                              theta, draws)
        eta_opt, _ = optimal_eta(theta)
        for rel, eta in (("muprop", 1.0), ("muprop", eta_opt), ("concrete", 1.0)):
            est = estimators.build("rebar", tau=LAM, eta=eta, relaxation=rel).to(DTYPE)
            ratio, se = variance_ratio(toy_estimates(est, theta, draws), plain)
            print(f"| {theta:g} | {rel} | {eta:.3f} | {ratio:.3f} | {se:.3f} | "
                  f"{predicted_ratio(theta, rel, eta):.3f} |")
    print("\ngiven b = 0: mean s(z~), rms f(0) - f(s(z~)); f(0) = -t^2 =", -T ** 2)
    for theta in THETAS:
        for rel, (m, r) in relaxed_given_zero(theta, draws).items():
            print(f"  theta {theta:g} {rel:8s}  {m:.3f}  {r:.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    main(args.draws, args.seed)
