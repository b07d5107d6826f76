"""The planner: may an address of a failed NIC live on a survivor, and how does it move? (pure)

Three modules, one concern each:

* :mod:`ipshift.plan.checks` -- the eligibility checks with their stable codes;
* :mod:`ipshift.plan.builders` -- the ordered steps of one move, one route ledger per plan;
* :mod:`ipshift.plan.converge` -- plans for a failed NIC, for a NIC that is back, for all.

Nothing here performs I/O; the names below are the planner's public surface.
"""

from ipshift.plan.builders import RouteLedger, RouteSpec, macvlan_name, vlan_device
from ipshift.plan.checks import (
    CHECK_CODES, Candidate, Failure, Load, addresses_on, evaluate, managed_devices, nic_of,
)
from ipshift.plan.converge import (
    Move, Plan, PlanKind, Refusal, all_plans, candidates_for, converge, plan_failback, plan_failover,
)

__all__ = [
    "CHECK_CODES", "Candidate", "Failure", "Load", "Move", "Plan", "PlanKind", "Refusal", "RouteLedger",
    "RouteSpec", "addresses_on", "all_plans", "candidates_for", "converge", "evaluate", "macvlan_name",
    "managed_devices", "nic_of", "plan_failback", "plan_failover", "vlan_device",
]
