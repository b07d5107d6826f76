"""The status text an operator reads."""

from __future__ import annotations

from ipshift.report import status_text


def test_status_text_says_when_the_daemon_is_still_starting() -> None:
    base = {"pid": 7, "config": "/etc/ipshift.yaml", "failback": "auto", "nics": {}, "addresses": {},
            "failovers": []}
    assert "starting: still converging" in status_text({**base, "ready": False})
    assert "starting" not in status_text({**base, "ready": True})
    assert "starting" not in status_text(base)  # an older daemon that does not say
