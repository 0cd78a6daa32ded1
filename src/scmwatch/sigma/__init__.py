"""The Sigma engine: load rules with pySigma, compile them to predicates, match events fast.

Public API (stable; the rule-pack, correlation and simulator code builds on it)::

    from scmwatch.sigma import load_rules, Engine

    ruleset = load_rules(["rules/", "extra.yml"], placeholders=None)  # or a YAML file / dict
    ruleset.rules         # list[CompiledRule]: single-event rules that loaded and compiled
    ruleset.correlations  # list[sigma.correlations.SigmaCorrelationRule], untouched pySigma objects
    ruleset.rejected      # list[(path, one-line reason)]: files/documents/rules that failed
    ruleset.warnings      # list[str]: loaded but worth knowing (duplicate ids ...)
    ruleset.not_run       # list[(CompiledRule, reason)]: compiled, but no event source to run on

    engine = Engine(ruleset)
    engine.match(event)   # -> list[CompiledRule] matching this scmwatch.events.Event (load order)

``CompiledRule`` fields: ``id`` (str UUID), ``title``, ``level`` (lower-case; "informational"
when absent), ``description``, ``tags`` (``["attack.t1569.002", ...]``), ``name`` (Sigma
``name:`` or None; correlations reference rules by it), ``custom`` (non-standard top-level
attributes, e.g. ``maxpatrol_rule``), ``logsource`` (dict product/category/service), ``path``,
``sigma`` (the pySigma ``SigmaRule``), ``status``, ``fields`` (Sigma ``fields:``), ``sources``
(event sources it runs on) and ``flags`` (why it does not run on some source).

Modules, one job each: ``load`` (pySigma parsing), ``logsource`` (THE logsource → channel /
EventID table and the Security-4688 field map), ``values`` + ``compile`` (semantics), ``ruleset``
(rule objects, ``load_rules``), ``index`` (``Engine``: index + prefilter + predicates).
"""

from scmwatch.sigma.index import Engine
from scmwatch.sigma.ruleset import CompiledRule, RuleSet, load_rules
from scmwatch.sigma.values import CompileError

__all__ = ["CompileError", "CompiledRule", "Engine", "RuleSet", "load_rules"]
