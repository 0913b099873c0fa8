"""Empty MLflow sqlite stores for tests.

Creating a sqlite store runs every schema migration (seconds), so one empty
store is made per process and copied for each test that needs one.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient


@functools.lru_cache(maxsize=None)
def template_db() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mlflow_template_"))
    atexit.register(shutil.rmtree, folder, True)
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()   # creates the tables
    return folder / "mlflow.db"


def empty_db(folder: Path) -> str:
    """A new, migrated, empty sqlite store in folder; returns its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(template_db(), folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"
