"""`hydra/sweeper=bench_optuna`: fair hyper-parameter search with Optuna.

    python -m bench.run -m hparams_search=lr estimator=gumbel,reinforce,rebar

Why our own sweeper: hydra-optuna-sweeper 1.3 declares optuna<3, and optuna
2.10 fails on a sqlite study under SQLAlchemy 2. This one drives current
optuna directly and installs from pyproject.toml like everything else.

The fairness rule, enforced here:
- Discrete sweeps on the command line (estimator=a,b,c) form a grid; every
  grid point gets its own Optuna study, named after it, with the same trial
  budget (`n_trials`), the same sampler and seed, and the same search space.
- `params` is the search space, in Hydra's sweep syntax:
  `tag(log, interval(1e-4, 1e-2))`, `interval(0.1, 2.0)`, `choice(a, b)`,
  `range(1, 8)`. A key the grid point's config does not have is left out of
  that study, and so is `estimator.tau` where the estimator's class does not
  declare a `temperature` (REBAR's tau is learned, reinforce has none), so
  relaxations tune their temperature and the others do not.
- The objective is the value the task function returns (bench.run returns the
  final val/elbo); a failed trial is told to Optuna as FAIL and costs budget.
- Studies live in an sqlite storage, so a search that stops resumes where it
  stopped: only the missing trials run. The best overrides per study are
  written to <sweep dir>/best.yaml and printed, ready for the final comparison.
"""
# no `from __future__ import annotations`: Hydra loads plugin modules without
# registering them in sys.modules, and dataclasses then cannot resolve strings
import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class BenchOptunaSweeperConf:
    _target_: str = "hydra_plugins.bench_optuna.optuna_sweeper.BenchOptunaSweeper"
    storage: str = "sqlite:///optuna.db"    # relative paths: the directory the command ran in
    study_prefix: str = "bench"
    n_trials: int = 8                       # per study: the same budget for every grid point
    n_jobs: int = 1                         # trials launched together (use with a parallel launcher)
    seed: int = 0                           # TPE sampler seed, the same for every study
    direction: str = "maximize"
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="bench_optuna",
                             node=BenchOptunaSweeperConf, provider="bench")


# optuna is imported where it is used: Hydra imports every plugin module in
# every process it starts (each job too), and optuna costs ~0.2 s to import.

def distribution(override: Override) -> "optuna.distributions.BaseDistribution":
    """Hydra sweep syntax -> an Optuna distribution."""
    import optuna
    v = override.value()
    key = override.get_key_element()
    if override.is_choice_sweep():
        return optuna.distributions.CategoricalDistribution(list(override.sweep_string_iterator()))
    if override.is_interval_sweep():
        log_scale = "log" in v.tags
        if isinstance(v.start, int) and isinstance(v.end, int):
            return optuna.distributions.IntDistribution(v.start, v.end, log=log_scale)
        return optuna.distributions.FloatDistribution(float(v.start), float(v.end), log=log_scale)
    if override.is_range_sweep():
        return optuna.distributions.IntDistribution(int(v.start), int(v.stop) - 1, step=int(v.step or 1))
    raise ValueError(f"hparams_search: hydra.sweeper.params.{key}="
                     f"{override.get_value_element_as_str()!r} is not a search space; "
                     f"use interval(a, b), tag(log, interval(a, b)), choice(...) or range(...)")


def absolute_storage(storage: str, start_dir: str) -> str:
    prefix = "sqlite:///"
    if storage.startswith(prefix) and not storage.startswith(prefix + "/"):
        return prefix + str((Path(start_dir) / storage[len(prefix):]).resolve())
    return storage


class BenchOptunaSweeper(Sweeper):
    def __init__(self, storage: str, study_prefix: str, n_trials: int, n_jobs: int, seed: int,
                 direction: str, params: Optional[Dict[str, str]] = None):
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hparams_search: n_trials={n_trials} and n_jobs={n_jobs} must be >= 1")
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hparams_search: direction={direction!r}; valid values are "
                             f"['maximize', 'minimize']")
        self.storage = absolute_storage(storage, os.getcwd())
        self.prefix, self.n_trials, self.n_jobs = study_prefix, n_trials, n_jobs
        self.seed, self.direction = seed, direction
        self.search = dict(params or {})
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # -- the grid and the search space ----------------------------------------------
    def _split(self, arguments: List[str]):
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        grid, fixed = [], []
        for o in parser.parse_overrides(arguments):
            if o.is_sweep_override():
                if not o.is_discrete_sweep():
                    raise ValueError(f"hparams_search: put search spaces under "
                                     f"hydra.sweeper.params, not on the command line: {o.input_line}")
                grid.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
            else:
                fixed.append(o.input_line)
        space = {o.get_key_element(): distribution(o) for o in parser.parse_overrides(
            [f"{k}={v}" for k, v in self.search.items()])}
        return [list(p) for p in itertools.product(*grid)], fixed, space

    def _space_for(self, overrides: List[str], space: Dict[str, Any]) -> Dict[str, Any]:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        kept = {k: d for k, d in space.items() if OmegaConf.select(cfg, k, default=None) is not None
                and (k != "estimator.tau" or _has_temperature(cfg.estimator.name))}
        dropped = sorted(set(space) - set(kept))
        if dropped:
            log.info(f"[optuna] {' '.join(overrides) or 'defaults'}: no key {dropped}, not tuned")
        return kept

    # -- the search -------------------------------------------------------------------
    def sweep(self, arguments: List[str]) -> Any:
        import optuna
        grid, fixed, space = self._split(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        best = {}
        for point in grid:
            name = f"{self.prefix}:{' '.join(sorted(point)) or 'defaults'}"
            study = optuna.create_study(study_name=name, storage=self.storage, load_if_exists=True,
                                        direction=self.direction,
                                        sampler=optuna.samplers.TPESampler(seed=self.seed))
            self._run_study(study, point + fixed, self._space_for(point + fixed, space))
            best[name] = self._best(study, point + fixed)
        OmegaConf.save(OmegaConf.create(best), sweep_dir / "best.yaml")
        for name, b in best.items():
            log.info(f"[optuna] best of {name}: {b}")
        return best

    def _run_study(self, study: "optuna.Study", base: List[str], space: Dict[str, Any]) -> None:
        import optuna
        done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
                   for t in study.trials)
        remaining = self.n_trials - done
        if remaining <= 0:
            log.info(f"[optuna] {study.study_name}: {done} trials already run, nothing to do")
        while remaining > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            batch = [base + [f"{k}={v}" for k, v in t.params.items()] for t in trials]
            results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(batch)
            for trial, result in zip(trials, results):
                value = _objective(result)
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, value)
            remaining -= len(trials)

    @staticmethod
    def _best(study: "optuna.Study", base: Sequence[str]) -> Dict[str, Any]:
        import optuna
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            return {"overrides": list(base), "value": None, "trials": len(study.trials)}
        t = study.best_trial
        return {"overrides": list(base) + [f"{k}={v}" for k, v in t.params.items()],
                "value": float(t.value), "trials": len(study.trials)}


def _has_temperature(estimator: str) -> bool:
    import estimators
    return estimators.get(estimator).temperature


def _objective(result) -> Optional[float]:
    """A job's return value as a finite float, or None for a failed trial."""
    try:
        value = result.return_value
    except Exception:  # the job raised: Hydra re-raises it here
        return None
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
