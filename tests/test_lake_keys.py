"""Lake keys stay under the lake root whatever a key read from data says (iot_lake.lake.checked_key)."""

import os
import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iot_lake.lake import Lake, checked_key

SEGMENT = st.sampled_from(["", ".", "..", "a", "landing", "x.gz", "..a", "a..", "\\", "s3:", "%2e%2e"])


@given(st.lists(SEGMENT, min_size=1, max_size=6), st.booleans())
def test_every_accepted_key_resolves_under_the_root(tmp_path_factory, segments, absolute):
    root = str(tmp_path_factory.getbasetemp() / "lake")
    lake = Lake(root)
    key = ("/" if absolute else "") + "/".join(segments)
    try:
        checked_key(key)
    except ValueError:
        with pytest.raises(ValueError):
            lake.path(key)
        return
    resolved = posixpath.normpath(lake.path(key))
    assert resolved == lake.base or resolved.startswith(lake.base + "/"), (key, resolved)


@given(st.text(max_size=40))
def test_any_text_is_either_refused_or_under_the_root(tmp_path_factory, key):
    lake = Lake(str(tmp_path_factory.getbasetemp() / "lake"))
    try:
        path = lake.path(key)
    except ValueError:
        return
    resolved = posixpath.normpath(path)
    assert resolved == lake.base or resolved.startswith(lake.base + "/"), (key, resolved)


@pytest.fixture(params=["local", "s3"])
def any_lake(request, tmp_path):
    if request.param == "local":
        return Lake(str(tmp_path / "lake"))
    from tests.iam_audit import setup_storage_options

    root = request.getfixturevalue("lake_root")
    return Lake(
        root, storage_options=setup_storage_options(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    )


def test_move_files_swaps_a_partitioned_folder_in_on_a_local_disk_and_on_s3(any_lake):
    # The Parquet table's rewrite and the training data's swap: on S3, s3fs's recursive mv also
    # copied the source prefix itself as a key and failed with NoSuchKey.
    lake = any_lake
    for key in ("t/_scratch/event_date=2026-12-01/part-0.parquet", "t/_scratch/event_date=2026-12-02/part-0.parquet"):
        lake.write_bytes(key, key.encode())
    lake.write_bytes("t/table/event_date=2026-11-30/old.parquet", b"old")
    lake.delete("t/table", recursive=True)
    lake.move_files(lake.fs.find(lake.path("t/_scratch")), "t/_scratch", "t/table")
    lake.delete("t/_scratch", recursive=True)
    assert sorted(o.key for o in lake.list("t")) == [
        "t/table/event_date=2026-12-01/part-0.parquet",
        "t/table/event_date=2026-12-02/part-0.parquet",
    ]
    assert (
        lake.read_bytes("t/table/event_date=2026-12-02/part-0.parquet")
        == b"t/_scratch/event_date=2026-12-02/part-0.parquet"
    )
