"""Metrics: the families a scrape returns, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ipshift import metrics
from ipshift.config import ConfigError, parse_config
from ipshift.metrics import MAX_CONNECTIONS, Tally, View, exposition, families, serve


def scrape(view: View, tally: Tally) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, ctype = exposition(families(view, tally))
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


VIEW = View(ready=True, nic_states={"eth0": "down", "eth1": "up"}, path={"eth0": "failed", "eth1": None},
            held={"eth1": 3}, away=2, missing=0)


def test_states_addresses_and_counters() -> None:
    t = Tally()
    t.record("failover", "eth0", 0.004, moved=2, failed=0, refused=1, ended=1000.0)
    t.record("failover", "eth0", 0.030, moved=1, failed=1, refused=0, ended=1001.0)
    t.record("failback", "eth0", 0.002, moved=3, failed=0, refused=0, ended=1002.0)
    m = scrape(VIEW, t)
    assert m[("ipshift_ready", ())] == 1.0
    assert m[("ipshift_nic_state", (("nic", "eth0"), ("state", "down")))] == 1.0
    assert m[("ipshift_nic_state", (("nic", "eth0"), ("state", "up")))] == 0.0
    assert m[("ipshift_nic_state", (("nic", "eth1"), ("state", "up")))] == 1.0
    assert m[("ipshift_nic_path", (("nic", "eth0"), ("verdict", "failed")))] == 1.0
    assert not any(k[0] == "ipshift_nic_path" and ("nic", "eth1") in k[1] for k in m)  # not probed
    assert m[("ipshift_addresses", (("device", "eth1"),))] == 3.0
    assert m[("ipshift_addresses_away", ())] == 2.0
    assert m[("ipshift_runs_total", (("kind", "failover"), ("nic", "eth0")))] == 2.0
    assert m[("ipshift_runs_total", (("kind", "failback"), ("nic", "eth0")))] == 1.0
    assert m[("ipshift_moves_total", (("kind", "failover"), ("result", "moved")))] == 3.0
    assert m[("ipshift_moves_total", (("kind", "failover"), ("result", "failed")))] == 1.0
    assert m[("ipshift_moves_total", (("kind", "failover"), ("result", "refused")))] == 1.0
    # the histogram is cumulative: 4 ms is within 5 ms, 30 ms is not within 25 ms
    assert m[("ipshift_run_duration_seconds_bucket", (("kind", "failover"), ("le", "0.005")))] == 1.0
    assert m[("ipshift_run_duration_seconds_bucket", (("kind", "failover"), ("le", "0.025")))] == 1.0
    assert m[("ipshift_run_duration_seconds_bucket", (("kind", "failover"), ("le", "0.05")))] == 2.0
    assert m[("ipshift_run_duration_seconds_bucket", (("kind", "failover"), ("le", "+Inf")))] == 2.0
    assert m[("ipshift_run_duration_seconds_count", (("kind", "failover"),))] == 2.0
    assert m[("ipshift_run_duration_seconds_sum", (("kind", "failover"),))] == pytest.approx(0.034)
    assert m[("ipshift_last_run_timestamp_seconds", (("kind", "failback"), ("nic", "eth0")))] == 1002.0


def test_nothing_run_yet_still_scrapes() -> None:
    m = scrape(View(ready=False, nic_states={}, path={}, held={}, away=0, missing=1), Tally())
    assert m[("ipshift_ready", ())] == 0.0 and m[("ipshift_addresses_missing", ())] == 1.0


BASE = {"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}, "eth1": {"addresses": ["192.0.2.11/24"]}}}


@pytest.mark.parametrize(("listen", "host", "port"), [("192.0.2.11:9567", "192.0.2.11", 9567),
                                                      ("[2001:db8::1]:9100", "2001:db8::1", 9100)])
def test_listen_address(listen: str, host: str, port: int) -> None:
    c = parse_config(yaml.safe_dump({**BASE, "metrics": {"listen": listen}}), "x.yaml")
    assert c.metrics is not None and (c.metrics.host, c.metrics.port) == (host, port)


@pytest.mark.parametrize(("listen", "why"), [("localhost:9567", "not an IP address"), ("192.0.2.11", "not HOST:PORT"),
                                             ("192.0.2.11:0", "not HOST:PORT"), ("192.0.2.11:http", "not HOST:PORT")])
def test_bad_listen_address_is_one_line(listen: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump({**BASE, "metrics": {"listen": listen}}), "x.yaml")
    assert "metrics.listen" in str(info.value) and why in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- the HTTP server, under abuse
# (a server on 127.0.0.1, port 0, in the test's own event loop; every loop below is bounded)

BODY = b"ipshift_ready 1.0\n"


async def _scrape(accept: str) -> tuple[bytes, str]:
    return BODY, "text/plain; version=0.0.4; charset=utf-8"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _get(port: int) -> bytes:
    """One ``GET /metrics``: the whole answer, b"" when the server closed without one."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nAccept: text/plain\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 2)
    except ConnectionError:
        return b""
    finally:
        writer.close()


