"""Prometheus metrics: what the daemon knows, in the exposition format, on ``metrics.listen``.

Theory of operation
-------------------
Nothing is updated on the failover path except one :class:`Tally` call after a
record is finished (counters and a duration histogram: a few dictionary
updates). Everything else -- NIC states, where the addresses are -- is read
when Prometheus scrapes: the daemon hands :func:`families` a plain
:class:`View` built on its event loop from immutable values, in slices and
only while no plan runs (:mod:`ipshift.status`), so a scrape never slows a
failover down.

The HTTP side is a minimal asyncio server on the daemon's own loop (no
thread): ``GET /metrics`` answers with ``prometheus_client``'s text
exposition of the families, anything else gets 404. One request per
connection, and nobody can make the daemon hold many: at most
``MAX_CONNECTIONS`` are served at a time, and one over that is closed at once
(1,000 idle clients cost 16 descriptors, not 1,000); a request is at most
``MAX_REQUEST`` bytes and must have arrived in full within
``REQUEST_TIMEOUT`` of the connection's start (in total: a client that
trickles a byte a second is dropped then, not kept alive by each byte), and
the answer must be taken within ``REQUEST_TIMEOUT`` too, else the connection
is aborted (:func:`close_now`). prometheus-client is imported only when
metrics are enabled.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ipshift.metrics")

# failover and failback durations (carrier loss / path verdict to the record's end), seconds
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_REQUEST = 8192
MAX_CONNECTIONS = 16
REQUEST_TIMEOUT = 5.0


@dataclass
class Tally:
    """Counters since start (pure; the daemon calls :meth:`record` when a failover record ends)."""

    runs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (nic, kind)
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, result)
    buckets: dict[str, list[int]] = field(default_factory=dict)  # kind -> cumulative counts per BUCKETS
    sums: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    last: dict[tuple[str, str], float] = field(default_factory=dict)  # (nic, kind) -> wall clock of the end

    def record(self, kind: str, nic: str, seconds: float, moved: int, failed: int, refused: int,
               ended: float) -> None:
        self.runs[(nic, kind)] += 1
        for result, n in (("moved", moved), ("failed", failed), ("refused", refused)):
            if n:
                self.moves[(kind, result)] += n
        counts = self.buckets.setdefault(kind, [0] * len(BUCKETS))
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
        self.sums[kind] = self.sums.get(kind, 0.0) + seconds
        self.counts[kind] += 1
        self.last[(nic, kind)] = ended


@dataclass(frozen=True)
class View:
    """What a scrape reports besides the tally, read on the daemon's loop."""

    ready: bool
    nic_states: Mapping[str, str]  # nic -> up | down | returning | held | drained
    path: Mapping[str, str | None]  # nic -> unverified | up | failed | None (not probed)
    held: Mapping[str, int]  # device -> configured addresses on it
    away: int  # configured addresses on a device other than their home NIC
    missing: int  # configured addresses on no device at all
    conflicts: tuple[tuple[str, str], ...] = ()  # (address, NIC) another host uses, seen by background probes
    background_probes: int | None = None  # background conflict probes sent (None: not probing ahead)


STATES = ("up", "down", "returning", "held", "drained")
VERDICTS = ("unverified", "up", "failed")


