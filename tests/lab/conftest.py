"""Fixtures for lab tests: namespace labs that are always torn down.

* ``netns_ok``: session-scoped guard (skip, or fail under
  IPSHIFT_REQUIRE_NETNS=1, when namespaces are unavailable). Request it from
  module- or session-scoped fixtures that build labs: the autouse guard of
  ``tests/conftest.py`` is function-scoped and runs after them.
* ``make_lab(**kwargs)``: build a :class:`~ipshift.lab.Lab` (prefix from
  ``unique_prefix("ipsk")`` unless given) and return it created; every lab it
  made is destroyed when the test ends, whether it passed or not.
* ``lab``: ``make_lab()``, a created 2-NIC lab.
* ``make_daemon(lab, config)``: start ``ipshift run`` in the lab's gateway
  namespace with ``config`` (a dict; ``state_dir`` defaults to a temporary
  directory), wait until it answers ``status``, and return a
  :class:`DaemonHandle`; every daemon it started is ended (by PID) at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labtools import DaemonHandle

from ipshift.lab import Lab, unique_prefix


def _require_netns(config: pytest.Config) -> None:
    # tests/conftest.py is registered as a plugin; reuse its guard (its
    # module cannot be imported by name: every conftest module is "conftest").
    for plugin in config.pluginmanager.get_plugins():
        require = getattr(plugin, "require_netns", None)
        if callable(require):
            require()
            return
    raise RuntimeError("tests/conftest.py (require_netns) is not loaded")


@pytest.fixture(scope="session")
def netns_ok(request: pytest.FixtureRequest) -> None:
    _require_netns(request.config)


@pytest.fixture
def make_lab(netns_ok: None) -> Iterator[Callable[..., Lab]]:
    labs: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        prefix = kwargs.pop("prefix", None) or unique_prefix("ipsk")
        lab = Lab(prefix, **kwargs)
        labs.append(lab)  # before create(): destroy() also cleans a half-built lab
        return lab.create()

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.destroy()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonHandle]]:
    handles: list[DaemonHandle] = []

    def make(lab: Lab, config: dict[str, Any], *, start: bool = True, env: dict[str, str] | None = None
             ) -> DaemonHandle:
        workdir = tmp_path / f"d{len(handles)}"
        workdir.mkdir()
        h = DaemonHandle(lab, config, workdir, env)
        handles.append(h)
        return h.start() if start else h

    try:
        yield make
    finally:
        for h in handles:
            h.stop()
