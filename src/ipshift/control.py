"""The control socket: ``ipshift status``, ``failover`` and ``failback`` talk to the daemon here.

A unix stream socket (mode 0600: root only) carrying one JSON request line
and one JSON answer line per connection: ``{"cmd": "status"}``,
``{"cmd": "failover", "nic": "eth0"}``, ``{"cmd": "failback", "nic": "eth0"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("ipshift.control")


class Controlled(Protocol):
    def status(self) -> dict[str, Any]: ...
    async def cmd_failover(self, nic: str) -> dict[str, Any]: ...
    async def cmd_failback(self, nic: str) -> dict[str, Any]: ...


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
            try:
                req = json.loads(line)
                cmd = req.get("cmd")
                if cmd == "status":
                    answer: dict[str, Any] = {"ok": True, "status": self.daemon.status()}
                elif cmd == "failover":
                    answer = await self.daemon.cmd_failover(str(req.get("nic")))
                elif cmd == "failback":
                    answer = await self.daemon.cmd_failback(str(req.get("nic")))
                else:
                    answer = {"ok": False, "error": f"unknown command {cmd!r}"}
            except (ValueError, AttributeError) as exc:
                answer = {"ok": False, "error": f"bad request: {exc}"}
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError) as exc:
            log.debug("control connection: %s", exc)
        finally:
            writer.close()


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
