"""A checkpoint that cannot be written (a full disk, an I/O error): the
previous checkpoint stays whole and resumable, the run ends FAILED with a
reason that says ENOSPC / disk full and names the file, nothing is left
RUNNING, and the same command, once there is room, resumes the run."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.job import checkpoint as CK
from bench.job.runner import run_job
from bench.tracking import store as S
from tests.compose import compose_config
from tests.processes import job_env, stop_group

JOB = ["train.steps=40", "train.log_every=5", "train.eval_every=20", "eval.grad_stats=false",
       "train.checkpoint_every=10", "progress=false"]


def _runs(uri: str, name: str) -> list:
    c = S.client(uri)
    return S.search_pages(c, c.get_experiment_by_name(name).experiment_id)


def _enospc(path):
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def _zip_writer_error(path):
    """What torch.save raises on a full disk: its zip writer's error, the OSError only chained."""
    try:
        raise _enospc(path)
    except OSError as e:
        try:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos "
                               "33216 vs 33168") from e
        except RuntimeError as wrapped:
            return wrapped


@pytest.mark.parametrize("error", [_enospc, _zip_writer_error])
def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one_and_the_rerun_resumes(
        tracking_uri, tmp_path, monkeypatch, error):
    real, calls = torch.save, []

    def save(state, f, *a, **kw):
        calls.append(state["step"])
        if len(calls) == 2:              # the first checkpoint lands, the second meets a full disk
            raise error(f.name)
        return real(state, f, *a, **kw)
    monkeypatch.setattr(torch, "save", save)
    cfg = compose_config(JOB + [f"train.checkpoint_dir={tmp_path / 'ck'}"])
    with pytest.raises(SystemExit) as e:
        run_job(cfg)
    assert e.value.code == 1
    (run,) = _runs(tracking_uri, cfg.mlflow.experiment)
    path = Path(run.data.tags[CK.TAG])
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == (
        f"checkpoint write failed: disk full (ENOSPC) writing {path}; the previous checkpoint, "
        f"of step 10, is kept: free space and rerun the same command to resume")
    assert torch.load(path, weights_only=True)["step"] == 10
    assert [f.name for f in path.parent.iterdir()] == [path.name]    # no temporary file left

    monkeypatch.setattr(torch, "save", real)        # room again
    run_job(cfg)
    (again,) = _runs(tracking_uri, cfg.mlflow.experiment)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert again.data.tags["resumed_from_step"] == "10"
    assert "failure_reason" not in again.data.tags


def test_an_io_error_at_a_checkpoint_is_named_by_its_errno(tmp_path):
    err = CK.WriteFailed(tmp_path / "x.pt", OSError(errno.EIO, "Input/output error"), None)
    assert str(err) == (f"checkpoint write failed: EIO (Input/output error) writing "
                        f"{tmp_path / 'x.pt'}; there is no earlier checkpoint: a rerun starts afresh")


def _mount_tmpfs(folder: Path, size: str) -> str | None:
    """None when mounted, else why not (mount needs root: CI runs as root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a tmpfs needs root and mount(8)"
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"mount -t tmpfs refused: {done.stderr.strip()}"


@pytest.mark.slow
@pytest.mark.faults
def test_a_real_checkpoint_disk_that_fills_during_a_run(tmp_path, tracking_uri):
    """The checkpoint folder on a 4 MiB tmpfs, filled after the first
    checkpoint: exit 1 with one line naming ENOSPC and the file, the first
    checkpoint whole, and the same command resumes once space is freed."""
    disk = tmp_path / "disk"
    why = _mount_tmpfs(disk, "4m")
    if why:
        pytest.skip(why)
    try:
        args = [sys.executable, "-m", "bench.run", "train.steps=600", "train.log_every=20",
                "train.eval_every=300", "eval.grad_stats=false", "train.checkpoint_every=100",
                f"train.checkpoint_dir={disk}"]
        proc = subprocess.Popen(args, cwd=tmp_path, env=job_env(tracking_uri),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while not list(disk.glob("*.pt")):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.1)
            filler = disk / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
            t0 = time.monotonic()
            out, err = proc.communicate(timeout=300)
            took = time.monotonic() - t0
        finally:
            stop_group(proc)
        assert proc.returncode == 1, err[-3000:]
        (path,) = disk.glob("*.pt")
        lines = [line for line in err.splitlines() if "checkpoint write failed" in line]
        assert lines and "disk full (ENOSPC)" in lines[0] and str(path) in lines[0], err[-2000:]
        assert "Traceback" not in err
        kept = torch.load(path, weights_only=True)["step"]
        (run,) = _runs(tracking_uri, "discrete-latent-bench")
        assert run.info.status == "FAILED" and f"of step {kept}, is kept" in \
            run.data.tags["failure_reason"]
        print(f"full checkpoint disk: a clear error {took:.1f} s after the disk filled")

        filler.unlink()
        again = subprocess.run(args, cwd=tmp_path, env=job_env(tracking_uri), capture_output=True,
                               text=True, timeout=300)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    assert again.returncode == 0, again.stderr[-3000:]
    (done,) = _runs(tracking_uri, "discrete-latent-bench")
    assert done.info.run_id == run.info.run_id and done.info.status == "FINISHED"
    assert done.data.tags["resumed_from_step"] == str(kept)
