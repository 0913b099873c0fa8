"""The REBAR/RELAX toy as a model (Tucker et al. 2017; Grathwohl et al. 2018).

    maximise  E_{b ~ Bern(sigmoid(theta))}[f(b)],   f(b) = -sum_d (b_d - t)^2

posterior -> logits (B, D, 2) = [0, theta_d] (so softmax gives Bern(sigmoid(theta)));
prior -> None (no KL term); log_likelihood(batch, z) = f(z[..., 1]) -> (S, B).
exact_grad() = dE/dtheta = -sigmoid(theta)(1 - sigmoid(theta))(1 - 2t), the
sign of maximising -(b - t)^2 (the papers write the minimisation form).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .base import FAMILIES, LatentModel
from .data import Batch
from .registry import check_range


@dataclass
class ToyConfig:
    init: float = 0.0     # theta at initialisation (sigmoid(0) = 1/2)

    def __post_init__(self):
        check_range("init", self.init)


@FAMILIES.register("toy")
class Toy(LatentModel):
    family = "toy"
    Config = ToyConfig
    conditioned = False         # nothing to condition on: any conditioning is ignored

    @classmethod
    def latent_sizes(cls, task) -> dict[str, dict]:
        return {"categorical": dict(D=task.spec["D"], K=2)}      # Bernoulli only

    def __init__(self, task, latent, conditioning: Optional[str] = None, config: Optional[ToyConfig] = None):
        config = config or ToyConfig()
        D = task.spec["D"]
        if latent.estimator_kind != "categorical" or tuple(latent.param_shape) != (D, 2):
            raise ValueError(f"toy: the latent must be categorical with D={D}, K=2 "
                             f"(Bernoulli), got {latent!r}")
        super().__init__(task, latent, None, config)
        self.t = float(task.spec["t"])
        self.theta = nn.Parameter(torch.full((D,), float(config.init)))

    def posterior(self, batch: Batch) -> Tensor:
        logits = torch.stack([torch.zeros_like(self.theta), self.theta], -1)   # (D, 2)
        return logits.expand(batch.size, *logits.shape)                        # (B, D, 2)

    def prior(self, batch: Batch) -> None:
        return None

    def log_likelihood(self, batch: Batch, z: Tensor) -> Tensor:
        self.check_z(batch, z)
        return -((z[..., 1] - self.t) ** 2).sum(-1)                             # (S, B)

    def context(self, batch: Batch) -> Tensor:
        return torch.zeros(batch.size, 1, dtype=self.theta.dtype, device=self.theta.device)

    def posterior_parameter_names(self) -> list[str]:
        return ["theta"]

    def exact_objective(self) -> Tensor:
        """E f exactly: -sum_d [sigma (1 - t)^2 + (1 - sigma) t^2]. ()"""
        p = torch.sigmoid(self.theta)
        return -(p * (1 - self.t) ** 2 + (1 - p) * self.t ** 2).sum()

    def exact_grad(self) -> Tensor:
        """dE f / dtheta (D,), detached."""
        p = torch.sigmoid(self.theta.detach())
        return -p * (1 - p) * (1 - 2 * self.t)
