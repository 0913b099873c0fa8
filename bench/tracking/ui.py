"""What the MLflow UI shows of a sweep beyond its runs: a saved view of the
runs table that one URL opens, and the tables and figures of `bench.tables`
attached to the sweep's parent run.

The UI keeps the runs table's columns, sort and chart layout in the browser.
The one place on the server it reads them from is a saved view: an experiment
tag `mlflow.sharedViewState.<key>` holding the view as JSON (what the UI's own
"Saved views" menu writes, and lists by name), opened by
`<ui>/#/experiments/<id>/runs?viewStateShareKey=<key>`. A URL alone carries the
filter and sort (`?searchFilter=...&orderByKey=...`) but not the columns, and
the UI ignores a saved view when the URL also names a filter or sort.
`&compareRunsMode=CHART` opens the same view as charts.

`save_view` writes one view per sweep (key `sweep-<sweep_id>`): the sweep's
runs, and the earlier runs it reused, with the label tags and the key final
metrics as columns, best `val/elbo` first, and in the chart view the `val`,
`grad`, `collapse` and `train` sections first. Sorting by a metric also shows
the runs flat instead of nested under their parent.
"""
from __future__ import annotations

import json
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Iterable, Sequence

from .store import retrying

UI_ADDRESS = "http://127.0.0.1:5000"     # where `mlflow ui` listens unless told otherwise
VIEW_TAG = "mlflow.sharedViewState."     # experiment tag prefix the UI reads saved views from
TAG_COLUMNS = ("variant", "conditioning", "task", "seed")
METRIC_COLUMNS = ("val/elbo", "val/iwae", "val/kl", "collapse/active_units", "grad/log10_var",
                  "cost/f_evals")
RUN_NAME_COLUMN, CREATED_COLUMN, DURATION_COLUMN = "attributes.`Run Name`", "runDateAndNestInfo", "duration"
WIDTHS = {"tags.`variant`": 150, "tags.`task`": 80, "tags.`seed`": 60}   # pixels; others 100
CHART_SECTIONS = ("val", "grad", "collapse", "train")   # chart view order; other prefixes follow
# A view of a sweep that reused runs lists its run ids (reused runs carry another
# sweep_id); past this many it filters on the sweep_id tag, within the 20,000
# characters of an experiment tag, and the reused runs are left to the description.
MAX_LISTED_RUNS = 200


def ui_address(uri: str) -> tuple[str, str | None]:
    """The address a person opens for this store, and the command that serves
    it there (None for a tracking server, which is its own UI)."""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/"), None
    return UI_ADDRESS, f"mlflow ui --backend-store-uri {uri}"


def view_key(sweep_id: str) -> str:
    return f"sweep-{sweep_id}"


def runs_url(address: str, experiment_id: str, key: str, chart: bool = False) -> str:
    """The runs page of the experiment with the saved view `key` applied."""
    url = (f"{address}/#/experiments/{experiment_id}/runs?"
           f"viewStateShareKey={urllib.parse.quote(key, safe='')}")
    return url + "&compareRunsMode=CHART" if chart else url


def view_filter(sweep_id: str, run_ids: Sequence[str], reused: bool) -> str:
    """The runs of the view, as the UI's search box takes them."""
    if reused and len(run_ids) <= MAX_LISTED_RUNS:
        return "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in run_ids) + ")"
    return f"tags.sweep_id = '{sweep_id}'"


def view_state(search_filter: str) -> dict:
    """The runs page state the UI restores: the keys of its URL (filter,
    sort) and of its per-browser table and chart state, in its own format."""
    columns = [f"tags.`{t}`" for t in TAG_COLUMNS] + [f"metrics.`{m}`" for m in METRIC_COLUMNS]
    return {
        "searchFilter": search_filter,
        "orderByKey": "metrics.`val/elbo`",
        "orderByAsc": False,
        "selectedColumns": columns,
        # labels first, then metrics, duration last, at widths that fit the chosen
        # columns into a 1,700-pixel window; ids as the UI's table names its columns
        "columnOrder": ["0", RUN_NAME_COLUMN, CREATED_COLUMN, *columns, DURATION_COLUMN],
        "columnWidths": {RUN_NAME_COLUMN: 230, **{c: WIDTHS.get(c, 100) for c in columns}},
        "runsHiddenMode": "SHOW_ALL",        # the UI draws only the first 10 runs otherwise
        # the UI adds a chart per metric into the section named by its prefix and
        # keeps the sections in this order (it sorts them by name unless reordered)
        "compareRunCharts": [],
        "compareRunSections": [{"uuid": f"bench-{s}", "name": s, "display": True,
                                "isReordered": False} for s in CHART_SECTIONS],
        "isAccordionReordered": True,
    }


def save_view(client, experiment_id: str, sweep_id: str, run_ids: Sequence[str],
              reused: bool) -> str:
    """Write the sweep's saved view (run_ids: parent, children and reused runs);
    returns its key."""
    key = view_key(sweep_id)
    now = int(time.time() * 1000)
    envelope = {"name": f"sweep {sweep_id}", "createdAt": now, "updatedAt": now,
                "state": json.dumps(view_state(view_filter(sweep_id, run_ids, reused)))}
    retrying(client.set_experiment_tag, experiment_id, VIEW_TAG + key, json.dumps(envelope))
    return key


def log_tables(client, run_id: str, files: Iterable[Path]) -> None:
    """Log bench.tables' files to a run: figures under tables/figures/, the rest under tables/."""
    for f in files:
        sub = "tables/figures" if f.parent.name == "figures" else "tables"
        retrying(client.log_artifact, run_id, str(f), artifact_path=sub)


def attach_tables(client, experiment: str, sweep_id: str, parent: str) -> list[Path]:
    """What `python -m bench.tables --sweep <sweep_id>` writes, written into a
    temporary folder and logged to the parent; returns the files (gone by then)."""
    # pandas, and matplotlib through write_results, only here: a sweep that
    # switches this off never imports them
    from ..results.store import load_study
    from ..results.tables import write_results

    study = load_study(client, experiment, sweep_id)
    with tempfile.TemporaryDirectory(prefix="bench-tables-") as tmp:
        written = write_results(client, study, Path(tmp))
        log_tables(client, parent, written)
    return written