def test_a_thousand_idle_connections_cost_at_most_the_limit_and_a_scrape_still_gets_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 1.0)

    async def scenario() -> None:
        server = await serve("127.0.0.1", 0, _scrape)
        port = server.sockets[0].getsockname()[1]
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            before = _fds()
            for _ in range(1000):
                conns.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2))
            await asyncio.sleep(0.3)  # the server has accepted them all
            server_side = _fds() - before - len(conns)
            assert server_side <= MAX_CONNECTIONS + 2, f"{server_side} descriptors held for 1,000 idle clients"
            # those over the limit were closed at once
            assert sum(r.at_eof() for r, _ in conns) >= 1000 - MAX_CONNECTIONS
            # a real scrape gets its answer once the idle ones have used up their time (bounded retries)
            t0 = time.monotonic()
            answer = b""
            for _ in range(100):
                answer = await _get(port)
                if answer or time.monotonic() - t0 > metrics.REQUEST_TIMEOUT + 2:
                    break
                await asyncio.sleep(0.05)
            assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and answer.endswith(BODY), answer
            assert time.monotonic() - t0 < metrics.REQUEST_TIMEOUT + 1.0
        finally:
            for _, w in conns:
                w.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_slowloris_client_is_dropped_after_the_request_timeout_in_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 1.0)

    async def scenario() -> None:
        server = await serve("127.0.0.1", 0, _scrape)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()

        async def trickle() -> None:  # one byte every 100 ms, never the blank line; at most 40 bytes
            try:
                for b in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"x" * 40:
                    writer.write(bytes([b]))
                    await writer.drain()
                    await asyncio.sleep(0.1)
            except ConnectionError:
                pass

        sender = asyncio.create_task(trickle())
        try:
            data = await asyncio.wait_for(reader.read(), 3.5)
            elapsed = time.monotonic() - t0
            assert data == b"" and 0.9 <= elapsed < 1.6, (data, elapsed)
            assert await _get(port) != b""  # and the server serves others meanwhile and after
        finally:
            sender.cancel()
            writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_an_oversized_request_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        server = await serve("127.0.0.1", 0, _scrape)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /metrics HTTP/1.0\r\nX-Big: " + b"x" * (2 * metrics.MAX_REQUEST))
            try:
                await writer.drain()
                data = await asyncio.wait_for(reader.read(), 2)
            except ConnectionError:
                data = b""
            assert data == b""
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_client_that_never_reads_the_answer_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 0.5)
    big = b"x" * (16 << 20)  # far more than the socket buffers hold

    async def scrape(accept: str) -> tuple[bytes, str]:
        return big, "text/plain"

    async def scenario() -> None:
        server = await serve("127.0.0.1", 0, scrape)
        port = server.sockets[0].getsockname()[1]
        before = _fds()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
            assert _fds() - before == 2  # both ends
            for _ in range(40):  # bounded: 2 s
                await asyncio.sleep(0.05)
                if _fds() - before == 1:
                    break
            assert _fds() - before == 1, "the server still holds the connection of a client that does not read"
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), 10))
