"""Lake keys stay under the lake root whatever a key read from data says (iot_lake.lake.checked_key)."""

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
