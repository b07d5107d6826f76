"""The daemon's process loads only the parts of pyroute2 it uses."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import json, sys
from ipshift.kernel import load_pyroute2_lean
assert load_pyroute2_lean()
import ipshift.cli, ipshift.daemon, ipshift.control, ipshift.kernel.apply, ipshift.kernel.monitor
import ipshift.kernel.snapshot, ipshift.kernel.features, ipshift.kernel.netns, ipshift.pathprobe
from pyroute2.iproute.linux import AsyncIPRoute, IPRoute
from pyroute2.netlink.exceptions import NetlinkError
assert not load_pyroute2_lean()  # once only
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("pyroute2.ndb", "pyroute2.ipdb", "sqlite3")))))
"""


def test_daemon_imports_without_pyroute2s_package_wide_imports() -> None:
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


def test_a_process_that_imported_pyroute2_keeps_it_whole() -> None:
    child = "import pyroute2\nfrom ipshift.kernel import load_pyroute2_lean\nassert not load_pyroute2_lean()\n" \
            "from pyroute2 import IPRoute, NDB\n"
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
