"""Runs that resume from a checkpoint (bench.job.checkpoint) instead of
starting again.

In-process (fast): a Trainer stopped by a signal at a step boundary, or
crashed some steps after a periodic checkpoint, and resumed from the file,
logs exactly what the uninterrupted run logs (every metric but perf/*
timings, exact equality); a resume that forgets one part of the state does
not, so the comparison is shown to be able to fail. Through `python -m
bench.run` (slow, fault injection): kill -9 after a checkpoint, and SIGTERM,
then the same command again: one MLflow run, FINISHED, with the uninterrupted
run's points, none twice.
"""
from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.config.validate import ConfigError, validate
from bench.job import checkpoint as CK
from bench.job.meter import IntervalMeter
from bench.job.train import Trainer, train
from bench.tracking import identity, store as tracking
from tests.compose import compose_config
from tests.processes import job_env, stop_group

TINY = ["train.steps=12", "train.eval_every=4", "train.log_every=2", "train.batch_size=16",
        "eval.batch_size=32", "eval.iwae_samples=4", "eval.grad_samples=4",
        "eval.grad_batch_size=8", "progress=false", "device=cpu"]
CASES = {
    "gumbel": ["estimator=gumbel"],
    # a plain-attribute temperature that a schedule anneals
    "gumbel-annealed": ["estimator=gumbel", "temperature.schedule=linear", "temperature.final=0.3"],
    # EMA buffers in the estimator's state_dict
    "reinforce-ema": ["estimator=reinforce", "estimator.baseline=ema", "estimator.n_samples=1"],
    # learned tau and eta, and the estimator's own Adam
    "rebar": ["estimator=rebar"],
}
TIMED = ("perf/", "grad/seconds_per_estimate")     # wall-clock times


def cfg_of(*overrides: str):
    return compose_config(TINY + list(overrides))


def plan(tmp_path: Path, cfg, every=None) -> CK.Checkpointing:
    return CK.Checkpointing(tmp_path / "run.pt", "run-a", "hash-a",
                            OmegaConf.to_container(cfg), every)


def points(logged) -> dict:
    """(step, key) -> value, timings left out; a point logged twice fails."""
    out = {}
    for step, metrics in logged:
        for k, v in metrics.items():
            if k.startswith(TIMED):
                continue
            assert (step, k) not in out, f"{k} at step {step} logged twice"
            out[(step, k)] = v
    return out


def uninterrupted(cfg, ck=None) -> dict:
    logged = []
    train(cfg, log=lambda s, m: logged.append((s, dict(m))), checkpoint=ck)
    return points(logged)


@functools.lru_cache(maxsize=None)
def reference_points(case: str) -> dict:
    """The uninterrupted run of CASES[case], once per session."""
    return uninterrupted(cfg_of(*CASES[case]))


def resumed(cfg, ck, logged: list, forget=None) -> dict:
    """Continue from ck.path, writing only points not in `logged` (as the
    job runner's skip_logged does against the store), then all points."""
    last: dict = {}
    for s, m in logged:
        for k in m:
            last[k] = max(last.get(k, -1), s)
    trainer = Trainer(cfg, CK.skip_logged(lambda s, m: logged.append((s, dict(m))), last),
                      checkpoint=ck)
    trainer.restore(CK.read(ck.path, ck.config_hash, ck.config))
    if forget is not None:
        forget(trainer)
    trainer.run()
    return points(logged)


def stopped_by_signal(cfg, ck, at_step: int, signum=signal.SIGUSR1) -> list:
    """Run until `at_step` is logged, then send ourselves `signum`."""
    logged = []

    def log(step, metrics):
        logged.append((step, dict(metrics)))
        if step == at_step:
            os.kill(os.getpid(), signum)

    before = signal.getsignal(signum)
    with pytest.raises(CK.Preempted) as info:
        train(cfg, log=log, checkpoint=ck)
    assert signal.getsignal(signum) is before               # handlers only while training
    assert info.value.step == at_step + 1                   # the next step boundary
    assert info.value.reason == (f"preempted by {signal.Signals(signum).name}: checkpoint at "
                                 f"step {at_step + 1}; rerun the same command to resume")
    return logged


@pytest.mark.parametrize("case", sorted(CASES))
def test_stopped_by_a_signal_and_resumed_logs_what_the_uninterrupted_run_logs(tmp_path, case):
    cfg, want = cfg_of(*CASES[case]), reference_points(case)
    # the stop lands mid-interval (step 7 of log_every=2): the meter's open sums travel too
    logged = stopped_by_signal(cfg, plan(tmp_path, cfg), at_step=6)
    assert max(s for s, _ in logged) == 6
    assert resumed(cfg, plan(tmp_path, cfg), logged) == want


