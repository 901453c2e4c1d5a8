"""An admin's backup through the team server: ``backups.context``, then ``backups.create`` streamed.

``context`` is an ordinary signed call (its answer signed by the pinned server key). ``create`` is
signed the same way, but its answer is a stream of JSON lines (``wire/backupstream.py``) read a
line at a time: ``lines`` yields each line with its newline, as the server hashed it; a line
longer than ``MAX_LINE`` (a section larger than any one client's) is refused. A refusal (not 200)
is problem+json, signed as every other answer and raised as its error. The stream's own end line
is checked by the keyholder with ``verify_stream``: under the pinned server key only (a backup is
not taken from a server this machine pinned no key of).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from vault.authority.backup_requests import BackupCommit, BackupContext, BackupRequest
from vault.crypto import signing
from vault.crypto.labels import LABEL_SIG_BACKUP_STREAM
from vault.errors import ConfigurationError, StoreUnavailable, UntrustedRecord
from vault.transport.https import JSON, HttpsTransport, problem_error
from vault.transport.https_calls import answer_of
from vault.wire import backupstream, codec, httpsig

CONTEXT, CREATE = "backups.context", "backups.create"
MAX_LINE = 1024 * 1024 * 1024  # one section's line: a client of a million secret versions is about this
STREAM_READ_TIMEOUT = 600.0  # between two reads of the stream (a large client's section is read at once)
PINNED = "a backup through a team server needs the server key this machine pinned (credvault server trust)"


class HttpsBackupTransport:
    """``backups.context`` and ``backups.create`` over ``https``."""

    def __init__(self, https: HttpsTransport) -> None:
        self.https = https

    def __repr__(self) -> str:
        return "HttpsBackupTransport()"

    def context(self, request: BackupRequest) -> BackupContext:
        return answer_of(self.https, CONTEXT, request, BackupContext)

    @contextlib.contextmanager
    def create(self, commit: BackupCommit, request_id: bytes) -> Iterator[Iterator[bytes]]:
        """The answer's lines (module docstring), while the connection is open."""
        https = self.https
        if https.server_key is None:
            raise ConfigurationError(PINNED, hint="pin the server again with `credvault server trust`")
        path = "/v1/backups/create"
        data = codec.envelope(CREATE, commit, request_id)
        key, keyid = https.signer()
        signed = httpsig.sign_request("POST", https.authority, path, JSON, data, key, keyid, created=int(https.clock()))
        timeout = httpx.Timeout(https.client.timeout.connect, read=STREAM_READ_TIMEOUT)
        request = https.client.build_request(
            "POST", path, content=data, headers={"Content-Type": JSON, **signed}, timeout=timeout
        )
        try:
            response = https.client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise StoreUnavailable(
                f"the server could not be reached ({type(error).__name__})",
                hint="check the server URL, that it runs, and the pinned CA certificate",
            ) from None
        try:
            if response.status_code != 200 or response.headers.get("content-type") != backupstream.MEDIA_TYPE:
                response.read()
                https._check_signed(response, signed["Signature"])  # a refusal is signed as any answer
                if response.status_code != 200:
                    raise problem_error(response)
                raise UntrustedRecord("the server's answer to a backup is not a stream of lines")
            yield _lines(response)
        finally:
            response.close()

    def verify_stream(self, version: int, signature: bytes, fields: tuple[signing.ContextItem, ...]) -> None:
        """The end line's signature, by the pinned server key; else UntrustedRecord."""
        pinned = self.https.server_key
        if pinned is None:
            raise ConfigurationError(PINNED)
        if version != pinned[0]:
            raise UntrustedRecord(
                f"the backup stream is signed by server key version {version}, not the pinned version {pinned[0]}",
                hint="run any command through the server to take a new certified key, then back up again",
            )
        signing.verify(pinned[1], signature, LABEL_SIG_BACKUP_STREAM, *fields, what="the backup stream")


def _lines(response: httpx.Response) -> Iterator[bytes]:
    """Each line of the answer with its newline; a last line without one is yielded as it is."""
    pending = bytearray()
    try:
        for chunk in response.iter_raw():
            search = len(pending)
            pending += chunk
            while (end := pending.find(b"\n", search)) >= 0:
                line = bytes(pending[: end + 1])
                del pending[: end + 1]  # before the yield: one copy of a line while it is checked and sealed
                search = 0
                yield line
                del line
            if len(pending) > MAX_LINE:
                raise UntrustedRecord("the server's backup stream has a line longer than any section")
    except httpx.HTTPError:
        pass  # the connection ended: what came is checked (a stream cut short has no end line)
    if pending:
        yield bytes(pending)
