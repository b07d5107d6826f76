"""ipshift: keep a multi-NIC gateway's IP addresses reachable when a NIC fails."""

__version__ = "0.1.0"
