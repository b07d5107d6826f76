"""The status text an operator reads."""

from __future__ import annotations

from ipshift.report import status_text


def test_status_text_says_when_the_daemon_is_still_starting() -> None:
    base = {"pid": 7, "config": "/etc/ipshift.yaml", "failback": "auto", "nics": {}, "addresses": {},
            "failovers": []}
    assert "starting: still converging" in status_text({**base, "ready": False})
    assert "starting" not in status_text({**base, "ready": True})
    assert "starting" not in status_text(base)  # an older daemon that does not say


def test_a_record_shows_undone_steps_and_each_moves_verification() -> None:
    from ipshift.report import record_text

    step = {"op": "AddAddress", "text": "add 192.0.2.10/24 to eth0", "at_ms": 1.0, "ms": 0.2, "ok": True,
            "error": "", "undo": True}
    rec = {"id": 3, "kind": "failover", "nic": "eth0", "trigger": "carrier lost", "started": 0, "total_ms": 5.0,
           "moves": [{"address": "192.0.2.10/24", "source": "eth0", "device": "eth1", "ok": False,
                      "error": "add 192.0.2.10/24 to eth1: EPERM", "first_announce_ms": None, "steps": [step]},
                     {"address": "192.0.2.11/24", "source": "eth0", "device": "eth1", "ok": True, "error": "",
                      "first_announce_ms": 2.0, "steps": []}],
           "verification": {"state": "done", "moves": {"192.0.2.11/24": {"result": "confirmed", "by": "192.0.2.1",
                                                                          "at_ms": 12.5, "detail": ""}}}}
    text = record_text(rec)
    assert "undo: add 192.0.2.10/24 to eth0" in text
    assert "192.0.2.11/24: eth0 -> eth1 ok, first announcement at 2.00 ms, confirmed by 192.0.2.1 at 12.5 ms" in text
