"""Names for throwaway lab namespaces that no other lab uses at the same time.

Theory of operation: a lab's namespaces share a prefix made of a base, this
process's pid in base 36 and a per-process counter (``ipsk2xk-0``), so that
neither two labs of one process nor labs of concurrent processes collide. A
candidate that is the start of an existing name in ``/run/netns`` (a leftover
of a crashed run whose pid was recycled) is skipped. The only I/O is listing
that directory; :mod:`ipshift.lab` re-exports :func:`unique_prefix`.
"""

from __future__ import annotations

import itertools
import os

__all__ = ["NETNS_DIR", "unique_prefix"]

NETNS_DIR = "/run/netns"

# Process-wide counter: the one piece of module state, there so that two labs
# made by the same process get different prefixes (itertools.count is atomic
# under the GIL).
_PREFIX_COUNTER = itertools.count()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def unique_prefix(base: str) -> str:
    """A short namespace-name prefix no other lab (in this or another process) uses.

    ``base`` + the pid in base 36 + ``-`` + a per-process counter, e.g.
    ``ipsk2xk-0``. A candidate that is the start of an existing namespace name
    (a leftover of a crashed run whose pid was recycled) is skipped.
    """
    pid = _base36(os.getpid())
    try:
        existing = os.listdir(NETNS_DIR)
    except OSError:
        existing = []
    while True:
        candidate = f"{base}{pid}-{_base36(next(_PREFIX_COUNTER))}"
        if not any(name.startswith(candidate) for name in existing):
            return candidate
