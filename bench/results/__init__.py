"""Results regenerated from the MLflow store (`python -m bench.tables`):

    store          reading a study (runs, parents, skips) and metric curves
    tables         the files `bench.tables` writes; `main` is `python -m bench.tables`
    aggregate      labels (variants), grouping keys, mean / se / 95% CI per group
    stats          t intervals, paired t-tests, Holm's correction
    paired         paired.md: estimators compared on the same seeds
    budget         budget.md: the bound at equal evaluations of f and equal seconds
    status         status.md: failed, killed, lost, superseded and skipped runs
    columns        what every column and axis means (legends, axis labels)
    format         number formatting (the digit rule) and markdown helpers
    plots          figures; lines (one line per setting, spread over seeds),
                   compute_plots (bound against f-evaluations and seconds)
                   and grids (a sweep's sample grids) are its parts
    study          reference-study summaries (`python -m bench.results.study`)
"""
