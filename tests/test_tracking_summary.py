"""The sweep summary: its reasons (one line, long numbers shortened, never cut
inside a number), the parent's description, and the saved view of the runs
table that the summary's URLs open in the MLflow UI (bench.tracking.ui)."""
import json
from types import SimpleNamespace

from bench.tracking import ui as U
from bench.tracking.summary import note_markdown, shorten


def test_long_numbers_are_shortened_and_the_cut_falls_between_words():
    reason = ("ConfigError: estimator='exact' is not valid (exact: K^D = 10^20 = "
              "100000000000000000000 configurations exceed max_configs=4096; raise it)")
    assert "1e+20 configurations" in shorten(reason, width=200)
    for width in range(20, 120, 7):
        short = shorten(reason, width=width)
        assert len(short) <= width and short.endswith("…")
        whole = shorten(reason, width=200).split()
        # every word kept is a whole word of the full reason: no cut inside a number
        assert short[:-1].split() == whole[:len(short[:-1].split())]


def test_short_reasons_are_left_alone_on_one_line():
    assert shorten("boom\n  at step 3") == "boom at step 3"


def test_digits_inside_a_run_id_are_not_a_number():
    reason = "same config FINISHED earlier as run d96828314175"
    assert shorten(reason) == reason
    assert shorten("run 12345678 and 1234567.5") == "run 1.23e+07 and 1234567.5"


# -- the MLflow UI: address, URLs, saved view -------------------------------

SID = "20260101-120000-ab12"


def test_the_ui_address_is_mlflow_ui_s_for_a_file_store_and_the_server_itself_otherwise():
    assert U.ui_address("sqlite:////data/mlflow.db") == (
        "http://127.0.0.1:5000", "mlflow ui --backend-store-uri sqlite:////data/mlflow.db")
    assert U.ui_address("http://tracking:5000/") == ("http://tracking:5000", None)


def test_runs_urls_open_the_saved_view_as_table_and_as_charts():
    key = U.view_key(SID)
    assert key == "sweep-20260101-120000-ab12"
    assert U.runs_url("http://127.0.0.1:5000", "7", key) == \
        "http://127.0.0.1:5000/#/experiments/7/runs?viewStateShareKey=sweep-20260101-120000-ab12"
    assert U.runs_url("http://127.0.0.1:5000", "7", key, chart=True) == \
        "http://127.0.0.1:5000/#/experiments/7/runs?viewStateShareKey=sweep-20260101-120000-ab12" \
        "&compareRunsMode=CHART"
    # the description's links: relative to the page, whatever address the UI has
    assert U.runs_url(".", "7", key) == "./#/experiments/7/runs?viewStateShareKey=" + key


def test_the_view_shows_the_sweep_and_the_runs_it_reused():
    assert U.view_filter(SID, ["p", "a", "b"], reused=False) == f"tags.sweep_id = '{SID}'"
    assert U.view_filter(SID, ["p", "a", "old"], reused=True) == \
        "attributes.run_id IN ('p', 'a', 'old')"
    many = [f"{i:032x}" for i in range(U.MAX_LISTED_RUNS + 1)]
    assert U.view_filter(SID, many, reused=True) == f"tags.sweep_id = '{SID}'"


def test_the_view_state_is_in_the_ui_s_format_and_fits_an_experiment_tag():
    ids = [f"{i:032x}" for i in range(U.MAX_LISTED_RUNS)]
    state = U.view_state(U.view_filter(SID, ids, reused=True))
    cols = state["selectedColumns"]
    assert cols[:4] == ["tags.`variant`", "tags.`conditioning`", "tags.`task`", "tags.`seed`"]
    assert {"metrics.`val/elbo`", "metrics.`val/kl`", "metrics.`grad/log10_var`"} <= set(cols)
    assert state["orderByKey"] == "metrics.`val/elbo`" and state["orderByAsc"] is False
    assert state["columnOrder"][:3] == ["0", U.RUN_NAME_COLUMN, U.CREATED_COLUMN]
    assert [s["name"] for s in state["compareRunSections"]][:2] == ["val", "grad"]
    # what save_view writes: MLflow caps experiment tag values at 20,000 characters
    envelope = {"name": f"sweep {SID}", "createdAt": 0, "updatedAt": 0, "state": json.dumps(state)}
    assert len(json.dumps(envelope)) < 20_000


def test_save_view_writes_the_envelope_the_ui_s_saved_views_read():
    calls = []
    client = SimpleNamespace(set_experiment_tag=lambda *a: calls.append(a))
    key = U.save_view(client, "7", SID, ["p", "a"], reused=False)
    (exp, tag, value), = calls
    assert exp == "7" and tag == "mlflow.sharedViewState." + key
    envelope = json.loads(value)
    # the UI requires a string name, a number createdAt and the state as a JSON string
    assert envelope["name"] == f"sweep {SID}" and isinstance(envelope["createdAt"], int)
    assert json.loads(envelope["state"])["searchFilter"] == f"tags.sweep_id = '{SID}'"


def _run(rid, job, elbo, status="FINISHED"):
    return SimpleNamespace(info=SimpleNamespace(run_id=rid, status=status),
                           data=SimpleNamespace(metrics={"val/elbo": elbo},
                                                tags={"job": job, "mlflow.runName": f"gumbel · s{job}"}))


def test_the_description_links_every_job_and_the_saved_view():
    kids, reused = [_run("b" * 32, "1", -20.0)], {"0": _run("a" * 32, "0", -21.0)}
    counts = {"sweep.finished": 1, "sweep.failed": 0, "sweep.skipped": 1, "sweep.killed": 0}
    urls = U.runs_url(".", "7", "k"), U.runs_url(".", "7", "k", chart=True)
    note = note_markdown(kids, reused, counts, "7", urls)
    assert note.count("](#/experiments/7/runs/") == 2            # one link per job
    assert "| 0 | [gumbel · s0](#/experiments/7/runs/" + "a" * 32 + ") | SKIPPED |" in note
    assert f"[runs table]({urls[0]})" in note and f"[charts]({urls[1]})" in note
    assert "Compare" not in note_markdown(kids, reused, counts, "7")