def families(view: View, tally: Tally) -> list[Any]:
    """The metric families of one scrape (prometheus_client core objects)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    out: list[Any] = []
    ready = GaugeMetricFamily("ipshift_ready", "1 once the start-up convergence is done")
    ready.add_metric([], 1.0 if view.ready else 0.0)
    out.append(ready)
    state = GaugeMetricFamily("ipshift_nic_state", "1 for the NIC's current state", labels=["nic", "state"])
    for nic, current in sorted(view.nic_states.items()):
        for s in STATES:
            state.add_metric([nic, s], 1.0 if s == current else 0.0)
    out.append(state)
    path = GaugeMetricFamily("ipshift_nic_path", "1 for the NIC's path-probe verdict (probed NICs only)",
                             labels=["nic", "verdict"])
    for nic, verdict in sorted(view.path.items()):
        if verdict is None:
            continue
        for v in VERDICTS:
            path.add_metric([nic, v], 1.0 if v == verdict else 0.0)
    out.append(path)
    held = GaugeMetricFamily("ipshift_addresses", "configured addresses held by the device", labels=["device"])
    for dev, n in sorted(view.held.items()):
        held.add_metric([dev], float(n))
    out.append(held)
    away = GaugeMetricFamily("ipshift_addresses_away", "configured addresses held by a NIC other than their home")
    away.add_metric([], float(view.away))
    out.append(away)
    missing = GaugeMetricFamily("ipshift_addresses_missing", "configured addresses held by no device")
    missing.add_metric([], float(view.missing))
    out.append(missing)
    seen = GaugeMetricFamily("ipshift_address_conflict", "1 for a configured address another host uses on the "
                             "segment of the NIC (background conflict probes)", labels=["address", "nic"])
    for address, nic in view.conflicts:
        seen.add_metric([address, nic], 1.0)
    out.append(seen)
    if view.background_probes is not None:
        sent = CounterMetricFamily("ipshift_background_conflict_probes", "background RFC 5227 / DAD probes sent")
        sent.add_metric([], float(view.background_probes))
        out.append(sent)
    runs = CounterMetricFamily("ipshift_runs", "failovers and failbacks run, by the NIC they were for",
                               labels=["nic", "kind"])
    for (nic, kind), n in sorted(tally.runs.items()):
        runs.add_metric([nic, kind], float(n))
    out.append(runs)
    moves = CounterMetricFamily("ipshift_moves", "address moves by outcome (refused: no NIC could take it)",
                                labels=["kind", "result"])
    for (kind, result), n in sorted(tally.moves.items()):
        moves.add_metric([kind, result], float(n))
    out.append(moves)
    hist = HistogramMetricFamily("ipshift_run_duration_seconds",
                                 "from the trigger reaching ipshift to the end of the failover or failback",
                                 labels=["kind"])
    for kind, counts in sorted(tally.buckets.items()):
        bkts = [(repr(b), float(c)) for b, c in zip(BUCKETS, counts)] + [("+Inf", float(tally.counts[kind]))]
        hist.add_metric([kind], bkts, sum_value=tally.sums[kind])
    out.append(hist)
    last = GaugeMetricFamily("ipshift_last_run_timestamp_seconds", "when the last failover or failback ended",
                             labels=["nic", "kind"])
    for (nic, kind), t in sorted(tally.last.items()):
        last.add_metric([nic, kind], t)
    out.append(last)
    return out


def exposition(fams: Iterable[Any], accept: str = "") -> tuple[bytes, str]:
    """``fams`` in the exposition format the scraper asked for (its ``Accept`` header; by
    default the classic text format 0.0.4 every Prometheus reads), and its content type."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    class _Fixed:
        def collect(self) -> Iterable[Any]:
            return fams

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


async def serve(host: str, port: int, scrape: Callable[[str], Awaitable[tuple[bytes, str]]]) -> asyncio.Server:
    """An HTTP server for ``GET /metrics`` on the running loop; ``await scrape(accept)`` makes the body."""

    active = 0  # connections being served

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= MAX_CONNECTIONS:
            log.debug("metrics connection refused: %d already being served", active)
            writer.close()
            return
        active += 1
        writer.transport.set_write_buffer_limits(0)  # drain() returns once everything went to the kernel
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):  # the whole request, not each read
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            accept = next((v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
                           if k.strip().lower() == "accept"), "")
            if len(parts) >= 2 and parts[0] in ("GET", "HEAD") and parts[1].split("?")[0] == "/metrics":
                body, content_type = await scrape(accept)
                status, ctype = b"200 OK", content_type.encode()
            else:
                body = b"ipshift: only /metrics here\n"
                status, ctype = b"404 Not Found", b"text/plain; charset=utf-8"
            writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype
                         + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
            if parts[:1] != ["HEAD"]:
                writer.write(body)
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError) as exc:
            log.debug("metrics request dropped: %s", exc or type(exc).__name__)
        finally:
            active -= 1
            close_now(writer)

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST)


def close_now(writer: asyncio.StreamWriter) -> None:
    """Close now: what a client did not take in time is dropped (``close()`` alone would keep the
    connection, and its descriptor, until the client reads it all -- that is, maybe forever)."""
    if writer.transport.get_write_buffer_size():
        writer.transport.abort()
    else:
        writer.close()
