"""Where runs are logged.

`MLFLOW_TRACKING_URI` wins when set (a shared `mlflow server`, say); otherwise
the store is `sqlite:///<absolute path>/mlflow.db` in the directory the command
was started from. The path is made absolute before Hydra changes into per-job
directories, or every job would get a store of its own.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

DEFAULT_DB = "mlflow.db"


def resolve_tracking_uri(start_dir: Optional[str] = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            # sqlite:///relative.db is relative to the cwd of whoever opens it
            rel = uri[len("sqlite:///"):]
            return "sqlite:///" + str((Path(start_dir or os.getcwd()) / rel).resolve())
        return uri
    return "sqlite:///" + str((Path(start_dir or os.getcwd()) / DEFAULT_DB).resolve())
