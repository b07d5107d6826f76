"""The control socket: ``ipshift status``, ``failover`` and ``failback`` talk to the daemon here.

A unix stream socket (mode 0600: root only) carrying one JSON request line
and one JSON answer line per connection: ``{"cmd": "status"}``,
``{"cmd": "failover", "nic": "eth0"}``, ``{"cmd": "failback", "nic": "eth0"}``;
``{"cmd": "status", "records": N}`` returns only the last N failover records.

The daemon answers with text it has already serialised (its records are
serialised once, when they end): a status is a list of JSON text parts, a
command's :class:`Answer` carries its records' parts. The server writes the
parts in chunks and lets the loop run between them, so a large answer never
holds the event loop.

Careless or hostile clients cost little and get one JSON line: a request
that is not JSON, not UTF-8, not an object, or has fields of the wrong kind
gets ``{"ok": false, "error": "bad request: ..."}`` (echoed input is
abbreviated); a line longer than ``MAX_LINE`` gets that error too and the
connection is closed unread. A client has ``READ_TIMEOUT`` for its whole
request line; one that never takes its answer (a status can be tens of MB)
is dropped when a chunk has not gone out within ``DRAIN_TIMEOUT``, or the
whole answer within ``WRITE_TIMEOUT`` -- its connection aborted, not left
waiting to flush. At most ``MAX_CONNECTIONS`` are served at a time; one more
is told ``busy`` and closed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ipshift.config import MetricsConfig
from ipshift.configsrc import abbreviate
from ipshift.metrics import close_now

log = logging.getLogger("ipshift.control")

WRITE_CHUNK = 1 << 20  # bytes handed to the transport between two turns of the loop
MAX_LINE = 1 << 16  # bytes of a request line
MAX_CONNECTIONS = 16  # served at a time
READ_TIMEOUT = 5.0  # for the whole request line
DRAIN_TIMEOUT = 5.0  # for each chunk of an answer to be taken
WRITE_TIMEOUT = 60.0  # for the whole answer
IFNAMSIZ = 15  # the longest interface name


class BadRequest(ValueError):
    """A request the server cannot take (the text says why, briefly)."""


@dataclass
class Answer:
    """A command's answer: ``records`` are the text parts of the records it made."""

    ok: bool
    error: str = ""
    records: list[str] = field(default_factory=list)

    def parts(self) -> list[str]:
        head = json.dumps({"ok": self.ok, **({"error": self.error} if self.error else {})})
        return [head[:-1], ', "records": [', *self.records, "]}"]


class Controlled(Protocol):
    async def status(self, records: int | None = None) -> list[str]: ...
    async def cmd_failover(self, nic: str) -> Answer: ...
    async def cmd_failback(self, nic: str) -> Answer: ...


class Servers:
    """The control socket and, when configured, the metrics endpoint; a reload moves either."""

    def __init__(self, daemon: Controlled, scrape: Callable[[str], Awaitable[tuple[bytes, str]]]) -> None:
        self._daemon = daemon
        self._scrape = scrape
        self.control: ControlServer | None = None
        self.metrics: asyncio.Server | None = None
        self._listen: MetricsConfig | None = None

    @classmethod
    async def open(cls, daemon: Controlled, socket_path: str, metrics_listen: MetricsConfig | None,
                   scrape: Callable[[str], Awaitable[tuple[bytes, str]]]) -> Servers:
        servers = cls(daemon, scrape)
        await servers.reconfigure(socket_path, metrics_listen)
        return servers

    async def reconfigure(self, socket_path: str, metrics_listen: MetricsConfig | None) -> None:
        """Serve on ``socket_path`` and ``metrics_listen`` (None: no metrics); what did not change
        is left as it is. A new control socket that cannot be opened keeps the old one."""
        if self.control is None or self.control.path != socket_path:
            control = ControlServer(self._daemon, socket_path)
            if self.control is None:
                await control.start()
            else:
                try:
                    await control.start()
                except (OSError, RuntimeError) as exc:
                    log.error("cannot listen on %s: %s; the control socket stays %s", socket_path, exc,
                              self.control.path)
                    control = self.control
                else:
                    await self.control.stop()
                    log.info("control socket moved to %s", socket_path)
            self.control = control
        if metrics_listen != self._listen:
            if self.metrics is not None:
                self.metrics.close()
                self.metrics = None
            self._listen = metrics_listen
            if metrics_listen is not None:
                from ipshift import metrics

                try:
                    self.metrics = await metrics.serve(metrics_listen.host, metrics_listen.port, self._scrape)
                    log.info("metrics on http://%s/metrics", metrics_listen.listen)
                except OSError as exc:  # failover matters more than its metrics: keep running
                    log.error("cannot serve metrics on %s: %s; running without metrics", metrics_listen.listen,
                              exc)

    async def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.control is not None:
            await self.control.stop()


