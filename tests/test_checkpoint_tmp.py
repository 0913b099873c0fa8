"""Temporary checkpoint files left by a writer killed mid-save (kill -9
between open and os.replace) are removed by the next run using the folder,
and only those: a live writer's file stays, here or on another node."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.job import checkpoint as CK
from tests.processes import job_env


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    host, dead, old = socket.gethostname(), _dead_pid(), time.time() - 3600    # > FOREIGN_STALE_S
    files = {
        "dead here": folder / f"a.pt.tmp-{dead}-{host}",
        "live here": folder / f"b.pt.tmp-{os.getpid()}-{host}",
        "elsewhere, fresh": folder / f"c.pt.tmp-{dead}-other-node",
        "elsewhere, old": folder / f"d.pt.tmp-{dead}-other-node",
        "no host, fresh": folder / f"e.pt.tmp-{dead}",
        "no host, old": folder / f"f.pt.tmp-{dead}",
        "a checkpoint": folder / "g.pt",
    }
    for f in files.values():
        f.write_bytes(b"x")
    for k in ("elsewhere, old", "no host, old"):
        os.utime(files[k], (old, old))
    return files


KEPT = {"live here", "elsewhere, fresh", "no host, fresh", "a checkpoint"}


def test_only_the_files_of_gone_writers_are_removed(tmp_path):
    files = _plant(tmp_path / "ck")
    removed = CK.remove_stale_tmp(tmp_path / "ck")
    assert {k for k, f in files.items() if f.exists()} == KEPT
    assert sorted(removed) == sorted(f for k, f in files.items() if k not in KEPT)
    assert CK.remove_stale_tmp(tmp_path / "missing") == []


def test_save_names_its_temporary_file_by_pid_and_host(tmp_path, monkeypatch):
    seen = []
    real = CK.os.replace
    monkeypatch.setattr(CK.os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    CK.save(tmp_path / "x.pt", {"a": 1})
    assert seen == [f"x.pt.tmp-{os.getpid()}-{socket.gethostname()}"]


def test_the_next_run_using_the_folder_removes_them(tmp_path):
    files = _plant(tmp_path / "ck")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "bench.run", "train.steps=3", "train.log_every=1",
                          "train.eval_every=3", "eval.grad_stats=false",
                          f"train.checkpoint_dir={tmp_path / 'ck'}"],
                         cwd=tmp_path, env=job_env(uri), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert {k for k, f in files.items() if f.exists()} == KEPT
    assert "removed 3 temporary checkpoint file(s)" in out.stdout
