"""``loads_json`` (the backlog's decoder of stored args and results) answers exactly
as ``json.loads``: the same value, or the same error, for any text."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.backlog.base import loads_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def answer(decode: Any, text: str) -> tuple[str, Any]:
    try:
        value = decode(text)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return "ok", json.dumps(value)  # NaN-safe comparison of the decoded value


@settings(max_examples=300)
@given(value=JSON, compact=st.booleans(), pad=st.sampled_from(["", " ", "\n", "x", "]"]))
def test_encoded_values_decode_as_json_loads_does(value: Any, compact: bool, pad: str) -> None:
    text = json.dumps(value, separators=(",", ":") if compact else None)
    for candidate in (text, text + pad, pad + text, text[: len(text) // 2]):
        assert answer(loads_json, candidate) == answer(json.loads, candidate)


@settings(max_examples=300)
@given(text=st.text(alphabet=st.sampled_from('[]{}",:0123456789.eE-+ truefalsn\\u\n'), max_size=20))
def test_any_text_decodes_or_fails_as_json_loads_does(text: str) -> None:
    assert answer(loads_json, text) == answer(json.loads, text)
