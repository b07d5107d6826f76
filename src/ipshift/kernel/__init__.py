"""The kernel adapters: netlink through pyroute2, namespaces, the event monitor, the executor."""

from __future__ import annotations

import importlib.util
import sys


def load_pyroute2_lean() -> bool:
    """Register the ``pyroute2`` package without running its ``__init__``; True if done.

    pyroute2's package module imports every part of the library (NDB with sqlite3, IPDB,
    generic-netlink families, nftables, ...): about 6 MiB of memory and 50 ms of start-up
    that the daemon never uses. ipshift imports what it uses by full module name
    (``pyroute2.iproute.linux``, ``pyroute2.netlink.rtnl...``), which works the same with
    or without the package's ``__init__`` having run. A program calls this once, before
    anything imports pyroute2 (the CLI does); when pyroute2 is already imported, or cannot be
    found, nothing changes. Code that then wants a name from the package itself
    (``from pyroute2 import NDB``) must import it from its module instead.
    """
    if "pyroute2" in sys.modules:
        return False
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.submodule_search_locations is None:
        return False
    sys.modules["pyroute2"] = importlib.util.module_from_spec(spec)
    return True
