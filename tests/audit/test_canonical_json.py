"""canonical_json gives RFC 8785 output byte for byte: the rfc8785 library is the reference."""

from __future__ import annotations

import math
import random
from enum import StrEnum
from typing import Any

import pytest
import rfc8785

from tabard.audit.chain import canonical_json

# Characters where JSON encoders differ: controls, quotes, DEL, line separators, the top of the
# BMP, astral characters (UTF-16 sorts them before U+E000) and lone surrogates.
_TRICKY = ["\x00", "\x1f", '"', "\\", "/", "\x7f", "\u2028", "é", "\ud7ff", "\ue000", "\uffff"]
_TRICKY += ["\U0001f600", "\ud800", "\udfff", "a", "Z", "0", " "]
_FLOATS = [0.0, -0.0, 5.0, -3.0, 0.5, 0.1, 1 / 3, 1e-4, 9.99e-5, 1e-7, 1.5e-6, 123.456]
_FLOATS += [1e15 + 0.5, 2.0**53, 2.0**53 + 2, 1e16, 1e21, 1.5e300, 5e-324, -0.0025]


class Colour(StrEnum):
    RED = "red"


def _string(rng: random.Random) -> str:
    return "".join(rng.choice(_TRICKY) for _ in range(rng.randint(0, 4)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 7, 2**53 - 1, -(2**53 - 1), rng.randint(-(10**9), 10**9)])
    if kind == 2:
        return rng.choice(_FLOATS)
    if kind == 3:
        return rng.uniform(-1e6, 1e6) * rng.choice([1, 1e-9, 1e9])
    if kind in (4, 5):
        return _string(rng)
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_string(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _outcome(encode: Any, document: Any) -> bytes | type[Exception]:
    try:
        encoded: bytes = encode(document)
    except (rfc8785.CanonicalizationError, UnicodeError) as exc:  # lone surrogates
        return type(exc)
    return encoded


def test_random_documents_match_the_reference() -> None:
    rng = random.Random(8785)  # noqa: S311 - reproducible test data, not secrets
    for _ in range(5000):
        document = _value(rng)
        assert _outcome(canonical_json, document) == _outcome(rfc8785.dumps, document), document


@pytest.mark.parametrize("number", _FLOATS)
def test_each_float_matches_the_reference(number: float) -> None:
    assert canonical_json({"n": number, "list": [number]}) == rfc8785.dumps(
        {"n": number, "list": [number]}
    )


def test_an_audit_event_as_the_log_writes_it() -> None:
    event = {
        "id": "01a23318-6ac3-77ac-8fa3-6798631e6980",
        "chain_seq": 12,
        "occurred_at": "2026-12-01T21:06:54.123456Z",
        "actor_kind": Colour.RED,
        "details": {"clock_skew_seconds": 0.0, "heartbeats": 3, "status": {"queue": [1, 2.5]}},
        "target": None,
    }
    assert canonical_json(event) == rfc8785.dumps(event)
    assert canonical_json(event).startswith(b'{"actor_kind":"red","chain_seq":12,')


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2**53, {1: "non-string key"}])
def test_what_rfc8785_refuses_is_refused(bad: Any) -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        rfc8785.dumps(bad)
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_json(bad)
