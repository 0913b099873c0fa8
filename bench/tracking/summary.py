"""The end of a sweep as a person sees it: the summary table printed in the
terminal, the same table as the parent run's description in the MLflow UI
(markdown, every job linked to its run), and the exit status.

Exit status of `python -m bench.run`: 0 when every job FINISHED or was skipped
as already finished; 2 for a configuration error (nothing is run);
3 when a sweep ran but some of its jobs FAILED or were KILLED (their
`failure_reason` is in the table); 1 when the tracking store stayed
unavailable for longer than `mlflow.patience_s`, or for any other error;
4 when another live process trains the run's config (bench.job.owner);
128 + the signal number for a sweep stopped by a signal (bench.tracking.stopping).
"""
from __future__ import annotations

import re
import sys
from typing import Any

EXIT_STORE, EXIT_CONFIG, EXIT_FAILED_JOBS = 1, 2, 3
NOTE_TAG = "mlflow.note.content"     # what the MLflow UI shows as a run's description
COLS = ("job", "run", "status", "val/elbo", "reason")


def refuse(message: object) -> None:
    """End the command on a configuration error: the message, no traceback."""
    print(f"Error in the configuration: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)


def shorten(reason: str, width: int = 80) -> str:
    """One line of at most `width` characters, long numbers in 3 significant
    digits and the cut at a word, never inside a number."""
    # whole numbers only: digits inside a word (a run id like d96828314175) stay as they are
    text = re.sub(r"(?<![\w.])\d{7,}(?![\w.])", lambda m: f"{float(m.group()):.3g}",
                  " ".join(reason.split()))
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width - 1)
    return text[: cut if cut > 0 else width - 1] + "…"


def _rows(kids: list, reused: dict[str, Any]) -> list[tuple]:
    """(job, run name, run id, status, val/elbo, reason) sorted by job number."""
    def row(job, r, status, reason):
        elbo = r.data.metrics.get("val/elbo")
        return (job, r.data.tags.get("mlflow.runName", ""), r.info.run_id, status,
                "" if elbo is None else f"{elbo:.3f}", reason)
    rows = [row(r.data.tags.get("job", ""), r, r.info.status,
                shorten(r.data.tags.get("failure_reason", ""))) for r in kids]
    # ours and short already: not shortened, which could read a run id as a number
    rows += [row(job, r, "SKIPPED", f"same config FINISHED earlier as run {r.info.run_id[:12]}")
             for job, r in reused.items()]
    return sorted(rows, key=lambda r: (not r[0].isdigit(), int(r[0]) if r[0].isdigit() else 0))


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.split('.')[1]} {v}" for k, v in counts.items())


def summary_table(kids: list, reused: dict[str, Any], counts: dict[str, int]) -> str:
    """One line per job: its run name (estimator variant, conditioning, task,
    seed), status, final val/elbo and reason; a skipped job shows the earlier
    FINISHED run it reuses."""
    rows = [(job, name, status, elbo, why) for job, name, _, status, elbo, why in _rows(kids, reused)]
    widths = [max(len(str(x)) for x in col) for col in zip(COLS, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    out = ["", "sweep summary: " + _counts(counts), line(COLS), line(["-" * w for w in widths])]
    return "\n".join(out + [line(r) for r in rows])


def note_markdown(kids: list, reused: dict[str, Any], counts: dict[str, int], exp_id: str,
                  urls: tuple[str, str] | None = None) -> str:
    """The summary as the parent's markdown description, each run a link;
    `urls` (runs table, chart view) open the sweep's saved view
    (bench.tracking.ui)."""
    lines = [f"**Sweep summary:** {_counts(counts)}", "",
             "| job | run | status | val/elbo | reason |", "|---|---|---|---|---|"]
    for job, name, rid, status, elbo, why in _rows(kids, reused):
        link = f"[{name or rid[:12]}](#/experiments/{exp_id}/runs/{rid})"
        lines.append(f"| {job} | {link} | {status} | {elbo} | {why.replace('|', '/')} |")
    if reused:
        lines += ["", "SKIPPED jobs reuse a FINISHED run of an earlier sweep with the same "
                  "config (tag `skipped.<job>` on this run); `bench.tables --sweep` counts them "
                  "in this sweep."]
    if urls:
        lines += ["", f"**Compare:** [runs table]({urls[0]}) · [charts]({urls[1]}): this sweep's "
                  "runs with the label tags and key metrics as columns, best val/elbo first (its "
                  "saved view, also under \"Saved views\"). Tables and figures: Artifacts, `tables/`."]
    return "\n".join(lines)
