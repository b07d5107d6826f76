"""The control socket under careless or hostile clients: garbage, oversized lines, silence, no reading, floods.

A :class:`ControlServer` on a unix socket in ``tmp_path``, in the test's own event loop, with a fake
daemon whose status is big (tens of MB, as a daemon with 50,000 moves kept has). Every client loop is
bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ipshift import control
from ipshift.control import MAX_CONNECTIONS, MAX_LINE, Answer, ControlServer

BLOB = 20 << 20  # bytes of status


class FakeDaemon:
    def __init__(self) -> None:
        self.asked: list[Any] = []

    async def status(self, records: int | None = None) -> list[str]:
        self.asked.append(("status", records))
        return ['{"records": ', json.dumps(records), ', "blob": "', *["x" * (1 << 20)] * (BLOB >> 20), '"}']

    async def cmd_failover(self, nic: str) -> Answer:
        self.asked.append(("failover", nic))
        return Answer(True, records=['{"nic": ', json.dumps(nic), "}"])

    async def cmd_failback(self, nic: str) -> Answer:
        self.asked.append(("failback", nic))
        return Answer(False, f"{nic} is not drained")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def ask(path: str, raw: bytes, timeout: float = 5.0, *, eof: bool = False) -> bytes:
    """Send ``raw`` (then end the sending side, with ``eof``), read until the server closes: everything
    it said (b"" when it said nothing)."""
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 26)
    try:
        writer.write(raw)
        try:
            await writer.drain()
            if eof:
                writer.write_eof()
        except ConnectionError:
            pass
        chunks: list[bytes] = []
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), timeout)
            except ConnectionError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


def one_error(answer: bytes) -> str:
    """The answer is one short JSON line with ok false: its error."""
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1 and len(answer) <= 400, answer[:500]
    doc = json.loads(answer)
    assert isinstance(doc, dict) and doc["ok"] is False, doc
    error: str = doc["error"]
    return error


def run(tmp_path: Path, scenario: Callable[[str, FakeDaemon, ControlServer], Awaitable[None]]) -> FakeDaemon:
    daemon = FakeDaemon()
    path = str(tmp_path / "ctl.sock")

    async def main() -> None:
        server = ControlServer(daemon, path)
        await server.start()
        try:
            await scenario(path, daemon, server)
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    return daemon


async def status_works(path: str) -> None:
    answer = await ask(path, b'{"cmd": "status", "records": 3}\n')
    assert len(answer) > BLOB and answer.endswith(b"\n")
    doc = json.loads(answer)
    assert doc["ok"] is True and doc["status"]["records"] == 3 and len(doc["status"]["blob"]) == BLOB


def test_requests_are_answered(tmp_path: Path) -> None:
    async def scenario(path: str, daemon: FakeDaemon, server: ControlServer) -> None:
        await status_works(path)
        assert json.loads(await ask(path, b'{"cmd": "status"}\n'))["status"]["records"] is None
        assert json.loads(await ask(path, b'{"cmd": "failover", "nic": "eth0"}\n')) == \
            {"ok": True, "records": [{"nic": "eth0"}]}
        assert json.loads(await ask(path, b'{"cmd": "failback", "nic": "eth1"}\n')) == \
            {"ok": False, "error": "eth1 is not drained", "records": []}

    assert run(tmp_path, scenario).asked == [("status", 3), ("status", None), ("failover", "eth0"),
                                             ("failback", "eth1")]


GARBAGE = [
    ("not-json", b"hello\n", "bad request: not JSON"),
    ("array", b'["status"]\n', "bad request: not a JSON object"),
    ("number", b"42\n", "bad request: not a JSON object"),
    ("string", b'"status"\n', "bad request: not a JSON object"),
    ("null", b"null\n", "bad request: not a JSON object"),
    ("not-utf8", b'{"cmd": "st\xff\xfeus"}\n', "bad request: not UTF-8 text"),
    ("binary", bytes(range(256)) + b"\n", "bad request"),
    ("deep", b"[" * 30000 + b"]" * 30000 + b"\n", "bad request: not JSON"),
    ("no-cmd", b"{}\n", "unknown command None"),
    ("huge-cmd", b'{"cmd": "' + b"x" * 60000 + b'"}\n', "unknown command 'xxxxxxxx"),
    ("records-infinite", b'{"cmd": "status", "records": Infinity}\n', "bad request: 'records'"),
    ("records-negative", b'{"cmd": "status", "records": -1}\n', "bad request: 'records'"),
    ("records-text", b'{"cmd": "status", "records": "all"}\n', "bad request: 'records'"),
    ("records-bool", b'{"cmd": "status", "records": true}\n', "bad request: 'records'"),
    ("nic-list", b'{"cmd": "failover", "nic": ["eth0"]}\n', "bad request: 'nic'"),
    ("nic-missing", b'{"cmd": "failback"}\n', "bad request: 'nic'"),
    ("nic-huge", b'{"cmd": "failover", "nic": "' + b"e" * 50000 + b'"}\n', "bad request: 'nic'"),
    ("no-newline-then-eof", b'{"cmd": ', "bad request: not JSON"),
]


@pytest.mark.parametrize(("raw", "expected"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_gets_one_short_error_line_and_the_server_goes_on(tmp_path: Path, raw: bytes, expected: str) -> None:
    async def scenario(path: str, daemon: FakeDaemon, server: ControlServer) -> None:
        error = one_error(await ask(path, raw, eof=not raw.endswith(b"\n")))
        assert error.startswith(expected), error
        await status_works(path)

    daemon = run(tmp_path, scenario)
    assert daemon.asked == [("status", 3)]  # the garbage reached nothing


@pytest.mark.parametrize("newline", [True, False], ids=["line", "endless"])
def test_an_oversized_line_gets_one_error_line_and_is_closed(tmp_path: Path, newline: bool) -> None:
    big = b'{"cmd": "status", "pad": "' + b"x" * (4 * MAX_LINE) + (b'"}\n' if newline else b"")

    async def scenario(path: str, daemon: FakeDaemon, server: ControlServer) -> None:
        error = one_error(await ask(path, big))
        assert error == f"bad request: longer than {MAX_LINE} bytes", error
        await status_works(path)

    assert run(tmp_path, scenario).asked == [("status", 3)]


def test_a_client_that_never_sends_is_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "READ_TIMEOUT", 0.3)

    async def scenario(path: str, daemon: FakeDaemon, server: ControlServer) -> None:
        t0 = time.monotonic()
        assert await ask(path, b"", timeout=3) == b""
        assert 0.25 < time.monotonic() - t0 < 2.0
        await status_works(path)

    run(tmp_path, scenario)


def test_a_client_that_never_reads_its_big_answer_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "DRAIN_TIMEOUT", 0.3)

    async def scenario(path: str, daemon: FakeDaemon, server: ControlServer) -> None:
        before = _fds()
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(b'{"cmd": "status"}\n')
            await writer.drain()
            await asyncio.sleep(0.1)
            assert _fds() - before == 2  # both ends: the server is writing, we do not read
            for _ in range(60):  # bounded: 3 s
                await asyncio.sleep(0.05)
                if _fds() - before == 1:
                    break
            assert _fds() - before == 1, "the server still holds the connection of a client that does not read"
            await status_works(path)
        finally:
            writer.close()

    run(tmp_path, scenario)


def test_concurrent_connections_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "READ_TIMEOUT", 0.5)

    async def scenario(path: str, daemon: FakeDaemon, server: ControlServer) -> None:
        before = _fds()
        idle = [await asyncio.wait_for(asyncio.open_unix_connection(path), 2) for _ in range(200)]
        try:
            await asyncio.sleep(0.2)
            assert _fds() - before - len(idle) <= MAX_CONNECTIONS + 2  # the server holds at most the limit
            # those over the limit were told so, in one line, and closed
            busy = 0
            for r, _ in idle:
                try:
                    answer = await asyncio.wait_for(r.read(), 0.02)
                except asyncio.TimeoutError:
                    continue  # one the server holds
                if answer:  # (b"": one it held, and closed since)
                    assert one_error(answer).startswith("busy:"), answer
                    busy += 1
            assert busy >= 200 - MAX_CONNECTIONS
            # a real request gets through once the idle ones have used up their time (bounded retries)
            t0 = time.monotonic()
            for _ in range(60):
                answer = await ask(path, b'{"cmd": "failover", "nic": "eth0"}\n')
                if b'"ok": true' in answer or time.monotonic() - t0 > 3:
                    break
                await asyncio.sleep(0.05)
            assert json.loads(answer)["ok"] is True, answer
            assert time.monotonic() - t0 < control.READ_TIMEOUT + 1.0
        finally:
            for _, w in idle:
                w.close()

    run(tmp_path, scenario)


def test_a_reload_moves_the_control_socket_and_starts_the_metrics(tmp_path: Path) -> None:
    from ipshift.config import MetricsConfig
    from ipshift.control import Servers

    async def scrape(accept: str) -> tuple[bytes, str]:
        return b"ipshift_ready 1\n", "text/plain"

    async def scenario() -> None:
        first, moved = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
        servers = await Servers.open(FakeDaemon(), first, None, scrape)
        try:
            await status_works(first)
            import socket as so

            with so.socket() as probe:  # a free loopback port for the metrics
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            await servers.reconfigure(moved, MetricsConfig(listen=f"127.0.0.1:{port}"))
            await status_works(moved)
            assert not os.path.exists(first) and servers.metrics is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert b"ipshift_ready 1" in await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await servers.reconfigure(moved, None)
            assert servers.metrics is None
        finally:
            await servers.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
