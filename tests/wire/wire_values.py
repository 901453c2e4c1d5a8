"""Hypothesis strategies for the wire codec's values (tests/wire: test_codec.py, test_openapi.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from datetime import UTC
from typing import Any

from hypothesis import strategies as st

_DATETIMES = st.datetimes(
    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.sampled_from([UTC, None])
).map(lambda t: t if t.tzinfo else t.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))))


def strategy(tp: Any) -> st.SearchStrategy[Any]:
    scalars: dict[Any, st.SearchStrategy[Any]] = {
        int: st.integers(-(2**63) + 1, 2**63 - 1),
        bool: st.booleans(),
        str: st.text(max_size=8),
        bytes: st.binary(max_size=12),
        dt.datetime: _DATETIMES,
    }
    if tp in scalars:
        return scalars[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy(args[0]), max_size=2).map(tuple)
        return st.tuples(*(strategy(a) for a in args))
    if args and type(None) in args:
        return st.none() | strategy(next(a for a in args if a is not type(None)))
    hints = typing.get_type_hints(tp)
    names = [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else list(tp._fields)
    return st.builds(tp, **{name: strategy(hints[name]) for name in names})


