"""Extending the benchmark: a new estimator, conditioning type or task is one
file plus one config file, found by discovery, and an installed package adds
its own through entry points; the harness never names a component.

The throw-away components live in tests/plugins/ and are copied where a user
would put them: into a copy of this tree, or into a package installed with
pip. Both drive the real `python -m bench.run` and read the run back from
the MLflow store."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import estimators
import models
from tests.processes import ROOT, job_env
from tests.stores import empty_db

PLUGINS = Path(__file__).resolve().parent / "plugins"
QUICK = ["train.steps=6", "train.eval_every=6", "train.log_every=3", "train.batch_size=16",
         "eval.batch_size=32", "eval.iwae_samples=4", "eval.grad_samples=4",
         "eval.grad_batch_size=8", "device=cpu"]


def _string_literals(path: Path):
    """String constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def _python_files(*folders: str):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_harness_and_models_name_no_estimator():
    """Traits live on the estimator: no registered name appears as a string
    literal in bench/, models/ or the Hydra plugins (comments and docstrings aside)."""
    names = set(estimators.names())
    found = [f"{p.relative_to(ROOT)}:{line}: {s!r}" for p in _python_files("bench", "models", "hydra_plugins")
             for line, s in _string_literals(p) if s in names]
    assert not found, "estimator names in the harness:\n" + "\n".join(found)


def _conditioning_branches(source: str, names: set) -> list[int]:
    """Lines comparing the conditioning (a name, attribute or key so called)
    with a registered type's name; other "none"s (free-bits modes) are not it."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and "cond" in ast.unparse(node):
            consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
            lines += [node.lineno for v in consts if v in names]
    return lines


def test_model_families_do_not_branch_on_conditioning_names():
    """Conditioning types act through their hooks: no model or harness file
    compares the conditioning with a type's name."""
    names = set(models.conditioning.names())
    found = [f"{p.relative_to(ROOT)}:{line}" for p in _python_files("models", "bench")
             if p.parent.name != "conditioning"
             for line in _conditioning_branches(p.read_text(), names)]
    assert not found, "branches on a conditioning name:\n" + "\n".join(found)


def test_the_conditioning_check_would_fail():
    names = set(models.conditioning.names())
    assert _conditioning_branches("if self.conditioning == 'film':\n    pass\n", names) == [1]
    assert _conditioning_branches("if mode == 'none':\n    pass\n", names) == []


def test_the_harness_check_would_fail():
    """The literal check above catches a name where one is used."""
    sample = "def f(est):\n    '''mentions exact in a docstring'''\n    return est.name == 'vimco'\n"
    tmp = ROOT / "tests" / "plugins" / "_probe.py"
    tmp.write_text(sample)
    try:
        assert [s for _, s in _string_literals(tmp)] == ["vimco"]
    finally:
        tmp.unlink()


def _finished_runs(uri: str):
    from bench.tracking import store
    c = store.client(uri)
    exp = c.get_experiment_by_name("discrete-latent-bench")
    return [r for r in c.search_runs([exp.experiment_id]) if r.info.status == "FINISHED"]


def _run(cwd: Path, uri: str, *overrides: str, pythonpath: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "bench.run", *QUICK, *overrides], cwd=cwd,
                         env=job_env(uri, PYTHONPATH=pythonpath), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


@pytest.mark.slow
def test_one_file_and_one_yaml_each_in_a_copy_of_the_tree(tmp_path):
    """Exactly what the "Adding ..." sections of docs/ say, in a fresh copy:
    estimators/<name>.py + conf/estimator/<name>.yaml, models/conditioning/<name>.py
    + conf/conditioning/<name>.yaml, models/tasks/<name>.py + conf/task/<name>.yaml."""
    tree = tmp_path / "tree"
    for folder in ("bench", "estimators", "models", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PLUGINS / "score_loo.py", tree / "estimators" / "score_loo.py")
    (tree / "conf" / "estimator" / "score_loo.yaml").write_text("name: score_loo\nn_samples: 3\n")
    shutil.copy(PLUGINS / "gate.py", tree / "models" / "conditioning" / "gate.py")
    (tree / "conf" / "conditioning" / "gate.yaml").write_text("name: gate\n")
    shutil.copy(PLUGINS / "digits_even.py", tree / "models" / "tasks" / "digits_even.py")
    (tree / "conf" / "task" / "digits_even.yaml").write_text("name: digits_even\n")
    uri = empty_db(tmp_path)
    out = _run(tree, uri, "estimator=score_loo", "conditioning=gate", "task=digits_even",
               pythonpath=str(tree))
    assert "FINISHED" in out.stdout
    (run,) = _finished_runs(uri)
    tags = run.data.tags
    assert (tags["estimator"], tags["conditioning"], tags["task"]) == ("score_loo", "gate", "digits_even")
    assert "val/elbo" in run.data.metrics


@pytest.mark.slow
def test_an_installed_package_adds_components_through_entry_points(tmp_path):
    """A user's package, installed with pip into a folder on the path:
    entry points for the estimator and the conditioning type, and one for its
    config folder, so `python -m bench.run estimator=score_loo` needs no edit here."""
    pkg = tmp_path / "pkg"
    src = pkg / "bench_plugin_demo"
    (src / "conf" / "estimator").mkdir(parents=True)
    (src / "conf" / "conditioning").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "conf" / "__init__.py").write_text("")
    shutil.copy(PLUGINS / "score_loo.py", src / "score_loo.py")
    shutil.copy(PLUGINS / "gate.py", src / "gate.py")
    (src / "conf" / "estimator" / "score_loo.yaml").write_text("name: score_loo\nn_samples: 3\n")
    (src / "conf" / "conditioning" / "gate.yaml").write_text("name: gate\n")
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "bench-plugin-demo"
        version = "0.0.1"
        [project.entry-points."discrete_latent_bench.estimators"]
        score_loo = "bench_plugin_demo.score_loo"
        [project.entry-points."discrete_latent_bench.conditioning"]
        gate = "bench_plugin_demo.gate"
        [project.entry-points."discrete_latent_bench.conf"]
        bench_plugin_demo = "bench_plugin_demo.conf"
        [tool.setuptools]
        packages = ["bench_plugin_demo", "bench_plugin_demo.conf"]
        [tool.setuptools.package-data]
        "bench_plugin_demo.conf" = ["*/*.yaml"]
        """))
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", "--target", str(site), str(pkg)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    uri = empty_db(tmp_path)
    _run(tmp_path, uri, "estimator=score_loo", "conditioning=gate",
         pythonpath=f"{ROOT}:{site}")
    (run,) = _finished_runs(uri)
    assert (run.data.tags["estimator"], run.data.tags["conditioning"]) == ("score_loo", "gate")
