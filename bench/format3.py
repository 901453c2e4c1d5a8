"""Audit event format 3 against format 2: the cost of an append's hash and signature, and of
verifying one event (issue 14 step 3; docs/format.md §8.2).

    python -m bench.format3 [--events 10000]

Four rows, each the median over ``--events`` events (one call timed per event, after a warm-up):

* append, format 2: ``chain.event_hash`` + ``chain.sign_event`` (the engineer's key);
* append, format 3: ``chain.event_hash_v3`` + ``ServerSigningKey.sign_event`` (the server's key);
* verify one event, format 2: ``auditchain.check_rows`` over that one event (hash, signature
  under the signer's key within its lifetime);
* verify one event, format 3: the same over a format-3 event (hash, server signature, the
  request's signature rebuilt from its RFC 9421 base, its body opened as an envelope, the
  request id remembered).

Also the mean per event of ``check_rows`` over the whole run (what ``audit verify`` does per
worker). Only the computation: no database (the in-database append is the journal's cost,
measured by W6/W14). Both formats in the same run, on the same machine, interleaved per event.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from vault.authority.requests import Caller, CheckoutRequest
from vault.crypto import chain
from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.keyholder import auditchain
from vault.wire import codec, httpsig
from vault.wire.eventrequest import CONTENT_TYPE, keyid_of, record, route_path

VAULT = os.urandom(16)
ENGINEER, GENERATION, CLIENT, SECRET = 7, 1, 12, 345
START_US = 1_733_400_000_000_000


def _request(key: SigningKey, created: int) -> Any:
    body = CheckoutRequest(
        "checkout", Caller(ENGINEER, GENERATION), CLIENT, None, os.urandom(32), None, None, True, True,
        os.urandom(180), (1,), os.urandom(32),
    )  # fmt: skip
    request_id = os.urandom(codec.REQUEST_ID_BYTES)
    envelope = codec.envelope("checkouts.checkout", body, request_id)
    path = route_path("checkouts.checkout")
    headers = httpsig.sign_request(
        "POST", "vault.example.com", path, CONTENT_TYPE, envelope, key, keyid_of(ENGINEER, GENERATION), created=created
    )
    return record("POST", "vault.example.com", path, headers, envelope, request_id)


def _timed(call: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    call()
    return time.perf_counter_ns() - start


def run(events: int) -> dict[str, float]:
    engineer, server = SigningKey.generate(), ServerSigningKey.generate(1)
    codec_ = chain.EventCodec(VAULT)
    keys: auditchain.Keys = {(ENGINEER, GENERATION): (engineer.public, 1, auditchain.NEVER)}
    servers = {1: (server.public, 0)}
    details = os.urandom(120)  # a sealed details blob of a checkout
    times: dict[str, list[int]] = {k: [] for k in ("append2", "append3", "verify2", "verify3")}
    rows2: list[tuple[Any, ...]] = []
    rows3: list[tuple[Any, ...]] = []
    prev2 = prev3 = chain.GENESIS
    out: dict[str, Any] = {}  # what the timed appends made, read right after each
    for i in range(events + 200):  # the first 200 warm up
        seq, at_us = i + 1, START_US + i * 1_000
        fields = (at_us, ENGINEER, GENERATION, "checkout", CLIENT, SECRET, 1, details, None)
        req = _request(engineer, at_us // 1_000_000)

        def append2(seq: int = seq, fields: tuple[Any, ...] = fields, prev: bytes = prev2) -> None:
            digest = chain.event_hash(VAULT, seq, *fields, prev_hash=prev)
            out["2"] = (digest, chain.sign_event(engineer.seed, VAULT, seq, digest))

        def append3(seq: int = seq, fields: tuple[Any, ...] = fields, prev: bytes = prev3, req: Any = req) -> None:
            digest = chain.event_hash_v3(
                VAULT, seq, *fields, request_id=req.request_id, request_digest=req.digest, prev_hash=prev
            )
            out["3"] = (digest, server.sign_event(VAULT, seq, digest))

        t2, t3 = _timed(append2), _timed(append3)
        row2 = (seq, *fields, prev2, *out["2"])
        row3 = (seq, *fields, prev3, *out["3"], req.request_id, req.digest, req.sig, req.body, 1)
        v2 = _timed(functools.partial(auditchain.check_rows, [row2], codec_, keys, seq))
        v3 = _timed(functools.partial(auditchain.check_rows, [row3], codec_, keys, seq, None, servers))
        if i >= 200:
            for name, value in (("append2", t2), ("append3", t3), ("verify2", v2), ("verify3", v3)):
                times[name].append(value)
            rows2.append(row2)
            rows3.append(row3)
        prev2, prev3 = out["2"][0], out["3"][0]
    result = {name: statistics.median(values) / 1_000 for name, values in times.items()}
    for fmt, rows, extra in (("2", rows2, ()), ("3", rows3, (None, servers))):
        start = time.perf_counter_ns()
        checked = auditchain.check_rows(rows, codec_, keys, rows[0][0], *extra)
        result[f"run{fmt}"] = (time.perf_counter_ns() - start) / len(rows) / 1_000
        assert checked.problem is None and checked.good == len(rows), checked.problem
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    r = run(args.events)
    print(f"events: {args.events:,} (medians, µs per event; format 2 is the baseline, same run)")
    print(f"append (hash + signature)      format 2: {r['append2']:7.1f}   format 3: {r['append3']:7.1f}")
    print(f"verify one event (check_rows)  format 2: {r['verify2']:7.1f}   format 3: {r['verify3']:7.1f}")
    print(f"verify a run (mean per event)  format 2: {r['run2']:7.1f}   format 3: {r['run3']:7.1f}")


if __name__ == "__main__":
    main()
