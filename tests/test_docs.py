"""The documentation is part of the suite: the benchmarks page is generated from the committed results,
the README stays short and keeps the two commands, and every relative link leads somewhere."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks.report import render, render_file
from benchmarks.results import Result, read, read_run, write_run

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "results" / "latest.json"
PAGE = REPO / "docs" / "benchmarks.md"
README_MAX_BYTES = 12 * 1024
# The two commands a newcomer types first; CI runs the second (.ci/run).
COMMANDS = (
    "scripts/setup.sh && .venv/bin/python -m jobs.main",
    "scripts/setup.sh --test && .venv/bin/python -m pytest",
)
DOCUMENTS = [README, REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def test_benchmarks_page_is_the_rendering_of_the_committed_results():
    expected = render_file(RESULTS)
    assert PAGE.read_text() == expected, (
        "docs/benchmarks.md is generated, never edited by hand: "
        ".venv/bin/python -m benchmarks.report benchmarks/results/latest.json --out docs/benchmarks.md"
    )


def test_readme_is_at_most_12_kb():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size:,} bytes (at most {README_MAX_BYTES:,}): move detail to docs/"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_holds_the_two_commands_verbatim(command):
    assert command in README.read_text()


def _prose(text: str) -> str:
    """The Markdown without code blocks and code spans, where brackets are code, not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in _HEADING.findall(_FENCE.sub("", path.read_text()))}


