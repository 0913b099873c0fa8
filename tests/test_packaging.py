"""A non-editable `pip install .` works on its own: the configs ship as the
package `bench_conf`, and `python -m bench.run` runs from any directory."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.processes import ROOT


def test_every_package_is_listed_in_pyproject():
    """pyproject.toml lists packages explicitly (conf/ installs as bench_conf):
    a new sub-package that is not listed would be missing from an install."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("bench", "estimators", "models", "hydra_plugins")
             for p in (ROOT / top).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found <= listed, f"not in pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
    assert "bench_conf" in listed


@pytest.mark.slow
def test_non_editable_install_runs_from_another_directory(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    src = tmp_path / "src"           # a copy: setuptools builds in the source tree
    for name in ("bench", "estimators", "models", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # the dependencies are this environment's; the package itself is installed anew
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([str(py), "-c", "import bench, bench_conf; from bench.config import conf_dir; "
                            "print(bench.__file__); print(conf_dir())"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
    site = str(venv / "lib")
    assert where.returncode == 0 and all(line.startswith(site) for line in where.stdout.split()), \
        where.stdout + where.stderr
    out = subprocess.run([str(py), "-m", "bench.run", "train.steps=5", "train.eval_every=5",
                          "train.log_every=5", "eval.grad_samples=4"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "FINISHED" in out.stdout and (elsewhere / "mlflow.db").is_file()