class ControlServer:
    def __init__(self, daemon: Controlled, path: str) -> None:
        self.daemon = daemon
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self.active = 0  # connections being served

    async def start(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if p.exists() or p.is_symlink():
            if _alive(self.path):
                raise RuntimeError(f"another ipshift is already listening on {self.path}")
            p.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= MAX_CONNECTIONS:
            writer.write(_line(Answer(False, f"busy: {MAX_CONNECTIONS} control connections are being served, "
                                             "try again").parts()))
            close_now(writer)
            return
        self.active += 1
        writer.transport.set_write_buffer_limits(0)  # drain() returns once everything went to the kernel
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT):  # the whole line, not each read
                    line = await reader.readline()
            except ValueError:  # longer than the reader's limit; the rest is not read
                parts = Answer(False, f"bad request: longer than {MAX_LINE} bytes").parts()
            else:
                if not line:
                    return  # closed without a word
                parts = await self._answer(line)
            await write_parts(writer, [*parts, "\n"])
        except (TimeoutError, ConnectionError) as exc:
            log.debug("control connection dropped: %s", exc or type(exc).__name__)
        finally:
            self.active -= 1
            close_now(writer)

    async def _answer(self, line: bytes) -> list[str]:
        try:
            req = parse_request(line)
            cmd = req.get("cmd")
            if cmd == "status":
                last = req.get("records")
                if last is not None and (type(last) is not int or last < 0):
                    raise BadRequest(f"'records' must be a whole number, 0 or more, not {abbreviate(last)}")
                return ['{"ok": true, "status": ', *await self.daemon.status(last), "}"]
            if cmd in ("failover", "failback"):
                nic = req.get("nic")
                if not isinstance(nic, str) or not 0 < len(nic) <= IFNAMSIZ:
                    raise BadRequest(f"'nic' must be an interface name, not {abbreviate(nic)}")
                act = self.daemon.cmd_failover if cmd == "failover" else self.daemon.cmd_failback
                return (await act(nic)).parts()
            return Answer(False, f"unknown command {abbreviate(cmd)}").parts()
        except BadRequest as exc:
            return Answer(False, f"bad request: {exc}").parts()


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line to its JSON object; :class:`BadRequest` for anything else."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"not UTF-8 text (byte {exc.start})") from None
    try:
        req = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"not JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise BadRequest("not JSON (nested too deeply)") from None
    if not isinstance(req, dict):
        raise BadRequest(f"not a JSON object but {type(req).__name__}")
    return req


def _line(parts: Sequence[str]) -> bytes:
    return ("".join(parts) + "\n").encode()


async def write_parts(writer: asyncio.StreamWriter, parts: Sequence[str]) -> None:
    """Write text parts, about ``WRITE_CHUNK`` bytes at a time, draining between chunks; TimeoutError
    when a chunk is not taken within ``DRAIN_TIMEOUT`` or all of them within ``WRITE_TIMEOUT``."""
    async with asyncio.timeout(WRITE_TIMEOUT):
        pending: list[str] = []
        size = 0
        for part in parts:
            pending.append(part)
            size += len(part)
            if size >= WRITE_CHUNK:
                writer.write("".join(pending).encode())
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await writer.drain()
                pending, size = [], 0
        writer.write("".join(pending).encode())
        async with asyncio.timeout(DRAIN_TIMEOUT):
            await writer.drain()


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def request(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the daemon and return its answer (raises OSError when nobody listens)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    answer: dict[str, Any] = json.loads(data)
    return answer
