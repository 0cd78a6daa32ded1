"""Attack scenarios, one module per tool family, registered by name.

A scenario is a function ``run(ctx, t, src, dst)`` that appends the events of one execution of
the technique to ``ctx`` (source host ``src``, target ``dst``), each marked with the
detections it must raise. :data:`SCENARIOS` maps the CLI name to a :class:`Scenario`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scmwatch.simulate.actions import Ctx
from scmwatch.simulate.world import Host


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    run: Callable[[Ctx, float, Host, Host], None]
    source: str  # "windows" (the attacker's foothold logs too), "linux" (network traces only), "local"
    target: str = "any"  # "any", "server", "sql", "workstation"
    duration: float = 120.0  # upper bound of the episode length in seconds


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, summary: str, source: str, target: str = "any", duration: float = 120.0):
    def register(fn: Callable[[Ctx, float, Host, Host], None]):
        SCENARIOS[name] = Scenario(name, summary, fn, source, target, duration)
        return fn

    return register


# Detection keys: the MaxPatrol code of the pack's ``maxpatrol_rule`` attribute, or "none".
WINEXEC = "PT-CR-215"
BINPATH = "PT-CR-785"
UNC = "PT-CR-1752"
SVCCTL = "PT-CR-1981"
IMPACKET = "PT-CR-226"
PSEXEC = "PT-CR-589"
MSSQL = "PT-CR-425"
NIMEXEC = "PT-CR-1838"
WANNA_SUB = "PT-CR-2756"
WANNA = "PT-CR-2757"
SMBEXEC = "PT-CR-523"
SLIVER = "PT-CR-1356"
MS17 = "PT-CR-2754"
REMREG = "PT-CR-1962"
HIDDEN = "PT-CR-778"
ODDPATH = "PT-CR-257"
PSEXEC_SRC = "PT-CR-217"
CLI = "PT-CR-271"
SVC_CMD = "none"
# detections that have no MaxPatrol rule (the pack's own variants) share the "none" key with the
# MITRE analytic: labels name what must fire, the rule titles say which variant it is
VARIANT = "none"


def load_all() -> dict[str, Scenario]:
    """Import every family module (each registers its scenarios) and return the registry."""
    from scmwatch.simulate.scenarios import (  # noqa: F401
        clones,
        impacket,
        misc,
        psexec,
        registry,
        sc_remote,
        tools,
    )

    order = ["psexec", "impacket", "clones", "sc_remote", "tools", "registry", "misc"]
    ranked = sorted(SCENARIOS.values(), key=lambda sc: order.index(sc.run.__module__.rsplit(".", 1)[-1]))
    SCENARIOS.clear()
    SCENARIOS.update((sc.name, sc) for sc in ranked)
    return SCENARIOS