def relative_links(path: Path) -> list[str]:
    prose = _prose(path.read_text())
    targets = _INLINE_LINK.findall(prose) + _REFERENCE_LINK.findall(prose)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]  # no http:, mailto:


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_an_existing_file(doc):
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target}: no {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_the_link_check_sees_links_and_skips_code(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "See [a](a.md#part), [site](https://example.com) and ![img](img/x.png).\n"
        "`[not](a link)`\n```\n[nor](this)\n```\n[ref]: ref.md\n"
    )
    assert relative_links(doc) == ["a.md#part", "img/x.png", "ref.md"]
    assert _slug("The landing object -> case path") == "the-landing-object---case-path"
    assert _slug("Spark jobs on `AWS`") == "spark-jobs-on-aws"


# --- the results file and its page ------------------------------------------------------------------


def _results() -> list[Result]:
    return [
        Result(
            "curate",
            "curated materialization, 2,000,000 records",
            25.0,
            reference="DuckDB",
            reference_value=12.5,
            target=2.0,
        ),
        Result(
            "forecast",
            "training",
            400.0,
            reference="seasonal naive",
            reference_value=20.0,
            target=300,
            target_on="value",
        ),
        Result(
            "nab",
            "NAB score, standard",
            75.09,
            "score",
            reference="perfect detector",
            reference_value=100.0,
            higher_is_better=True,
            note="a | in a note",
        ),
    ]


def test_a_run_round_trips_with_its_metadata_and_renders_every_figure(tmp_path):
    metadata = {
        "date": "2026-12-04T14:20:00+00:00",
        "cores": 2,
        "load_average_start": 0.5,
        "quick": False,
        "commit": "0123abcd",
        "benchmarks": [{"name": "curate", "seconds": 300.0, "load_average_end": 1.9, "exit_code": 0}],
    }
    path = tmp_path / "run.json"
    write_run(path, _results(), metadata)
    results, read_metadata = read_run(path)
    assert results == _results() and read_metadata == metadata
    assert read(path) == _results()

    page = render(results, read_metadata)
    assert page == render_file(path)
    assert "| 2026-12-04T14:20:00+00:00 |" in page and "| 2 cores |" in page and "`0123abcd`" in page
    assert "| curated materialization, 2,000,000 records | 25.0 s | DuckDB: 12.5 s | 2.00 | ratio <= 2 | met |" in page
    assert "| training | 400.0 s | seasonal naive: 20.0 s | 20.00 | <= 300 s | **MISSED** |" in page
    assert "| 75.09 score | perfect detector: 100.00 score | 0.75 |  |  | a \\| in a note |" in page
    assert "| curate | 300 s | 1.90 | 0 |" in page


def test_an_old_list_form_file_still_reads_and_renders(tmp_path):
    # What python -m benchmarks --out wrote before it recorded the run: a list with ratio and met.
    path = tmp_path / "old.json"
    path.write_text(json.dumps([{**r.__dict__, "ratio": r.ratio, "met": r.met} for r in _results()]))
    results, metadata = read_run(path)
    assert results == _results() and metadata == {}
    assert "holds no run metadata" in render_file(path)


def test_python_m_benchmarks_records_the_run_and_renders_the_page(tmp_path, monkeypatch):
    import subprocess

    from click.testing import CliRunner

    import benchmarks.__main__ as runner

    real_run = subprocess.run

    def fake_benchmark(args, **kwargs):  # what `python -m benchmarks.NAME --json FILE` leaves behind
        if "--json" not in args:
            return real_run(args, **kwargs)  # git, for the commit
        write_run(Path(args[args.index("--json") + 1]), _results()[:1], {})
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_benchmark)
    out, page = tmp_path / "results" / "latest.json", tmp_path / "benchmarks.md"
    result = CliRunner().invoke(
        runner.main, ["--quick", "--only", "curate", "--out", str(out), "--docs", str(page), "--logs", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    results, metadata = read_run(out)
    assert results == _results()[:1]
    assert metadata["quick"] is True and metadata["cores"] and metadata["date"]
    assert "load_average_start" in metadata and metadata["commit"]
    assert [b["name"] for b in metadata["benchmarks"]] == ["curate"]
    assert page.read_text() == render_file(out)


def test_a_partial_run_updates_only_its_benchmarks_and_says_when_each_was_measured(tmp_path, monkeypatch):
    """--update: the benchmarks run now replace theirs; the others keep their figures with the date
    and commit they were measured at, and the page shows both."""
    import subprocess

    from click.testing import CliRunner

    import benchmarks.__main__ as runner

    real_run = subprocess.run
    measured = {"curate": 25.0}

    def fake_benchmark(args, **kwargs):
        if "--json" not in args:
            return real_run(args, **kwargs)
        name = args[args.index("-m") + 1].removeprefix("benchmarks.")
        rows = [r for r in _results() if r.benchmark == name]
        rows = [Result(**{**asdict(r), "value": measured.get(name, r.value)}) for r in rows]
        write_run(Path(args[args.index("--json") + 1]), rows, {})
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_benchmark)
    out, page = tmp_path / "latest.json", tmp_path / "benchmarks.md"
    common = ["--quick", "--out", str(out), "--logs", str(tmp_path)]
    first = CliRunner().invoke(runner.main, [*common, "--only", "curate", "--only", "nab"])
    assert first.exit_code == 0, first.output
    old = json.loads(out.read_text())
    old["metadata"]["commit"], old["metadata"]["date"] = "0" * 40, "2026-11-01T00:00:00+00:00"
    out.write_text(json.dumps(old))

    measured["curate"] = 20.0
    second = CliRunner().invoke(runner.main, [*common, "--only", "curate", "--update", "--docs", str(page)])
    assert second.exit_code == 0, second.output
    results, metadata = read_run(out)
    assert [(r.benchmark, r.value) for r in results] == [("curate", 20.0), ("nab", 75.09)]
    entries = {b["name"]: b for b in metadata["benchmarks"]}
    assert entries["nab"]["commit"] == "0" * 40 and entries["nab"]["date"].startswith("2026-11-01")
    assert entries["curate"]["commit"] != "0" * 40
    assert "`000000000000`" in page.read_text() and "partial run" in page.read_text()
    full = CliRunner().invoke(runner.main, ["--out", str(out), "--logs", str(tmp_path), "--only", "nab", "--update"])
    assert full.exit_code != 0 and "other sizes" in str(full.exception)  # a full run over --quick figures
