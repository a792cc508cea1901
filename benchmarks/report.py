"""docs/benchmarks.md, rendered from a results file so that no figure is ever copied by hand.

    .venv/bin/python -m benchmarks.report benchmarks/results/latest.json --out docs/benchmarks.md
    .venv/bin/python -m benchmarks.report RESULTS.json            # to stdout

The page is the hand-written introduction below (what each benchmark measures, its target, how to
run them, how to read the figures), then the run's metadata and one table per benchmark, all from
the JSON that ``python -m benchmarks --out FILE`` writes (``--docs PAGE`` renders this page at the
end of a run). ``render`` is a pure function of the file: tests/test_docs.py checks that the
committed page is exactly the rendering of benchmarks/results/latest.json, so a hand edit fails CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from benchmarks.results import Result, read_run

COMMAND = "python -m benchmarks.report benchmarks/results/latest.json --out docs/benchmarks.md"

INTRO = """\
# Benchmarks

Every speed and quality target of the project is a benchmark under `benchmarks/`, never a timed unit
test. Each one reports its figure beside a **reference measured in the same run** on the same
machine, so the ratio, not the seconds, is what carries from one machine or load to another; where
the project has a target, it is on that ratio or on the figure itself, and each table says whether
it was met.

## How to run them

```bash
.venv/bin/python -m benchmarks                 # every benchmark at full size (about an hour on 2 cores)
.venv/bin/python -m benchmarks --quick         # smoke sizes
.venv/bin/python -m benchmarks --only curate --only latency     # some of them (--skip leaves some out)
.venv/bin/python -m benchmarks --quick --seed 3  # another simulated fleet (demo, curate, forecast, latency, soak, api)
.venv/bin/python -m benchmarks.curate --quick  # one benchmark on its own, with its own table
# this page: record a run and render it (commit both files)
.venv/bin/python -m benchmarks --quick --out benchmarks/results/latest.json --docs docs/benchmarks.md
# re-render only
.venv/bin/python -m benchmarks.report benchmarks/results/latest.json --out docs/benchmarks.md
```

Each benchmark runs in its own process (`python -m benchmarks.NAME --json FILE`), so none inherits
another's imports or memory; its output goes to a log under `$TMPDIR/iot-lake-bench/logs`
(`--logs`). The run's JSON holds every result and the run's metadata: date, cores, load average,
quick or full sizes, git commit.

