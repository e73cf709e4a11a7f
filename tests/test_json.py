"""JSON from outside: nesting is bounded, and every refusal is a ValueError with the reason."""

from __future__ import annotations

import pytest

from vxnet._json import MAX_DEPTH, JsonError, loads_bounded


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


def test_values_up_to_the_limit_load_as_json_loads_would() -> None:
    assert loads_bounded(nested(MAX_DEPTH)) == eval(nested(MAX_DEPTH))  # noqa: S307
    assert loads_bounded(b'{"a": [1, {"b": null}], "c": "x"}') == {"a": [1, {"b": None}], "c": "x"}
    assert loads_bounded('"plain"') == "plain"


@pytest.mark.parametrize(
    "text",
    [
        nested(MAX_DEPTH + 1),
        '{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1),
        nested(200_000),  # json.loads itself gives up (RecursionError, not a ValueError)
        "[" * 200_000,  # and unbalanced
    ],
)
def test_deeper_values_are_refused_as_a_value_error(text: str) -> None:
    with pytest.raises(JsonError, match="nested deeper than 32 levels"):
        loads_bounded(text)
    assert issubclass(JsonError, ValueError)


def test_text_that_is_not_json_is_refused_with_the_parsers_reason() -> None:
    with pytest.raises(JsonError, match="Expecting"):
        loads_bounded("{")
