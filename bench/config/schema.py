"""Structured-config schema of `bench.run`: the types, defaults and choices of
every key, each default written here only (conf/config.yaml holds the
defaults list and Hydra's own settings). Registered with Hydra's ConfigStore as `base_config`, the first
entry of `conf/config.yaml`'s defaults list, so a wrong type or an unknown
choice (`device=gpu`, `kl.free_bits_mode=foo`) fails while Hydra composes the
config, naming the key and the valid values. Checks that need a registry or
relate two keys (estimator options, ranges) live in `bench.config.validate`,
which runs before anything is built.

Groups whose options differ per choice (`estimator`, `task`, `conditioning`,
`model`) are open dicts with a required `name`; everything else is typed here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


class Device(str, Enum):
    auto = "auto"   # CUDA when present, else CPU
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    fp32 = "fp32"   # float32 everywhere
    tf32 = "tf32"   # CUDA matmuls/convolutions in TensorFloat-32 (no effect on CPU)
    bf16 = "bf16"   # the model's networks under torch.autocast(bfloat16); estimators in fp32


class LatentName(str, Enum):
    categorical = "categorical"
    bernoulli = "bernoulli"    # one logit per variable; estimators see it as K = 2 logits [0, a]
    gaussian = "gaussian"


class KLForm(str, Enum):
    analytic = "analytic"  # f = log p(x|z); the KL term exact per variable, outside the estimator
    sampled = "sampled"    # f = log p(x|z) + log p(z) - log q(z|x): the papers' single-sample ELBO


class KLSchedule(str, Enum):
    constant = "constant"
    linear = "linear"
    sigmoid = "sigmoid"
    cyclical = "cyclical"


class FreeBitsMode(str, Enum):
    none = "none"        # no clamping at all
    batch = "batch"      # sum_j max(lambda, E_batch KL_j)   (Kingma et al. 2016)
    per_dim = "per_dim"  # E_batch sum_j max(lambda, KL_j)
    total = "total"      # E_batch max(lambda, sum_j KL_j)  (KL floor)


class TemperatureSchedule(str, Enum):
    constant = "constant"
    linear = "linear"
    exponential = "exponential"


class EvalSplit(str, Enum):
    val = "val"     # model selection and curves (the default)
    test = "test"   # the papers' reported numbers; val/* keys then hold the test split's


@dataclass
class TrainConf:
    steps: int = 2000           # optimiser steps
    # equal compute: a budget of evaluations of f per example; when set, the run
    # takes f_evals // Estimator.f_evaluations(D, K) steps instead of `steps`
    f_evals: Optional[int] = None
    batch_size: int = 64        # training minibatch
    lr: float = 1e-3            # Adam, model parameters
    estimator_lr: float = 1e-3  # Adam, the estimator's own parameters (aux_loss)
    # that Adam's beta_1 (beta_2 stays 0.999): DisARM's code trains its RELAX control
    # variate with beta_1 = 0.999, a long average of a noisy variance gradient
    estimator_beta1: float = 0.9
    # torch's fused Adam kernel (one pass over all parameters instead of a loop of small
    # ops): the same update up to float rounding, measurably faster on small models
    fused_adam: bool = False
    # SGD on the model's learned prior (model.prior_parameters(), e.g. DisARM's prior
    # logits at 1e-2), which the Adam then leaves out; null = the prior is in the Adam
    prior_lr: Optional[float] = None
    eval_every: int = 500       # val / grad / collapse metrics (also at 0 and last step)
    log_every: int = 100        # train/* and perf/* (host sync only here)
    precision: Precision = Precision.fp32  # fp32 | tf32 | bf16 (networks only; estimators stay fp32; bf16 refused where Estimator.bf16_safe is False)
    compile: bool = False       # torch.compile the model's forward pieces (eager fallback, warned)
    # resumable runs (bench/job/checkpoint.py): the whole training state every this many
    # steps; null = only when SIGTERM/SIGUSR1/SIGUSR2 asks the run to stop
    checkpoint_every: Optional[int] = None
    # folder of the checkpoint files (<config_hash>.pt); relative = to the directory the
    # command was started from. Neither key changes what a run computes (not in config_hash)
    checkpoint_dir: str = "checkpoints"


@dataclass
class EvalConf:
    batch_size: int = 512       # examples per evaluation (the first n of eval.split; >= its size: all of it)
    split: EvalSplit = EvalSplit.val  # val | test: the held-out split val/* are computed on
    iwae_samples: int = 32      # S of the importance-weighted bound val/iwae
    # trainset/elbo, the papers' training measure (single-sample ELBO, KL sampled) on the
    # first N training images, one fixed binarisation; 0 = off, >= the split's size = all of it
    train_elbo_size: int = 0
    grad_stats: bool = True     # grad/* at every evaluation
    grad_samples: int = 32      # N independent gradient estimates
    grad_batch_size: int = 64   # batch the gradient statistics are computed on
    exact_max_configs: int = 4096  # grad/bias only when K^D <= this (categorical)
    samples: bool = False       # image tasks: gen/* metrics and PNG sample grids (artifacts) at every evaluation
    samples_per_class: int = 8  # generated images per class (gen/class_accuracy) and grid columns
    tsne_points: int = 1000     # eval.samples: held-out images in the final evaluation's latent t-SNE
    classifier_steps: int = 400 # training steps of the cached adherence classifier (models.adherence)


@dataclass
class LatentConf:
    name: LatentName = LatentName.categorical
    D: Optional[int] = None     # latent variables; None = the task's default
    K: Optional[int] = None     # categories per variable (categorical only); None = the task's default


@dataclass
class KLConf:
    name: KLSchedule = KLSchedule.constant
    beta: float = 1.0           # final / maximal KL weight
    warmup: float = 0.25        # linear, sigmoid: fraction of train.steps to reach beta
    cycles: int = 4             # cyclical: number of ramps (Fu et al. 2019)
    ratio: float = 0.5          # cyclical: fraction of each cycle spent ramping
    free_bits: float = 0.0      # lambda, nats; 0 leaves the KL unchanged
    free_bits_mode: FreeBitsMode = FreeBitsMode.batch
    # how the KL enters an estimator of an expectation: analytic beside it, or sampled inside f
    # (REBAR, RELAX, DisARM); bounds (vimco) always hold it inside f
    form: KLForm = KLForm.analytic


@dataclass
class TemperatureConf:
    schedule: TemperatureSchedule = TemperatureSchedule.constant
    final: Optional[float] = None  # end temperature; start is estimator.tau (estimators with a `temperature`)


@dataclass
class TrackingConf:
    experiment: str = "discrete-latent-bench"  # MLflow experiment name
    patience_s: float = 300.0   # how long a store call retries an outage before the job fails
    # liveness (bench/tracking/liveness.py): a kill -9 runs no exit hook, so open runs
    # prove they are alive instead, and a RUNNING run silent for lost_after_s is marked
    # FAILED (lost) by the next sweep, rerun or bench.tables
    heartbeat_s: float = 10.0   # seconds between heartbeat tags of an open run
    lost_after_s: float = 60.0  # silence after which a RUNNING run is lost; > 2 x heartbeat_s
    # at the end of a sweep, attach what `bench.tables --sweep` writes to the parent run
    # (tables/, tables/figures/); false saves the seconds matplotlib and the figures take
    sweep_figures: bool = True


@dataclass
class DebugConf:
    nan_at_step: Optional[int] = None  # inject a NaN loss at this step (tests)


@dataclass
class Config:
    seed: int = 0
    device: Device = Device.auto
    threads: Optional[int] = 1         # torch.set_num_threads; None = torch default
    latent_dropout: float = 0.0        # P(decoder gets no latent), training only
    rerun: bool = False                # redo a config that already FINISHED
    progress: bool = True              # tqdm bar (always quiet when stdout is not a tty)
    estimator: Dict[str, Any] = field(default_factory=lambda: {"name": MISSING})
    task: Dict[str, Any] = field(default_factory=lambda: {"name": MISSING})
    conditioning: Dict[str, Any] = field(default_factory=lambda: {"name": MISSING})
    # extra models.build options; `family` is declared so that `model.family=conv`
    # needs no `+` (null: the task's own family, the MLP for image tasks). `label`
    # is no build option: the name the tables give this model's rows (an experiment
    # overlay's own, e.g. `linear`), with the options it stands for listed under them
    model: Dict[str, Any] = field(default_factory=lambda: {"family": None, "label": None})
    latent: LatentConf = field(default_factory=LatentConf)
    kl: KLConf = field(default_factory=KLConf)
    temperature: TemperatureConf = field(default_factory=TemperatureConf)
    train: TrainConf = field(default_factory=TrainConf)
    eval: EvalConf = field(default_factory=EvalConf)
    mlflow: TrackingConf = field(default_factory=TrackingConf)
    debug: DebugConf = field(default_factory=DebugConf)


# model.family values that name the MLP: null (an image task's own family),
# its public name and its registered one (models.zoo.ALIASES)
MLP_FAMILIES = (None, "mlp", "image")


def mlp_only(value, *, _root_):
    """`${mlp_only:3}`: value where model.family is the MLP, else null. A task
    file's latent sizes are its MLP's (conf/task/digits.yaml); under another
    family (model.family=conv) an unset size stays null and resolves to that
    family's default for the task and latent kind (models.default_latent),
    while MLP runs resolve, and hash, as before the interpolation."""
    model = _root_.get("model") or {}
    return value if model.get("family") in MLP_FAMILIES else None


def register() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)
    if not OmegaConf.has_resolver("mlp_only"):
        OmegaConf.register_new_resolver("mlp_only", mlp_only)
