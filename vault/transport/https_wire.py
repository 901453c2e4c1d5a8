"""The HTTPS transport's wire: one write per request, and httpx's per-request machinery left out.

Measured under the W16 team load (docs/performance-server.md): every engineer process, both
servers and PostgreSQL share two cores, so what a request costs the client's CPU (and the
server's, for each extra read) is taken from the checkouts per second.

* ``coalescing_transport``: httpcore writes a request's headers and its body apart, so each
  request was two TLS records, two system calls and, on the server, two reads and two parser
  calls. ``_Coalesced`` holds what httpcore writes until it first reads (the answer), then
  writes it as one record. Nothing else changes: the same TLS context, certificate checks and
  socket options, one kept-alive connection.
* ``send``: ``httpx.Client.send`` merges cookies, runs auth and redirect handling and parses
  cookies out of every answer (about 0.12 ms a request here); a signed request needs none of it.
  ``send`` builds the request on the client's own transport, with the client's timeout, and
  runs the client's event hooks as httpx does (the tests watch the wire through them).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import httpcore
import httpx

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]  # httpcore's


class _Coalesced(httpcore.NetworkStream):
    """A stream whose writes wait for the next read (or close), then go as one."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self.stream = stream
        self.pending: list[bytes] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush(timeout)
        return self.stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self.pending.append(buffer)

    def _flush(self, timeout: float | None) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.stream.write(data, timeout)

    def close(self) -> None:
        self.pending.clear()
        self.stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        self._flush(timeout)
        return _Coalesced(self.stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)


class _CoalescingBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        return _Coalesced(self.backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


def coalescing_transport(verify: ssl.SSLContext | bool, socket_options: list[SocketOption]) -> httpx.HTTPTransport:
    """``httpx.HTTPTransport(verify=…, socket_options=…)`` whose requests go out in one write."""
    transport = httpx.HTTPTransport(verify=verify, socket_options=socket_options)
    context = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
    # httpx builds its pool with no way to pass a network backend: the same pool, with one.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=_CoalescingBackend(),
        socket_options=socket_options,
    )
    return transport


def send(
    client: httpx.Client,
    transport: httpx.BaseTransport,
    url: httpx.URL,
    content: bytes,
    headers: Mapping[str, str],
    read_timeout: float | None = None,
    cap: float | None = None,
) -> httpx.Response:
    """POST ``content`` to ``url`` through ``transport`` (``client``'s), with ``client``'s timeout
    (its read timeout ``read_timeout`` when given: an operation whose one unit is long; each phase's
    at most ``cap`` seconds when given: what is left of a caller's budget) and event hooks (module
    docstring); the answer, read."""
    timeout = {"timeout": client.timeout.as_dict()}
    if read_timeout is not None:
        timeout["timeout"]["read"] = read_timeout
    if cap is not None:
        timeout["timeout"] = {phase: cap if s is None else min(s, cap) for phase, s in timeout["timeout"].items()}
    request = httpx.Request("POST", url, content=content, headers=headers, extensions=timeout)
    for hook in client.event_hooks["request"]:
        hook(request)
    response = transport.handle_request(request)
    response.request = request
    try:
        for hook in client.event_hooks["response"]:
            hook(response)
        response.read()
    finally:
        response.close()
    return response
