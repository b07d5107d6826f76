"""Shared test settings.

Lab tests need root and network namespaces. Where they are missing the tests
skip, except when IPSHIFT_REQUIRE_NETNS=1 (CI), where a skip for missing
privileges is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def netns_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    probe = f"ipsck{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create network namespaces: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


_REASON: list[str | None] = []


def require_netns() -> None:
    """Skip (or, under IPSHIFT_REQUIRE_NETNS=1, fail) when namespaces are unavailable."""
    if not _REASON:
        _REASON.append(netns_unavailable_reason())
    reason = _REASON[0]
    if reason is None:
        return
    if os.environ.get("IPSHIFT_REQUIRE_NETNS") == "1":
        pytest.fail(f"IPSHIFT_REQUIRE_NETNS=1 but lab tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"lab test: {reason}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(autouse=True)
def _lab_guard(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("lab") is not None:
        require_netns()
