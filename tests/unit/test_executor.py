"""The executor contains the kernel's and the sockets' errors: they fail steps, never the daemon."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from typing import Any

from ipshift.kernel.apply import Executor
from ipshift.steps import AddAddress, Announce, CheckConflict, Conflict

IP = ipaddress.ip_interface("192.0.2.10/24")


class BrokenBatch:
    def __init__(self, code: int) -> None:
        self.code = code

    def addresses(self, add: bool, items: Any) -> list[int]:
        raise OSError(self.code, "boom")

    def routes(self, add: bool, items: Any) -> list[int]:
        raise OSError(self.code, "boom")

    def close(self) -> None: ...


class NoIPR:
    async def link_lookup(self, ifname: str) -> list[int]:
        return []


def test_a_netlink_batch_that_fails_fails_its_steps() -> None:
    async def run() -> list[str]:
        ex = Executor(NoIPR(), batch=BrokenBatch(errno.ENOBUFS))
        ex.learn_link("eth1", 3, "02:00:00:00:00:11")
        return await ex.run_batch([AddAddress("eth1", IP), AddAddress("eth1", ipaddress.ip_interface("192.0.2.11/24"))])

    errors = asyncio.run(run())
    assert len(errors) == 2 and all("errno 105" in e for e in errors)


def test_a_probe_without_sockets_is_an_error_not_a_conflict(monkeypatch: Any) -> None:
    import ipshift.kernel.apply as apply_mod

    async def no_sockets(*a: Any, **k: Any) -> dict[Any, str]:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(apply_mod, "probe_conflicts_many", no_sockets)

    async def run() -> list[str]:
        ex = Executor(NoIPR())
        ex.learn_link("eth1", 3, "02:00:00:00:00:11")
        return await ex.run_batch([CheckConflict("eth1", IP.ip, 0.01)])

    (err,) = asyncio.run(run())
    assert "Too many open files" in err and not isinstance(err, Conflict)


def test_an_announcement_on_a_device_that_went_away_is_its_error() -> None:
    async def run() -> list[str]:
        ex = Executor(NoIPR())
        ex.learn_link("gone0", 99, "02:00:00:00:00:99")  # no such device: the socket cannot be opened
        return await ex.run_batch([Announce("gone0", IP.ip, 1, 0.01)])

    (err,) = asyncio.run(run())
    assert err
