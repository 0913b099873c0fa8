"""Results regenerated from the MLflow store (`python -m bench.tables`):

    store    reading a study (runs, parents, skips) and metric curves
    tables   markdown/CSV tables; `main` is `python -m bench.tables`
    format   number formatting and markdown helpers shared by tables and study
    plots    figures
    study    reference-study summaries (`python -m bench.results.study`)
"""
