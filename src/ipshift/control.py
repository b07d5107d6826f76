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

log = logging.getLogger("ipshift.control")

WRITE_CHUNK = 1 << 20  # bytes handed to the transport between two turns of the loop


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
    """The control socket and, when configured, the metrics endpoint."""

    def __init__(self, control: ControlServer, metrics: asyncio.Server | None) -> None:
        self.control = control
        self.metrics = metrics

    @classmethod
    async def open(cls, daemon: Controlled, socket_path: str, metrics_listen: MetricsConfig | None,
                   scrape: Callable[[str], Awaitable[tuple[bytes, str]]]) -> Servers:
        control = ControlServer(daemon, socket_path)
        await control.start()
        server = None
        if metrics_listen is not None:
            from ipshift import metrics

            try:
                server = await metrics.serve(metrics_listen.host, metrics_listen.port, scrape)
                log.info("metrics on http://%s/metrics", metrics_listen.listen)
            except OSError as exc:  # failover matters more than its metrics: keep running
                log.error("cannot serve metrics on %s: %s; running without metrics", metrics_listen.listen, exc)
        return cls(control, server)

    async def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        await self.control.stop()


class ControlServer:
    def __init__(self, daemon: Controlled, path: str) -> None:
        self.daemon = daemon
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if p.exists() or p.is_symlink():
            if _alive(self.path):
                raise RuntimeError(f"another ipshift is already listening on {self.path}")
            p.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path)
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
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            parts: list[str]
            try:
                req = json.loads(line)
                cmd = req.get("cmd")
                if cmd == "status":
                    last = req.get("records")
                    parts = ['{"ok": true, "status": ',
                             *await self.daemon.status(int(last) if last is not None else None), "}"]
                elif cmd == "failover":
                    parts = (await self.daemon.cmd_failover(str(req.get("nic")))).parts()
                elif cmd == "failback":
                    parts = (await self.daemon.cmd_failback(str(req.get("nic")))).parts()
                else:
                    parts = Answer(False, f"unknown command {cmd!r}").parts()
            except (ValueError, AttributeError, TypeError) as exc:
                parts = Answer(False, f"bad request: {exc}").parts()
            await write_parts(writer, [*parts, "\n"])
        except (asyncio.TimeoutError, ConnectionError) as exc:
            log.debug("control connection: %s", exc)
        finally:
            writer.close()


async def write_parts(writer: asyncio.StreamWriter, parts: Sequence[str]) -> None:
    """Write text parts, about ``WRITE_CHUNK`` bytes at a time, draining between chunks."""
    pending: list[str] = []
    size = 0
    for part in parts:
        pending.append(part)
        size += len(part)
        if size >= WRITE_CHUNK:
            writer.write("".join(pending).encode())
            await writer.drain()
            pending, size = [], 0
    writer.write("".join(pending).encode())
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