@pytest.mark.parametrize("case", ["reinforce-ema", "rebar"])
def test_crash_after_a_periodic_checkpoint_then_resume(tmp_path, case):
    """A kill some steps after the checkpoint of step 6: steps 6-8 are logged
    already, are replayed from step 6 and are not written twice."""
    cfg, want = cfg_of(*CASES[case]), reference_points(case)
    ck, logged = plan(tmp_path, cfg, every=3), []

    def log(step, metrics):
        logged.append((step, dict(metrics)))
        if step == 8:
            raise KeyboardInterrupt        # stands in for kill -9: nothing after this runs
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=log, checkpoint=ck)
    assert torch.load(ck.path, weights_only=True)["step"] == 6
    assert resumed(cfg, ck, logged) == want


def test_periodic_checkpoints_change_nothing(tmp_path):
    cfg = cfg_of(*CASES["rebar"])
    assert uninterrupted(cfg, plan(tmp_path, cfg, every=1)) == reference_points("rebar")


def _reseed_generator(t):
    t.gen.manual_seed(t.cfg.seed)


def _forget_rng(t):
    t.rng = None


def _forget_meter(t):
    t.meter = IntervalMeter(t.device)


def _forget_estimator(t):
    for b in t.est.buffers():
        b.zero_()


def _forget_optimiser(t):
    t.opt.state.clear()


@pytest.mark.parametrize("forget", [_reseed_generator, _forget_rng, _forget_meter,
                                    _forget_estimator, _forget_optimiser])
def test_a_resume_that_forgets_part_of_the_state_is_caught(tmp_path, forget):
    """The comparison above can fail: leave out one part of the restore and
    the resumed run's metrics differ from the uninterrupted run's."""
    cfg, want = cfg_of(*CASES["reinforce-ema"]), reference_points("reinforce-ema")
    logged = stopped_by_signal(cfg, plan(tmp_path, cfg), at_step=6)
    assert resumed(cfg, plan(tmp_path, cfg), logged, forget=forget) != want


def test_a_checkpoint_that_does_not_fit_names_the_file_and_what_differs(tmp_path):
    cfg = cfg_of("estimator=rebar")
    ck = plan(tmp_path, cfg)
    stopped_by_signal(cfg, ck, at_step=2)
    other = OmegaConf.to_container(cfg_of("estimator=rebar", "train.lr=0.01"))
    with pytest.raises(CK.CheckpointMismatch, match=r"train\.lr=0\.001 there, 0\.01 here") as e:
        CK.read(ck.path, "hash-b", other)
    assert str(ck.path) in str(e.value) and "rerun=true" in str(e.value)

    state = CK.read(ck.path, ck.config_hash, ck.config)
    bigger = cfg_of("estimator=rebar", "latent.K=5")      # another model shape, same file
    with pytest.raises(CK.CheckpointMismatch, match=r"model state differs \(.*\(.*\) in the file"):
        Trainer(bigger, lambda s, m: None, checkpoint=plan(tmp_path, bigger)).restore(state)
    plain = cfg_of("estimator=gumbel")                    # no estimator optimiser, no log_tau
    with pytest.raises(CK.CheckpointMismatch, match="estimator state differs"):
        Trainer(plain, lambda s, m: None, checkpoint=plan(tmp_path, plain)).restore(state)

    ck.path.write_bytes(b"not a checkpoint")
    with pytest.raises(CK.CheckpointMismatch, match="cannot be read"):
        CK.read(ck.path, ck.config_hash, ck.config)


def test_a_stop_hands_the_signal_on_to_the_previous_handler():
    seen = []
    e = CK.Preempted(signal.SIGUSR2, 5, Path("x.pt"), lambda s, f: seen.append(s))
    with pytest.raises(SystemExit) as out:
        e.chain()
    assert seen == [signal.SIGUSR2] and out.value.code == 128 + signal.SIGUSR2
    with pytest.raises(SystemExit) as out:
        CK.Preempted(signal.SIGTERM, 5, Path("x.pt"), signal.SIG_DFL).chain()
    assert out.value.code == 128 + signal.SIGTERM


def test_skip_logged_writes_only_points_after_each_keys_last_step():
    got = []
    log = CK.skip_logged(lambda s, m: got.append((s, m)), {"a": 4, "b": 2})
    log(2, {"a": 1.0, "b": 1.0})
    log(4, {"a": 1.0, "b": 1.0, "c": 1.0})
    log(6, {"a": 1.0})
    assert got == [(4, {"b": 1.0, "c": 1.0}), (6, {"a": 1.0})]


def test_checkpoint_keys_are_validated_and_leave_the_config_hash_alone():
    with pytest.raises(ConfigError, match=r"train\.checkpoint_every=0 is not valid; valid "
                                          r"values: integers >= 1"):
        validate(cfg_of("train.checkpoint_every=0"))
    validate(cfg_of("train.checkpoint_every=100"))
    base = OmegaConf.to_container(cfg_of())
    moved = OmegaConf.to_container(cfg_of("train.checkpoint_every=7", "train.checkpoint_dir=/x"))
    assert identity.config_hash(base) == identity.config_hash(moved)
    # the same hash as before the keys existed: finished runs are still found
    old = {**base, "train": {k: v for k, v in base["train"].items()
                             if k not in ("checkpoint_every", "checkpoint_dir")}}
    assert identity.config_hash(base) == identity.config_hash(old)


