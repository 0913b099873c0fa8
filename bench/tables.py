"""Entry point: tables and figures from the MLflow store.

    python -m bench.tables                        # the experiment with the most recent run
    python -m bench.tables --experiment toy --out results/toy

The work is in bench.results (store reading, tables, plots).
"""
from bench.results.tables import main

if __name__ == "__main__":
    raise SystemExit(main())
