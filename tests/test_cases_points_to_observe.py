"""A long range scored in one run hands the case store only the points that can change a case
(``points_to_observe``): the cases must come out exactly as if every point had been observed, in
particular a case opened inside the range is auto-resolved inside it (it was not: only series with a
case active at the start of the range had their in-band points observed)."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_lake.cases.model import points_to_observe
from iot_lake.cases.store import CaseStore
from tests.cases_helpers import T0, point

# a series' minutes: runs of anomalous / in-band minutes, with gaps (dropouts) between some of them
RUNS = st.lists(st.tuples(st.booleans(), st.integers(1, 50), st.integers(0, 20)), min_size=1, max_size=12)


def _minutes(runs) -> list[tuple[float, bool]]:
    out, t = [], 0.0
    for flagged, length, gap in runs:
        out += [(t + i, flagged) for i in range(length)]
        t += length + gap
    return out


def _cases(url: str, batches: list[list[tuple[float, bool]]], sparse: bool) -> list[tuple]:
    """Observe the batches (successive runs of the asset) in order; the cases' lifecycle fields,
    their history and their outbox."""
    with CaseStore(url, clock=lambda: T0) as store:  # a fixed clock: history times compare equal
        for batch in batches:
            keep = [True] * len(batch)
            if sparse:
                active = [c for c in store.list_cases() if c.status in ("open", "acknowledged")]
                keep = points_to_observe(
                    [T0 + timedelta(minutes=m) for m, _ in batch],
                    [f for _, f in batch],
                    store.policy.resolve_after,
                    active=bool(active),
                    back_in_band_since=active[0].back_in_band_since if active else None,
                )
            chosen = [point(minute, anomalous=flagged) for (minute, flagged), k in zip(batch, keep) if k]
            if sparse:  # as the deviations asset does it: the chosen points, several per transaction
                store.observe_many(chosen, chunk=7)
            else:
                for p in chosen:
                    store.observe(p)
        found = [
            (c.case_key, c.status, c.incident_start, c.last_seen, c.back_in_band_since, c.resolved_at, c.reopen_count)
            for c in store.list_cases()
        ]
        history = [(h.case_key, h.at, h.from_status, h.to_status, h.note) for h in store.history()]
        return found + history


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=RUNS, split=st.integers(0, 400))
def test_observing_only_the_points_that_matter_changes_no_case(tmp_path_factory, runs, split):
    minutes = _minutes(runs)
    batches = [minutes[:split], minutes[split:]]  # two runs of the asset: a range, then the rest
    tmp = tmp_path_factory.mktemp("store")
    every = _cases(f"sqlite:///{tmp / 'every.sqlite'}", batches, sparse=False)
    sparse = _cases(f"sqlite:///{tmp / 'sparse.sqlite'}", batches, sparse=True)
    assert sparse == every


def test_a_case_opened_inside_a_range_resolves_inside_it(tmp_path):
    """20 anomalous minutes, then two in-band hours, all in one run: one case, auto-resolved."""
    minutes = [(m, m < 20) for m in range(140)]
    case = _cases(f"sqlite:///{tmp_path / 'c.sqlite'}", [minutes], sparse=True)[0]
    assert case[1] == "resolved" and case[5] == T0 + timedelta(minutes=50)
    # and it takes 22 points, not 140, to say so: the anomalous ones, the first back in band, the resolving one
    keep = points_to_observe(
        [T0 + timedelta(minutes=m) for m, _ in minutes], [f for _, f in minutes], timedelta(minutes=30)
    )
    assert sum(keep) == 20 + 2
