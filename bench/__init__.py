"""The harness: Hydra runs and sweeps (`bench.run`), the MLflow store
(`bench.tracking`), and result tables regenerated from it (`bench.tables`)."""