# -- through `python -m bench.run` ---------------------------------------------
EXPERIMENT = "discrete-latent-bench"
JOB = ["train.steps=600", "train.log_every=20", "train.eval_every=150", "eval.grad_stats=false",
       "train.checkpoint_every=150", "mlflow.heartbeat_s=0.5", "mlflow.lost_after_s=3"]


def _start(cwd: Path, uri: str, *args: str) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "bench.run", *args], cwd=cwd,
                            env=job_env(uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _runs(uri: str) -> tuple:
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    return c, ([] if exp is None else tracking.search_pages(c, exp.experiment_id))


def _history(uri: str, run_id: str) -> dict:
    """key -> [(step, value)] in step order."""
    c = tracking.client(uri)
    keys = c.get_run(run_id).data.metrics
    return {k: sorted((m.step, m.value) for m in c.get_metric_history(run_id, k)) for k in keys}


def _same_points(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        steps = [s for s, _ in got[k]]
        assert steps == [s for s, _ in want[k]], k          # none lost
        assert not [s for s, n in Counter(steps).items() if n > 1], k   # none twice
        if not k.startswith(TIMED):
            assert got[k] == want[k], k


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        assert proc.poll() is None, f"the run ended before {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run's points."""
    from tests.stores import empty_db
    folder = tmp_path_factory.mktemp("reference")
    uri = empty_db(folder)
    out = _finish(_start(folder, uri, *JOB))
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = _runs(uri)[1]
    assert not (folder / "checkpoints" / f"{run.data.tags['config_hash']}.pt").exists()
    return _history(uri, run.info.run_id)


def _ckpt_step(path: Path) -> int:
    return torch.load(path, weights_only=True)["step"] if path.is_file() else -1


@pytest.mark.faults
@pytest.mark.slow
def test_kill_9_after_a_checkpoint_then_the_same_command_resumes_the_run(tmp_path, tracking_uri,
                                                                          reference):
    proc = _start(tmp_path, tracking_uri, *JOB)
    folder = tmp_path / "checkpoints"

    def past_a_checkpoint():
        files = list(folder.glob("*.pt")) if folder.is_dir() else []
        if not files:
            return None
        _, runs = _runs(tracking_uri)
        logged = [m.step for r in runs
                  for m in tracking.client(tracking_uri).get_metric_history(r.info.run_id,
                                                                            "train/loss")]
        step = _ckpt_step(files[0])
        return (runs[0].info.run_id, step) if logged and max(logged) > step > 0 else None
    try:
        run_id, step = _wait(past_a_checkpoint, 240, "points after a checkpoint", proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop_group(proc)
    time.sleep(3.5)                                   # > mlflow.lost_after_s
    out = _finish(_start(tmp_path, tracking_uri, *JOB))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming run {run_id} from step" in out.stdout

    c, runs = _runs(tracking_uri)
    assert [r.info.run_id for r in runs] == [run_id]          # the same run, no second one
    run = runs[0]
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
    assert run.data.tags["resume_count"] == "1"
    assert int(run.data.tags["resumed_from_step"]) >= step
    assert run.data.tags["resumed_after"].startswith("lost: no heartbeat since ")
    _same_points(_history(tracking_uri, run_id), reference)
    assert not Path(run.data.tags[CK.TAG]).exists()          # deleted once FINISHED


@pytest.mark.faults
@pytest.mark.slow
def test_sigterm_checkpoints_ends_killed_and_the_same_command_resumes(tmp_path, tracking_uri,
                                                                     reference):
    proc = _start(tmp_path, tracking_uri, *JOB)
    try:
        def training():
            _, runs = _runs(tracking_uri)
            return [r for r in runs if "train/loss" in r.data.metrics]
        (run,) = _wait(training, 240, "training", proc)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - t0
        err = proc.stderr.read()
    finally:
        stop_group(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert took < 30, took
    c = tracking.client(tracking_uri)
    run = c.get_run(run.info.run_id)
    path = Path(run.data.tags[CK.TAG])
    step = _ckpt_step(path)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"] == (f"preempted by SIGTERM: checkpoint at step {step}; "
                                               f"rerun the same command to resume")
    assert 0 < step < 600 and path.parent == tmp_path / "checkpoints"
    print(f"SIGTERM to exit: {took:.2f} s (checkpoint at step {step})")

    out = _finish(_start(tmp_path, tracking_uri, *JOB))
    assert out.returncode == 0, out.stderr[-3000:]
    _, runs = _runs(tracking_uri)
    assert [r.info.run_id for r in runs] == [run.info.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_step"] == str(step)
    assert run.data.tags["resumed_after"].startswith("preempted by SIGTERM")
    _same_points(_history(tracking_uri, run.info.run_id), reference)
    assert not math.isnan(run.data.metrics["val/elbo"])
