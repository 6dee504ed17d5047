"""JSON Lines parsing: the fast path must give exactly what ``json.loads`` gives."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemr.formats import json_loads

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: beyond 64 bits orjson alone would give a float
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included: json accepts them, orjson does not
    st.text(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner), st.dictionaries(st.text(), inner)),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(values, st.booleans())
def test_same_values_and_types_as_json(value, ascii_only) -> None:
    line = json.dumps(value, ensure_ascii=ascii_only)
    assert repr(json_loads(line)) == repr(json.loads(line))


@pytest.mark.parametrize(
    "line",
    ['{"id": 18446744073709551616}', "[-9223372036854775809]", "[NaN, Infinity]", "[1e400]"],
)
def test_values_orjson_would_change_or_refuse(line) -> None:
    assert repr(json_loads(line)) == repr(json.loads(line))


@pytest.mark.parametrize("line", ['{"a": }', "[1, 2", '{"a": 1} x', '"\\ud800'])
def test_malformed_lines_raise_json_errors(line) -> None:
    with pytest.raises(ValueError) as fast:
        json_loads(line)
    with pytest.raises(ValueError) as std:
        json.loads(line)
    assert str(fast.value) == str(std.value)
