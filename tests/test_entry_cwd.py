"""The entry points and the library work from any directory: a working
directory holding its own `models`, `estimators` or `results` packages (most
ML repositories) does not shadow ours (bench.siblings)."""
from __future__ import annotations

import subprocess
import sys

from tests.processes import job_env

SHADOWS = ("models", "estimators", "results")


def _project(tmp_path):
    """A throw-away ML project: its own top-level packages, unrelated to ours."""
    for name in SHADOWS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHO = 'the user project {name}'\n")
    return tmp_path


def _run(cwd, uri, *args, timeout=180):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=job_env(uri),
                          capture_output=True, text=True, timeout=timeout)


def test_run_and_tables_from_a_project_with_its_own_models(tmp_path, tracking_uri):
    cwd = _project(tmp_path)
    out = _run(cwd, tracking_uri, "-m", "bench.run", "train.steps=20", "eval.grad_stats=false")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FINISHED" in out.stdout + out.stderr
    out = _run(cwd, tracking_uri, "-m", "bench.tables", "--out", str(tmp_path / "tables"))
    assert "Traceback" not in out.stderr and "has no attribute" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 0, out.stderr[-3000:]


def test_library_import_resolves_ours(tmp_path, tracking_uri):
    cwd = _project(tmp_path)
    code = ("import sys; sys.path.insert(0, '.'); import bench, models, estimators; "
            "import models.conditioning; print(models.__file__, estimators.__file__)")
    out = _run(cwd, tracking_uri, "-c", code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert str(tmp_path) not in out.stdout


def test_already_imported_foreign_models_is_refused_in_one_line(tmp_path, tracking_uri):
    """A process that imported its own `models` first cannot get ours: under
    `python -m` one line naming the path and exit 2, nothing created; as a
    library an ImportError with the same line."""
    cwd = _project(tmp_path)
    # what `python -m bench.run` does, after something imported the project's models
    as_main = ("import sys, runpy; sys.path.insert(0, ''); import models; sys.argv = ['-m']; "
               "runpy.run_module('bench.run', run_name='__main__', alter_sys=True)")
    out = _run(cwd, tracking_uri, "-c", as_main)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "models") in lines[0] and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*SHADOWS, "mlflow.db"])
    out = _run(cwd, tracking_uri, "-c", "import sys; sys.path.insert(0, ''); import models, bench")
    assert out.returncode == 1 and "ShadowedError" in out.stderr and str(tmp_path / "models") in out.stderr