## What each one measures
"""

# benchmark -> (what it measures, the reference measured in the same run, the target)
MEASURES: dict[str, tuple[str, str, str]] = {
    "ui": (
        "`dagster dev` cold start until the UI serves every asset of the code location (fresh `DAGSTER_HOME` "
        "and lake; median of `--repeat` starts)",
        "the same for a one-asset project: what `dagster dev` itself costs",
        "ratio <= 1.2",
    ),
    "demo": (
        "the README's main command, `python -m jobs.main`, on a fresh lake and `DAGSTER_HOME` (`--days`, `--devices`); "
        "from its runs' Dagster events, the share of its wall time that is orchestration (run creation and start, "
        "Pipes launches, dbt start-up, reporting events, imports, definitions load) rather than data work "
        "(simulation, Spark and SageMaker-contract jobs inside Pipes, dbt's node timings, the in-process data plane)",
        "DuckDB's curated data path over the same landed hours, in one pass",
        "240 s at the default size; orchestration <= 30% of the wall time",
    ),
    "dashboards": (
        "each Superset dashboard drawn in headless Chromium, from the navigation until every chart is drawn, "
        "on the warehouse of a fresh main job (`python -m jobs.main`); median of `--repeat` loads (the first "
        "after the warehouse was written draws uncached, the others from Superset's chart-data cache, keyed by "
        "the warehouse file's version)",
        "Superset's dashboard list until it shows the dashboards: the app without charts",
        "median <= 3 s per dashboard",
    ),
    "curate": (
        "the curated materialization of one landing hour of 2M records in 20 gzip objects "
        "(`telemetry_hourly_job` through Dagster, the Spark job on Sail through Pipes); also with the "
        "landing inventory, and peak memory of the process tree",
        "the same data path in DuckDB SQL on the same objects (reading the objects itself: the same rows written)",
        "landing inventory + curated materialization: ratio <= 1.5; peak memory: ratio <= 1.2",
    ),
    "history": (
        "curating the historian's extract into the curated layer: 90 days of 15-minute readings of 200 devices "
        "(6.9M rows; `--quick`: 14 days of 20) plus a second extract re-loading 1% of them, both in one run of "
        "the Spark job on Sail (`iot_lake/curated/history_job.py`: validation, quarantine, dedupe, MERGE, 1- and "
        "5-minute aggregates); wall time and peak memory of the process tree",
        "the same validation, dedupe, quarantine and aggregates in DuckDB SQL, written to Delta",
        "",
    ),
    "incremental": (
        "(part of `curate`) the 24th landing hour of a day against the first, on tables that already "
        "hold a day: the cost of a partition must not grow with the table",
        "hour 1 of the same day",
        "ratio <= 1.3",
    ),
    "growth": (
        "the cost of an hour with a month of history: one landing hour of 20 devices (10 s sampling) through "
        "the main job's path (landing inventory; curated telemetry and its 1-/5-minute aggregates; "
        "`deviations_job`; `warehouse_job`; `warehouse_hourly_job`, the hourly facts), each part one Dagster "
        "run, on tables holding 719 hours (30 days, made by copying an hour's rows back: "
        "`benchmarks/growth/history.py`)",
        "the same hour on tables holding one hour",
        "curated, deviations, hourly facts: ratio <= 1.3 each",
    ),
    "forecast": (
        "training (backtest of every candidate, refit of the best with conformal intervals) and the batch "
        "forecast of the next 24 h, 200 devices x 4 metrics x 14 days of 5-minute rows, run as the local "
        "SageMaker runner runs the entry scripts; the LightGBM model's backtest MASE",
        "statsforecast's seasonal naive on the same series",
        "300 s; 60 s; MASE ratio <= 1",
    ),
    "backtest": (
        "rolling-origin backtest (7 daily origins, each candidate refitted on the past, intervals calibrated on "
        "the 3 days before) on a simulated fleet and on NAB's realAWSCloudwatch series: the mean MASE and 80/95% "
        "coverage of LightGBM alone and of what the nightly training would have deployed at each origin (its "
        "choice from the 3 days before, among candidates calibrated on all 3); full runs only",
        "the better of the daily and the weekly seasonal naive; nominal coverage",
        "MASE ratio <= 1; coverage within 0.05",
    ),
    "realdata": (
        "the 17 real series of NAB's realAWSCloudwatch imported with `iot-lake import` and run through "
        "`python -m jobs.main --no-simulate` (curated, nightly training, hourly forecasts, deviations, cases); "
        "each case's start mapped back to its file's row and scored with the shared NAB tool; full runs only",
        "the stand-alone detector (`benchmarks.nab`'s) on the same files, scored the same way",
        "at most 5 points lost",
    ),
    "longwindow": (
        "30 days of 5-minute data for 3 devices (generated CSVs with gaps and jittered timestamps) imported "
        "with `iot-lake import` and run through `python -m jobs.main --no-simulate`: curated as one run, a "
        "nightly training and a one-run forecast range per day, deviations, warehouse; full runs only",
        "DuckDB's curated data path over the same landed hours, in one pass",
        "900 s",
    ),
    "latency": (
        "a landing object written -> its case in the case store, with `dagster dev` and its daemon running: "
        "through the streaming scorer (`iot-lake stream`, p95 of `--landings` objects, each on another device) "
        "and through Dagster's runs (landing sensor, telemetry run, deviations run); afterwards each planted "
        "series must have exactly one case",
        "the Dagster path in the same run; for it, the work inside it: telemetry run start -> deviations run end",
        "stream p95 <= 10 s; Dagster path 60 s",
    ),
    "sensor": (
        "a `landing_sensor` tick (one new object, from the previous cursor) on a local lake holding 30 days of "
        "landed objects (4 small ones an hour, weather files); also one listing of that whole history, what each "
        "tick cost before the sensor listed only the open hours",
        "the same tick on a lake holding 1 day",
        "ratio <= 1.2",
    ),
    "api": (
        "`iot-lake api` (a worker per core, no access log) over the main job's data (`python -m jobs.main`, "
        "10 devices, 3 days of history): p50 and "
        "p99 of `GET /devices/{id}/state` and `GET /cases` under 50 closed-loop clients on keep-alive connections, "
        "30 s per route; their requests per second; every non-2xx answer",
        "`GET /health` (no key; the newest curated time) under the same clients in the same run",
        "state p99 <= 50 ms; 0 non-2xx",
    ),
    "soak": (
        "`dagster-webserver` and `dagster-daemon` for `--minutes` (6) while the simulator delivers `--hours` (4) past "
        "hours in accelerated time (bad lines, duplicates, late records), the daemon and run workers killed -9 at "
        "seeded random moments and the daemon restarted; then every landed line must be in curated telemetry (by "
        "message id) or quarantine (by object and line) exactly once, no case doubled (and at least one opened, "
        "or that check checked nothing), the case of an incident planted in the scored hour opened exactly once, "
        "the outbox drained",
        "the lines landed, the kills survived, the runs failed and retried (reported beside the figures)",
        "0 missing; 0 duplicated; 0 duplicate cases; at least 1 case; the planted incident's case once; "
        "0 outbox rows pending",
    ),
    "nab": (
        "the anomaly scorer's normalised NAB scores (standard, low FP, low FN profiles) on NAB's development subset",
        "a perfect detector (100)",
        "",
    ),
}

NOTES = """\
Notes on the individual benchmarks:

