"""The Optuna sweeper on a tiny Hydra app: one study per grid point with the
same budget, keys a config lacks are not tuned, a failed trial is FAIL, and
a search resumes from its sqlite storage."""
import subprocess
import sys
import textwrap

import optuna
import pytest
import yaml

APP = '''
import math, hydra
from omegaconf import OmegaConf

@hydra.main(version_base="1.3", config_path=".", config_name="cfg")
def main(cfg):
    if cfg.lr > 0.05:
        raise RuntimeError("diverged")          # a failed trial
    tau = OmegaConf.select(cfg, "est.tau", default=1.0)
    return -(math.log10(cfg.lr) + 2.5) ** 2 - (tau - 0.5) ** 2

if __name__ == "__main__":
    main()
'''


@pytest.fixture
def app(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "cfg.yaml").write_text(textwrap.dedent("""
        defaults:
          - est: a
          - override hydra/sweeper: bench_optuna
          - _self_
        lr: 0.001
        hydra:
          sweep: {dir: sweep}
          sweeper:
            storage: sqlite:///studies.db
            study_prefix: t
            n_trials: 5
            n_jobs: 2
            params:
              lr: tag(log, interval(1e-4, 1e-1))
              est.tau: interval(0.1, 2.0)
    """))
    (tmp_path / "est").mkdir()
    (tmp_path / "est" / "a.yaml").write_text("name: a\ntau: 1.0\n")
    (tmp_path / "est" / "b.yaml").write_text("name: b\n")
    return tmp_path


def run(app):
    return subprocess.run([sys.executable, "app.py", "-m", "est=a,b"], cwd=app,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_one_study_per_grid_point_same_budget_and_resume(app):
    proc = run(app)
    assert proc.returncode == 0, proc.stderr[-3000:]
    storage = f"sqlite:///{app / 'studies.db'}"
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == ["t:est=a", "t:est=b"]
    a = optuna.load_study(study_name="t:est=a", storage=storage)
    b = optuna.load_study(study_name="t:est=b", storage=storage)
    assert len(a.trials) == len(b.trials) == 5                  # the same budget
    assert all(set(t.params) == {"lr", "est.tau"} for t in a.trials)
    assert all(set(t.params) == {"lr"} for t in b.trials)       # b has no tau: not tuned
    failed = [t for t in a.trials + b.trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.params["lr"] > 0.05 for t in failed)
    best = yaml.safe_load((app / "sweep" / "best.yaml").read_text())
    assert set(best) == {"t:est=a", "t:est=b"}
    assert "est=a" in best["t:est=a"]["overrides"]

    again = run(app)                                            # resumes: nothing left to run
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name="t:est=a", storage=storage).trials) == 5


def test_bad_search_space_is_named(app):
    cfg = (app / "cfg.yaml").read_text().replace("tag(log, interval(1e-4, 1e-1))", "0.5")
    (app / "cfg.yaml").write_text(cfg)
    proc = run(app)
    assert proc.returncode != 0
    assert "hydra.sweeper.params.lr='0.5' is not a search space" in proc.stderr
