"""Checkpoints: a run's whole training state on disk, so that a run stopped by
a time limit, a pre-emption or a kill continues where it was instead of
starting again.

- Where: `<train.checkpoint_dir>/<config_hash>.pt` (`path_for`). A relative
  folder is taken from the directory the command was started from (Hydra's
  original working directory), so every job of a sweep and every rerun find
  the same file. The run carries the path as tag `checkpoint`.
- When: every `train.checkpoint_every` steps (null: never periodically), and
  when SIGTERM, SIGUSR1 or SIGUSR2 arrives (what SLURM and submitit send
  before a time limit). `StopSignals` holds the handlers only while a run
  trains, and they only set a flag: at the next step boundary the trainer
  writes a checkpoint and raises `Preempted`; the job runner records the run
  KILLED with `Preempted.reason`, then `chain`s to the handler that was there
  before (submitit's requeue) or exits with status 128 + the signal number.
- What (`Trainer.state`): the model, every optimiser, the estimator's
  state_dict and its plain scalar attributes (`scalar_attrs`: a temperature
  a schedule anneals), torch's RNG states (CPU, and CUDA when used), the data
  generator, the interval meter's open interval, the step and the last
  evaluation's metrics. The state of step N is taken after N updates and
  before step N is logged, with every earlier point already in the store
  (the trainer drains its sink first): a resume starts by logging step N.
- How (`save`): a temporary file beside it (`<name>.tmp-<pid>-<host>`),
  fsync, os.replace: a kill in the middle of a write leaves the previous
  checkpoint whole. The temporary file such a kill leaves is removed by the
  next run using the folder (`remove_stale_tmp`): at once when its writer
  was on this host and is gone, after FOREIGN_STALE_S when it was elsewhere.
- Resume (bench.job.runner): a rerun of a config whose latest run ended
  KILLED or lost, and whose checkpoint names that run, continues that MLflow
  run. Points that run already logged after the checkpoint are not written
  again (`skip_logged`): the replay from the checkpoint reproduces them.
- A checkpoint that does not fit (unreadable, another config, a model or
  estimator of another shape) raises `CheckpointMismatch` naming the file and
  what differs; nothing is loaded from it.
- Another device type (`device=auto`: written on a CPU, resumed on a GPU, or
  back; `state["device"]`, inferred from the RNG states in older files): the
  tensors load onto this run's device and the CPU RNG state is restored, but
  the data generator's state and the CUDA RNG state do not carry over between
  device types: they are re-seeded from (seed, step) (`reseed`), the other
  device's RNG state is skipped, and a RuntimeWarning names both types. The
  continuation is deterministic, not the uninterrupted run's draws.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

FORMAT = 2      # 2: the interval meter keeps per-step values, not running sums
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
TAG = "checkpoint"


def path_for(cfg, chash: str) -> Path:
    from ..tracking.writable import checkpoint_folder
    return checkpoint_folder(cfg) / f"{chash}.pt"


@dataclass
class Checkpointing:
    """What the trainer needs to write checkpoints of one run."""
    path: Path
    run_id: str
    config_hash: str
    config: dict                        # resolved: names what differs on a mismatch
    every: Optional[int] = None         # train.checkpoint_every
    sync: Callable[[], None] = field(default=lambda: None)   # drain the metric sink

    def due(self, done: int, steps: int) -> bool:
        return self.every is not None and done % self.every == 0 and done < steps


class CheckpointMismatch(ValueError):
    def __init__(self, path: Path, what: str):
        super().__init__(f"checkpoint {path} does not fit this run: {what}; delete the file, "
                         f"or run with rerun=true to start afresh")


def chain(signum: int, previous) -> None:
    """After the run is recorded: the handler that was installed before ours
    (submitit's requeue on SIGUSR2), if it was a Python callable; then, or
    otherwise, exit with status 128 + signum, as the signal itself would."""
    if callable(previous):
        previous(signum, None)
    raise SystemExit(128 + signum)


class Preempted(Exception):
    """A stop signal arrived; the checkpoint of `step` is on disk at `path`."""

    def __init__(self, signum: int, step: Optional[int], path: Path, previous,
                 failed: Optional["WriteFailed"] = None):
        self.signum, self.step, self.path, self.previous = signum, step, path, previous
        self.failed = failed        # the checkpoint at the signal could not be written
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        name = signal.Signals(self.signum).name
        if self.failed is not None:
            return f"preempted by {name}; {self.failed}"
        return f"preempted by {name}: checkpoint at step {self.step}; rerun the same command to resume"

    def chain(self) -> None:
        chain(self.signum, self.previous)


class StopSignals:
    """Context manager: while inside, SIGNALS only set `caught` (the first
    one's number); the previous handlers come back on exit. Python handles
    signals in the main thread only; elsewhere (a worker thread) nothing is
    installed and the process keeps its handlers."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.caught: Optional[int] = None
        self.previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.caught is None:
            self.caught = signum

    def __enter__(self) -> "StopSignals":
        if self.enabled:
            for s in SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.previous.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)   # None: set outside Python


# -- the state ----------------------------------------------------------------
_SCALARS = (bool, int, float, str, type(None))


def scalar_attrs(module: torch.nn.Module) -> dict:
    """Plain scalar attributes of a module and its submodules ('net.0.tau'),
    which state_dict leaves out: a temperature that a schedule anneals."""
    out = {}
    for prefix, m in module.named_modules():
        for k, v in vars(m).items():
            if not k.startswith("_") and k != "training" and isinstance(v, _SCALARS):
                out[f"{prefix}.{k}" if prefix else k] = v
    return out


def set_scalar_attrs(path: Path, module: torch.nn.Module, attrs: dict) -> None:
    have = scalar_attrs(module)
    if set(have) != set(attrs):
        raise CheckpointMismatch(path, f"estimator attributes differ "
                                       f"({_diff(set(attrs), set(have))})")
    for key, v in attrs.items():
        prefix, _, name = key.rpartition(".")
        setattr(module.get_submodule(prefix), name, v)


def rng_state(device: torch.device) -> dict:
    cuda = {"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
    return {"cpu": torch.get_rng_state(), **cuda}


def set_rng_state(state: dict, device: torch.device, seed: int) -> None:
    """The saved states; on CUDA without a saved CUDA state (a checkpoint of
    a CPU run), torch.cuda.manual_seed(seed) instead."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda":
        if "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], device)
        else:
            torch.cuda.manual_seed(seed)


def device_of(state: dict) -> str:
    """The device type the checkpoint was written on (older files: the
    device whose RNG state it holds)."""
    return state.get("device") or ("cuda" if "cuda" in state["rng"] else "cpu")


def reseed(seed: int, step: int) -> int:
    """A seed for the states that do not carry over between device types."""
    return (seed * 1_000_003 + step * 7919 + 12_345) % 2**63


def _diff(saved: set, here: set, n: int = 5) -> str:
    parts = []
    if here - saved:
        parts.append(f"missing in the file: {sorted(here - saved)[:n]}")
    if saved - here:
        parts.append(f"not in this run: {sorted(saved - here)[:n]}")
    return "; ".join(parts)


def load_module(path: Path, what: str, module: torch.nn.Module, saved: dict) -> None:
    """load_state_dict, after checking names and shapes so that the error says
    which part of which file differs."""
    here = module.state_dict()
    problem = _diff(set(saved), set(here))
    shapes = [f"{k} {tuple(saved[k].shape)} in the file, {tuple(v.shape)} here"
              for k, v in here.items() if k in saved and saved[k].shape != v.shape]
    if problem or shapes:
        raise CheckpointMismatch(path, f"{what} state differs ({problem or '; '.join(shapes[:5])})")
    module.load_state_dict(saved)


def load_optimisers(path: Path, opts: dict, saved: dict) -> None:
    if set(opts) != set(saved):
        raise CheckpointMismatch(path, f"optimisers differ ({_diff(set(saved), set(opts))})")
    for name, opt in opts.items():
        here = [len(g["params"]) for g in opt.state_dict()["param_groups"]]
        there = [len(g["params"]) for g in saved[name]["param_groups"]]
        if here != there:
            raise CheckpointMismatch(path, f"{name} optimiser holds parameter groups of sizes "
                                           f"{there} in the file, {here} here")
        opt.load_state_dict(saved[name])


# -- the file -----------------------------------------------------------------
def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{socket.gethostname()}")


WRITE_FAILED = "checkpoint write failed: "     # a failure_reason that a rerun resumes after


class WriteFailed(RuntimeError):
    """A checkpoint could not be written (a full disk, an I/O error); the
    previous checkpoint, of step `kept` (None: there is none), is as it was."""

    def __init__(self, path: Path, error: BaseException, kept: Optional[int]):
        import errno
        import shutil
        from ..tracking.store import disk_full
        try:
            no_room = shutil.disk_usage(path.parent).free < 1 << 20
        except OSError:
            no_room = False
        if disk_full(error) is not None or no_room:     # torch's zip writer hides the errno
            cause = "disk full (ENOSPC)"
        elif isinstance(error, OSError) and error.errno in errno.errorcode:
            cause = f"{errno.errorcode[error.errno]} ({error.strerror})"
        else:
            cause = f"{type(error).__name__}: {str(error)[:200]}"
        then = (f"the previous checkpoint, of step {kept}, is kept: free space and rerun the "
                f"same command to resume" if kept is not None else
                "there is no earlier checkpoint: a rerun starts afresh")
        super().__init__(f"{WRITE_FAILED}{cause} writing {path}; {then}")


def save(path: Path, state: dict, kept: Optional[int] = None) -> None:
    """Atomically: a kill mid-write leaves the previous file (of step `kept`)
    as it was; a failed write raises WriteFailed and leaves it too."""
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, Exception):
            raise WriteFailed(path, e, kept) from e
        raise


_TMP = re.compile(r"\.pt\.tmp-(\d+)(?:-(.+))?$")
FOREIGN_STALE_S = 600.0     # a write takes well under a second; a tmp file this old is abandoned


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # another user's live process
        return True
    return True


def remove_stale_tmp(folder: Path, now: Optional[float] = None) -> list[Path]:
    """Remove the temporary files that writers killed mid-`save` left in
    `folder`: `<name>.pt.tmp-<pid>-<host>` of this host whose process is
    gone. A file of another host (a folder shared between nodes), or of an
    older version that named no host, may be a live write elsewhere: it is
    removed only once untouched for FOREIGN_STALE_S. Returns what was removed."""
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    host, gone = socket.gethostname(), []
    for f in folder.iterdir():
        m = _TMP.search(f.name)
        if m is None or not f.is_file():
            continue
        try:
            mine = m.group(2) == host
            if (not _alive(int(m.group(1)))) if mine else now - f.stat().st_mtime > FOREIGN_STALE_S:
                f.unlink()
                gone.append(f)
        except OSError:         # removed meanwhile, or not ours to remove: left as it is
            continue
    return gone


def read(path: Path, chash: str, resolved: dict) -> dict:
    """The checkpoint at `path`, checked to be one of this config."""
    from ..tracking import identity as I
    from ..tracking.identity import HASH_EXCLUDE, flatten
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- truncated, foreign, or of another torch
        raise CheckpointMismatch(path, f"it cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointMismatch(path, f"format {got!r}, this version reads format {FORMAT}")
    if state["config_hash"] != chash:
        a, b = flatten(I.hashed(state["config"])), flatten(I.hashed(resolved))
        keys = sorted(k for k in set(a) | set(b)
                      if a.get(k) != b.get(k) and k.split(".")[0] not in HASH_EXCLUDE)
        shown = ", ".join(f"{k}={a.get(k)!r} there, {b.get(k)!r} here" for k in keys[:5])
        raise CheckpointMismatch(path, f"it is of config_hash {state['config_hash']}, this "
                                       f"run's is {chash} ({shown or 'the same keys'})")
    return state


# -- resuming a run (bench.job.runner) -------------------------------------------
@dataclass
class Resume:
    run_id: str                 # the MLflow run to continue
    tags: dict                  # its tags and status when it stopped
    status: str
    state: dict                 # its checkpoint
    logged: dict                # metric key -> last step already in the store


def resumable(run, lost_after_s: float) -> bool:
    """Ended KILLED (a stop signal, Ctrl-C), lost (its process died), or
    FAILED writing a checkpoint (its previous one is whole)."""
    from ..tracking import liveness as L
    status = run.info.status
    return (status == "KILLED" or L.is_lost(run, lost_after_s) or (
        status == "FAILED" and run.data.tags.get("failure_reason", "").startswith(
            (L.LOST_PREFIX, WRITE_FAILED))))


def find_resume(c, exp_id: str, chash: str, path: Path, lost_after_s: float,
                resolved: dict) -> Optional[Resume]:
    """The run to continue: the latest run of this config, if it is
    `resumable` and the checkpoint at `path` is its own."""
    from .owner import latest
    run = latest(c, exp_id, chash)
    if run is None or not resumable(run, lost_after_s) or not path.is_file():
        return None
    state = read(path, chash, resolved)
    if state["run_id"] != run.info.run_id:     # left by an earlier run of the config
        print(f"[bench] {path} belongs to run {state['run_id']}, not to the latest run of this "
              f"config ({run.info.run_id}): starting afresh", flush=True)
        return None
    rid = run.info.run_id
    return Resume(rid, dict(run.data.tags), run.info.status, state, logged_steps(c, rid))


def logged_steps(c, run_id: str) -> dict:
    """Metric key -> the highest step already in the store (one read per key)."""
    from ..tracking import store as S
    keys = S.retrying(c.get_run, run_id).data.metrics
    return {k: max(m.step for m in S.retrying(c.get_metric_history, run_id, k)) for k in keys}


def skip_logged(log, logged: dict):
    """`log` without the points whose (key, step) the store already holds:
    the metric sink writes steps in order, so those are the steps up to each
    key's last one."""
    def write(step: int, metrics: dict) -> None:
        fresh = {k: v for k, v in metrics.items() if step > logged.get(k, -1)}
        if fresh:
            log(step, fresh)
    return write


def reopen(c, resume: Resume, tags: dict) -> None:
    """The run RUNNING again, with a fresh heartbeat (written first, so that no
    reaper takes it for lost), this job's tags and where it resumed from."""
    from ..tracking import liveness as L, sink as W, store as S
    run_id, old = resume.run_id, resume.tags
    new = {k: v for k, v in tags.items() if k != "git_commit"}
    if tags.get("git_commit") != old.get("git_commit"):
        new["resumed_git_commit"] = tags.get("git_commit")
    W.set_tags(c, run_id, {**new, L.TAG: L.beat(), "resumed_from_step": resume.state["step"],
                           "resume_count": int(old.get("resume_count", 0)) + 1,
                           "resumed_after": old.get("failure_reason", resume.status)})
    if "failure_reason" in old:
        S.forgiving(c.delete_tag, run_id, "failure_reason")     # gone already: nothing to delete
    S.retrying(c.update_run, run_id, status="RUNNING")
