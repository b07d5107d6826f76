"""Metrics: the families a scrape returns, read back with prometheus_client's own parser."""

from __future__ import annotations

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ipshift.config import ConfigError, parse_config
from ipshift.metrics import Tally, View, exposition, families


def scrape(view: View, tally: Tally) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, ctype = exposition(families(view, tally))
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


VIEW = View(ready=True, nic_states={"eth0": "down", "eth1": "up"}, path={"eth0": "failed", "eth1": None},
            held={"eth1": 3}, away=2, missing=0)


def test_states_addresses_and_counters() -> None:
    t = Tally()
    t.record("failover", "eth0", 0.004, moved=2, failed=0, refused=1, ended=1000.0)
    t.record("failover", "eth0", 0.030, moved=1, failed=1, refused=0, ended=1001.0)
    t.record("failback", "eth0", 0.002, moved=3, failed=0, refused=0, ended=1002.0)
    m = scrape(VIEW, t)
    assert m[("ipshift_ready", ())] == 1.0
    assert m[("ipshift_nic_state", (("nic", "eth0"), ("state", "down")))] == 1.0
    assert m[("ipshift_nic_state", (("nic", "eth0"), ("state", "up")))] == 0.0
    assert m[("ipshift_nic_state", (("nic", "eth1"), ("state", "up")))] == 1.0
    assert m[("ipshift_nic_path", (("nic", "eth0"), ("verdict", "failed")))] == 1.0
    assert not any(k[0] == "ipshift_nic_path" and ("nic", "eth1") in k[1] for k in m)  # not probed
    assert m[("ipshift_addresses", (("device", "eth1"),))] == 3.0
    assert m[("ipshift_addresses_away", ())] == 2.0
    assert m[("ipshift_runs_total", (("kind", "failover"), ("nic", "eth0")))] == 2.0
    assert m[("ipshift_runs_total", (("kind", "failback"), ("nic", "eth0")))] == 1.0
    assert m[("ipshift_moves_total", (("kind", "failover"), ("result", "moved")))] == 3.0
    assert m[("ipshift_moves_total", (("kind", "failover"), ("result", "failed")))] == 1.0
    assert m[("ipshift_moves_total", (("kind", "failover"), ("result", "refused")))] == 1.0
    # the histogram is cumulative: 4 ms is within 5 ms, 30 ms is not within 25 ms
    assert m[("ipshift_run_duration_seconds_bucket", (("kind", "failover"), ("le", "0.005")))] == 1.0
    assert m[("ipshift_run_duration_seconds_bucket", (("kind", "failover"), ("le", "0.025")))] == 1.0
    assert m[("ipshift_run_duration_seconds_bucket", (("kind", "failover"), ("le", "0.05")))] == 2.0
    assert m[("ipshift_run_duration_seconds_bucket", (("kind", "failover"), ("le", "+Inf")))] == 2.0
    assert m[("ipshift_run_duration_seconds_count", (("kind", "failover"),))] == 2.0
    assert m[("ipshift_run_duration_seconds_sum", (("kind", "failover"),))] == pytest.approx(0.034)
    assert m[("ipshift_last_run_timestamp_seconds", (("kind", "failback"), ("nic", "eth0")))] == 1002.0


def test_nothing_run_yet_still_scrapes() -> None:
    m = scrape(View(ready=False, nic_states={}, path={}, held={}, away=0, missing=1), Tally())
    assert m[("ipshift_ready", ())] == 0.0 and m[("ipshift_addresses_missing", ())] == 1.0


BASE = {"interfaces": {"eth0": {"addresses": ["192.0.2.10/24"]}, "eth1": {"addresses": ["192.0.2.11/24"]}}}


@pytest.mark.parametrize(("listen", "host", "port"), [("192.0.2.11:9567", "192.0.2.11", 9567),
                                                      ("[2001:db8::1]:9100", "2001:db8::1", 9100)])
def test_listen_address(listen: str, host: str, port: int) -> None:
    c = parse_config(yaml.safe_dump({**BASE, "metrics": {"listen": listen}}), "x.yaml")
    assert c.metrics is not None and (c.metrics.host, c.metrics.port) == (host, port)


@pytest.mark.parametrize(("listen", "why"), [("localhost:9567", "not an IP address"), ("192.0.2.11", "not HOST:PORT"),
                                             ("192.0.2.11:0", "not HOST:PORT"), ("192.0.2.11:http", "not HOST:PORT")])
def test_bad_listen_address_is_one_line(listen: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump({**BASE, "metrics": {"listen": listen}}), "x.yaml")
    assert "metrics.listen" in str(info.value) and why in str(info.value) and "\n" not in str(info.value)