- `curate` runs `telemetry_hourly_job` as three runs of its subsets (inventory, curated
  materialization, Great Expectations checks) in a fresh lake, and the DuckDB reference
  (`benchmarks/curate/duck.py`) in its own process; the two curated tables must agree. Inputs are
  cached under `$TMPDIR/iot-lake-bench` (`--workdir`); `--records`, `--objects`, `--day-devices`
  and `--skip throughput|incremental` change the run. `--quick` is 100k records and a single
  3-device day (its 24th hour against its first, without the warm-up day): the fixed start-up of
  Pipes and Sail dominates its ratios.
- `growth` builds its inputs once (`benchmarks/growth/lake.py`: a curated day, a seasonal-naive
  champion and its forecasts of the two hours, cached under `--workdir`), then primes two lakes
  with the hour before the measured one through the same path (the reference's priming is the hour
  that created the tables, in each row's note) and copies that hour's rows back over the rest of
  the month in one of them: curated, aggregates, deviations, forecasts and the warehouse's facts.
  The copies come in a few appends, as a month compacted by the nightly maintenance job; the
  measured hour's own day is full in the long lake and holds one hour in the reference, so a part
  that rebuilds the day (the hourly facts' daily batches) shows that too. Both lakes then score the
  hour before's deviations again, over their history, as a running deployment had, so they keep
  the series' scorer states for the measured hour (`iot_lake/detect/states.py`); the first hour of
  a day replays every series' stored rows instead, and the long lake's, timed last, is in the
  deviations row's note. `--quick` is 3 devices and 3 days (the 72nd hour); `--repeat` alternates
  the two lakes, each measurement a first run of the hour (the settled lakes are copied before the
  first and put back before each other: a re-run finds the hour's rows already curated), with the
  lakes flushed to disk first (the long lake's 2.5 GB copy written back during its runs cost up to a
  second); the note lists every measurement beside the median.
- `forecast --quick` simulates 20 devices instead of 200; the data is cached under `--workdir`.
- `latency` sets up a day of curated telemetry, a seasonal-naive champion and the forecasts of the
  hour and the next in a fresh lake, warms `dagster dev` up with the hour so far, then writes one
  object with a device's temperature 25 degrees off and waits for its case (none within 600 s
  fails it). Then it starts `iot-lake stream` beside `dagster dev` and times `--landings` (10) more
  objects, each on another device's temperature, from the write to the case in the store; once
  Dagster's runs of those hours have scored them too, each planted series must hold one case.
  The benchmark measures in the hour in progress, so with less than 5 minutes of it left it waits
  for the next hour and measures there; a run crossing the hour still delivers and curates both.
  What lies between the work and the latency is the sensors' polling (every 5 s) and run launches.
- `sensor` alternates the ticks of the two lakes (median of 60; `--quick`: 7 days, 10 ticks), so both
  see the same load; it takes seconds. It runs on a local directory: on S3 each listed folder is a
  LIST request, so the history's weight is larger there and the open-hours listing matters more.
- `api` runs the clients with autocannon (Node.js, `benchmarks/api/loadgen`, installed by
  `scripts/setup.sh --test`; a Python client topped out near 400 requests a second on 2 cores) on
  the same cores as the server, one read key each (the server's limit per key is raised past what a
  client sends: the limiter runs, but throttles none), over the registry's devices in turn. The
  server runs one worker per core with its access log off (`--access-log` measures it with the log:
  its line per request took a fifth or more of a worker's CPU, and a server under such load sits
  behind a proxy that logs requests); the table's title gives the command line. Each
  route's table row says how much of a core the clients took, and the same clients first drive a
  trivial ASGI app for as long: the generator's ceiling in the same run. A closed loop with no
  pause keeps 50 requests in the server at all times, so the latencies are mostly queueing: about
  50 divided by the requests per second (Little's law). `--lake` serves a lake the main job already
  ran on; `--quick` is 5 s per route.
- `soak` runs the webserver and the daemon as two processes (what `dagster dev` runs as one) so that
  the daemon can be killed alone; a run worker is a process a code server spawned for a run. Its
  setup curates the day before, registers a seasonal-naive champion and forecasts every soak hour,
  so deviations and cases follow the telemetry. Its checked cases come from the hour it ends in
  (the automation scores that hour and the one before), so a soak that crosses an hour, or starts early in one,
  runs on until that hour holds 15 minutes of data. Once that hour holds 10 minutes, it plants
  latency's incident there (a temperature series' last 10 minutes 25 degrees up), with a daemon
  and a run kill within a minute after it, so at least one case opens under kills whatever the
  simulator's own anomalies do. After the kills it waits (at most
  `--settle-timeout`) until no run is queued or in progress for 30 s, stops everything and checks
  the lake and the case store; `--quick` is 3 minutes and 2 hours.
- `nab` needs the shared NAB tool and corpus (`../shared/tools/nab`, `../shared/datasets/nab-dev`;
  `NAB_TOOL`, `NAB_DATA`). For scale, published standard-profile scores on the *full* corpus:
  ARTime 74.9, Numenta HTM 70.1, AWS Random Cut Forest 51.7; the development subset is not the
  full corpus, so they are not directly comparable, and a held-out score will be lower than the
  development score the detector was tuned on ([forecasting.md](forecasting.md)).

## Reading the figures

- Wall times move with other work on the cores: the load average at the start of the run and at
  the end of each benchmark is recorded. Compare runs made on a quiet machine, and compare ratios.
- `--quick` runs are smoke sizes: fixed start-up costs dominate them, so their ratios are not
  judged against the targets in earnest. The full sizes are what the targets are for.
- "met" / "MISSED" is the target applied to the ratio or to the figure, as the target column says.
"""


def _measures_table() -> list[str]:
    return [
        "| benchmark | measures | reference (same run) | target |",
        "| --- | --- | --- | --- |",
        *(f"| `{name}` | {what} | {reference} | {target} |" for name, (what, reference, target) in MEASURES.items()),
    ]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(value: float, unit: str) -> str:
    return f"{value:,.2f}" if unit in ("MASE", "score") else f"{value:,.1f}"


def _with_unit(value: float, unit: str) -> str:
    return f"{_number(value, unit)} {unit}".strip()


def target_text(r: Result) -> str:
    if r.target is None:
        return ""
    want = ">=" if r.higher_is_better else "<="
    return f"ratio {want} {r.target:g}" if r.target_on == "ratio" else f"{want} {r.target:g} {r.unit}".strip()


def verdict(r: Result) -> str:
    return "" if r.met is None else ("met" if r.met else "**MISSED**")


def _reference(r: Result) -> str:
    if r.reference_value is None:
        return r.reference or ""
    figure = _with_unit(r.reference_value, r.unit)
    return f"{r.reference}: {figure}" if r.reference else figure


def _metadata_section(metadata: dict[str, Any]) -> list[str]:
    if not metadata:
        return [
            "## The run",
            "",
            "The results file holds no run metadata (a list-form file, from before `python -m benchmarks`",
            "recorded it): its date, machine, load and sizes are not known. Record a new run to replace it.",
            "",
        ]

    def known(key: str) -> Any:
        value = metadata.get(key)
        return "not recorded" if value is None else value

    quick = metadata.get("quick")
    sizes = "not recorded" if quick is None else ("`--quick` (smoke sizes)" if quick else "full")
    commit = metadata.get("commit")
    lines = [
        "## The run",
        "",
        "| | |",
        "| --- | --- |",
        f"| date (UTC) | {_cell(known('date'))} |",
        f"| machine | {_cell(known('cores'))} cores |",
        f"| load average (1 min) at the start | {_cell(known('load_average_start'))} |",
        f"| sizes | {sizes} |",
        f"| git commit | {f'`{commit}`' if commit else 'not recorded'} |",
    ]
    if metadata.get("note"):
        lines.append(f"| note | {_cell(metadata['note'])} |")
    lines.append("")
    runs = metadata.get("benchmarks") or []
    stamped = any("commit" in b for b in runs)  # a partial run over an earlier one (--update)
    if runs:
        lines += [
            "| benchmark | wall time | load average at its end | exit code |"
            + (" date (UTC) | commit |" if stamped else ""),
            "| --- | ---: | ---: | ---: |" + (" --- | --- |" if stamped else ""),
            *(
                f"| {_cell(b['name'])} | {b['seconds']:.0f} s | {b['load_average_end']:.2f} | "
                f"{b['exit_code']}{' (no results)' if b['exit_code'] else ''} |"
                + (
                    f" {_cell(b.get('date') or 'not recorded')} | `{(b.get('commit') or 'not recorded')[:12]}` |"
                    if stamped
                    else ""
                )
                for b in runs
            ),
            "",
        ]
    return lines


def render(results: list[Result], metadata: dict[str, Any]) -> str:
    """The whole page: the introduction, the run's metadata, a table per benchmark."""
    lines = [
        f"<!-- Generated by `{COMMAND}` from the results file; do not edit by hand (tests/test_docs.py). -->",
        "",
        INTRO.rstrip("\n"),
        "",
        *_measures_table(),
        "",
        NOTES.rstrip("\n"),
        "",
        *_metadata_section(metadata),
        "## Results",
        "",
    ]
    if not results:
        lines += ["The results file holds no results.", ""]
    by_benchmark: dict[str, list[Result]] = {}
    for r in results:
        by_benchmark.setdefault(r.benchmark, []).append(r)
    for name, rows in by_benchmark.items():
        lines += [
            f"### {name}",
            "",
            "| measure | value | reference | ratio | target | verdict | note |",
            "| --- | ---: | --- | ---: | --- | --- | --- |",
            *(
                "| "
                + " | ".join(
                    _cell(c)
                    for c in (
                        r.measure,
                        _with_unit(r.value, r.unit),
                        _reference(r),
                        "" if r.ratio is None else f"{r.ratio:.2f}",
                        target_text(r),
                        verdict(r),
                        r.note,
                    )
                )
                + " |"
                for r in rows
            ),
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_file(path: str | Path) -> str:
    return render(*read_run(path))


@click.command()
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the page there.")
def main(results: Path, out: Path | None) -> None:
    """Render RESULTS (the JSON of `python -m benchmarks --out`) as the Markdown page docs/benchmarks.md."""
    page = render_file(results)
    if out is None:
        click.echo(page, nl=False)
    else:
        out.write_text(page)
        click.echo(f"wrote {out}", err=True)


if __name__ == "__main__":
    main()
