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
        variants,
    )

    order = ["psexec", "impacket", "clones", "sc_remote", "tools", "registry", "misc", "variants"]
    ranked = sorted(SCENARIOS.values(), key=lambda sc: order.index(sc.run.__module__.rsplit(".", 1)[-1]))
    SCENARIOS.clear()
    SCENARIOS.update((sc.name, sc) for sc in ranked)
    return SCENARIOS

