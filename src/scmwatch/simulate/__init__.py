"""Scenario simulator: faithful attack and background Windows/Zeek logs with ground-truth labels.

``simulate(Options(...))`` writes logs the readers accept (flat NDJSON, wevtutil XML,
Winlogbeat/ECS NDJSON, Zeek JSON) plus ``labels.jsonl``; see ``engine.py`` for the loop,
``scenarios/`` for the attacks, ``background.py`` for benign traffic.
"""

from scmwatch.simulate.engine import Options, Result, expand_names, simulate
from scmwatch.simulate.scenarios import SCENARIOS, load_all

__all__ = ["SCENARIOS", "Options", "Result", "expand_names", "load_all", "simulate"]
