"""The harness: Hydra runs and sweeps (`bench.run`), the MLflow store
(`bench.tracking`), and result tables regenerated from it (`bench.tables`).

Importing it first pins the sibling packages `models` and `estimators` to the
ones installed beside it, whatever the working directory holds (bench.siblings)."""
from . import siblings as _siblings

_siblings.pin()
