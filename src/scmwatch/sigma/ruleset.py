"""Compiled rules and the rule set: pySigma rules + logsource → per-source predicates.

``load_rules`` is the one entry point: load (``load.py``) → gate (``logsource.py``) → compile
(``compile.py``). A rule that cannot be compiled for any source is rejected with a reason; a
rule that runs on fewer sources than its logsource names (e.g. process_creation rules that need
Sysmon-only fields, so cannot fire on Security 4688) carries a flag saying so.

A rule set from the cache (``cache.py``) has everything but its predicates and pySigma rules:
``Unit.pred`` compiles the rule on first access, ``CompiledRule.sigma`` unpickles it.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scmwatch.sigma.cache import cache_root, lasting, no_gc, open_entry, write_entry
from scmwatch.sigma.compile import (
    PROG_KEY,
    Pred,
    Prog,
    Req,
    _slow,
    c_program,
    compile_condition,
    condition_fields,
    empty_value_fields,
    req_export,
    req_import,
    required_eventids,
)
from scmwatch.sigma.logsource import Key, sources_for
from scmwatch.sigma.values import CompileError

if TYPE_CHECKING:  # loading (YAML, pySigma) is imported when a rule set is not in the cache
    from sigma.correlations import SigmaCorrelationRule
    from sigma.rule import SigmaRule

    from scmwatch.correlate.spec import CorrSpec
    from scmwatch.sigma.load import LoadedSigma


@dataclass(eq=False, slots=True)
class Unit:
    """One rule on one event source: what the index stores.

    Pickled (the rule cache), a unit keeps everything but ``pred``, which its rule compiles
    again on first access; its requirement is pickled with atom keys, not this process's atom
    ids (``compile.req_export``), as bytes of its own, made this process's again on first
    access: only the atom prefilter of a bucket moving to Hyperscan asks for it, and reading
    every unit's at start cost ~20 ms of each start with all SigmaHQ (measured). Its literal
    gates are bytes of their own too, read on first access: a bucket whose layout is cached
    (``plancache.read_layout``) never asks for them, and the 3,479 units' gates were ~6 of the
    ~18 ms the skeleton of all SigmaHQ took to unpickle (measured). In the rule cache's
    skeleton both are left out (``entry_state``): their rule reads them from its entry into
    ``stored_*`` when one is first asked for (``CompiledRule.read_stored``)."""

    rule: CompiledRule
    source: str
    keys: list[Key]
    pred: Pred | bool
    literals: tuple[frozenset[str], ...]  # prefilter gates: all must be hit; () = always evaluate
    literal_fields: frozenset[str] | None = None  # fields the literals can occur in; None: any
    order: int = 0
    requirement: Req = True  # over atoms (compile.py): necessary for ``pred``
    stored_requirement: bytes | None = field(default=None, repr=False)  # pickled, not read yet
    stored_literals: bytes | None = field(default=None, repr=False)  # pickled, not read yet
    # ``pred`` not read yet (a unit from the rule cache): its slot is empty until ``Unit.pred``
    unread: bool = field(default=False, repr=False)

    def __getattr__(self, name: str) -> Any:
        if name == "requirement":
            if self.stored_requirement is None:
                self.rule.read_stored()
            self.requirement = req_import(pickle.loads(self.stored_requirement))  # noqa: S301
            self.stored_requirement = None
            return self.requirement
        if name == "literals":
            if self.stored_literals is None:
                self.rule.read_stored()
            self.literals = pickle.loads(self.stored_literals)  # noqa: S301 - from the rule cache entry
            self.stored_literals = None
            return self.literals
        if name != "pred":
            raise AttributeError(name)
        self.rule.compile_units(self.source)
        return self.pred

    @property
    def never(self) -> bool:
        """Known never to match (its predicate is False), without reading a predicate that is
        not read yet (then it is not known: False)."""
        return not self.unread and self.pred is False

    def __getstate__(self) -> tuple:
        stored = self.stored_requirement
        if stored is None:
            stored = pickle.dumps(req_export(self.requirement), protocol=pickle.HIGHEST_PROTOCOL)
        lits = self.stored_literals
        if lits is None:
            lits = pickle.dumps(self.literals, protocol=pickle.HIGHEST_PROTOCOL)
        return (self.rule, self.source, self.keys, lits, self.literal_fields, self.order, stored)

    def entry_state(self) -> tuple:
        """The state the rule cache's skeleton stores: without the literal gates and the
        requirement, which the entry holds apart (:meth:`CompiledRule.stored_parts`)."""
        return (self.rule, self.source, self.keys, None, self.literal_fields, self.order, None)

    def __setstate__(self, state: tuple) -> None:
        (self.rule, self.source, self.keys, self.stored_literals, self.literal_fields, self.order,
         self.stored_requirement) = state
        self.unread = True


_UNREAD = object()


def _slot(u: Unit) -> Any:
    """The unit's predicate, or ``_UNREAD`` without reading it. Told by a flag, not by the
    empty slot's AttributeError: raising and catching that (here and again in ``never``) cost
    ~2 us per unit of every bucket built; building the attack corpus x5's 142 buckets (4,039
    units, in every ``--jobs`` process) took 51-53 ms with it, 40-45 ms without."""
    return _UNREAD if u.unread else u.pred


def _never(f: dict, low: Any) -> bool:
    return False


def hot_predicates(units: Sequence[Unit]) -> list[Pred | bool]:
    """The units' predicates, for an index's hot loop: ``preds[i](f, low)`` (True: always).

    A unit of a rule from the cache whose predicates are not read yet gets a stand-in that
    reads them (``Unit.pred``) on its first call and puts the real one in its place in this
    list. Building a (Channel, EventID) bucket used to read every predicate of its rules:
    2,183 rules, ~0.1-0.18 s of a dev-corpus hunt with all SigmaHQ and again in every
    ``--jobs`` worker, where the prefilter lets 763 of them run at all (measured)."""
    preds: list[Pred | bool] = []
    for i, u in enumerate(units):
        p = _slot(u)
        preds.append(_stand_in(u, preds, i) if p is _UNREAD else c_program(p))
    return preds


def _stand_in(u: Unit, preds: list[Pred | bool], i: int) -> Pred:
    def first_call(f: dict, low: Any) -> bool:
        q = lite_program(u, preds, i)
        if q is None:
            p = u.pred
            q = _never if p is False else c_program(p)
        preds[i] = q
        return q if isinstance(q, bool) else q(f, low)  # the program: the lambda's code stays unread

    return first_call


def lite_program(u: Unit, preds: list[Pred | bool], i: int) -> Pred | None:
    """The ``Prog`` of unit ``u`` (position ``i`` of a bucket's ``preds``) made from its
    program's parts as the rule cache stores them (``RuleSource.program``), its predicate not
    read: each callable the program names is a :class:`_Later`, which reads the predicate on
    its first call. None: no C extension, no stored program, or not from the cache.

    Why: C answers most programs without calling back into Python (the string tests, null and
    number sets, a regex's prechecks that turn a value away), so most predicates an x5 process
    needed were read (``predpickle``: their closures, RE2 matchers, the lambda) only to have
    their program made: reading the parts alone costs about a third (806 units, 15.4 ->
    4.8 ms in a warm process, 2.4 -> 0.7 MB read)."""
    if Prog is None or not u.unread:
        return None
    source = u.rule.__dict__.get("_source")
    if source is None:
        return None
    src, index = source
    got = src.program(index, u.source)
    if got is None:
        return None
    text, ns, calls = got
    for key in calls:
        ns[key] = _Later(u, key, text, preds, i)
    try:
        return Prog(text, ns, _slow)
    except (ValueError, TypeError, RecursionError):  # not a program this build runs: read the predicate
        return None


class _Later:
    """A callable of a program made by :func:`lite_program`: on its first call the unit's
    predicate is read (``Unit.pred``), the callable under the same key in its namespace called
    from then on, and the bucket's position given the predicate's own program (no detour
    through this object for later events).

    The stored program and predicate come from one compilation (one entry, each piece
    checksummed; a predicate compiled again from the rule, should its piece be damaged, is the
    same code with the same key): should the predicate not have that program after all (the
    rule could not be compiled again, or changed meanwhile), the unit takes what it has from
    now on and this test says no for the event at hand."""

    __slots__ = ("unit", "key", "text", "preds", "i", "fn")

    def __init__(self, unit: Unit, key: str, text: str, preds: list[Pred | bool], i: int) -> None:
        self.unit, self.key, self.text, self.preds, self.i = unit, key, text, preds, i
        self.fn: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        fn = self.fn
        if fn is None:
            fn = self.fn = self._read()
        return fn(*args)

    def _read(self) -> Callable[..., Any]:
        p = self.unit.pred
        self.preds[self.i] = _never if p is False else c_program(p)
        ns = getattr(p, "__globals__", None)
        if ns is None or ns.get(PROG_KEY) != self.text or not callable(ns.get(self.key)):
            return _no
        return ns[self.key]


def _no(*args: Any) -> bool:
    return False


# What a hunt reads of a rule only when it hits (or explains it): see CompiledRule.__getstate__.
DETAILS = ("description", "tags", "custom", "logsource", "path", "fields", "detection_fields", "sources",
           "flags")


@dataclass(eq=False)
class CompiledRule:
    """A single-event Sigma rule ready to run. Hashable by identity."""

    id: str
    title: str
    level: str
    description: str
    tags: list[str]
    name: str | None
    custom: dict[str, Any]
    logsource: dict[str, str | None]
    path: str
    sigma: SigmaRule = field(repr=False)
    status: str | None = None
    fields: list[str] = field(default_factory=list)  # Sigma ``fields:``: what explains a hit
    detection_fields: list[str] = field(default_factory=list)  # fields the condition tests, in order
    sources: list[str] = field(default_factory=list)  # labels of the sources it runs on
    flags: list[str] = field(default_factory=list)  # e.g. not run on Security/4688 because ...
    units: list[Unit] = field(default_factory=list, repr=False)
    # its correlation join key (``correlate.spec.rule_key``) where that is not ``id`` (a rule
    # without a Sigma id: ``id`` is made up, the key is its name or title)
    other_key: str | None = field(default=None, repr=False)

    def __hash__(self) -> int:
        return id(self)

    @property
    def join_key(self) -> str:
        """Its ``correlate.spec.rule_key``, without its pySigma rule (see there)."""
        return self.id if self.other_key is None else self.other_key

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (the rule cache) without the pySigma rule; ``sigma`` comes from the rule
        source the cache attaches (``_source``: ``(RuleSource, index)``). The fields a hunt
        reads only of the rules that hit (``DETAILS``) are pickled apart, as bytes read on first
        access: the skeleton of all SigmaHQ unpickled in 12.6 instead of 20.2 ms."""
        if "_details" not in self.__dict__ and DETAILS[0] not in self.__dict__:
            getattr(self, DETAILS[0])  # a rule from the cache, its details not read yet
        state = self.__dict__.copy()
        state.pop("sigma", None)
        state.pop("_source", None)
        state.pop("_origin", None)
        if "_details" not in state:
            details = {k: state.pop(k) for k in DETAILS}
            state["_details"] = pickle.dumps(details, protocol=pickle.HIGHEST_PROTOCOL)
        return state

    def entry_state(self) -> dict[str, Any]:
        """The state the rule cache's skeleton stores: what a hunt reads of every rule. The
        details and the units' literal gates and requirements (``stored_parts``) are pieces
        of their own in the entry, read on first use (``read_stored``): 4.0 of the 4.9 MB the
        skeleton of all SigmaHQ was, as bytes objects in every process's heap, of which an x5
        hunt reads the details of 343 rules and the gates and requirement of one unit. Without
        them the skeleton unpickled in ~7.4 instead of ~10.8 ms with ~940 instead of ~1,970
        page faults (CPU, 4 alternate runs), before the fork."""
        state = self.__dict__.copy()
        for k in ("sigma", "_source", "_origin", "_details", *DETAILS):
            state.pop(k, None)
        return state

    def stored_parts(self) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
        """A compiled rule's details, and per unit its literal gates and requirement, pickled:
        what :meth:`entry_state` leaves out, as the entry stores it."""
        details = pickle.dumps({k: self.__dict__[k] for k in DETAILS}, protocol=pickle.HIGHEST_PROTOCOL)
        return details, tuple((pickle.dumps(u.literals, protocol=pickle.HIGHEST_PROTOCOL),
                               pickle.dumps(req_export(u.requirement), protocol=pickle.HIGHEST_PROTOCOL))
                              for u in self.units)

    def read_stored(self) -> None:
        """The details and the units' gates and requirements of a rule from the cache, read
        from the entry (or, should its piece be damaged, from the rule compiled again) into
        ``_details`` and the units' ``stored_*`` still empty."""
        source = self.__dict__.get("_source")
        if source is None:
            raise AttributeError("stored parts of a rule not from the rule cache")
        src, index = source
        got = src.stored(index)
        if got is None:
            with lasting():
                rule, path, trees = self._pysigma()
                got = compile_rule(rule, path, trees, src.placeholders)[0].stored_parts()
        details, parts = got
        if DETAILS[0] not in self.__dict__:
            self.__dict__.setdefault("_details", details)
        for u, (lits, req) in zip(self.units, parts, strict=True):
            if u.stored_literals is None:
                u.stored_literals = lits
            if u.stored_requirement is None:
                u.stored_requirement = req

    def __setstate__(self, state: dict[str, Any]) -> None:
        """The pickled ``__dict__`` becomes the rule's own. Without this method, unpickling
        looked ``__setstate__`` up through ``__getattr__``, which raised AttributeError for
        each of SigmaHQ's 3,141 rules: the skeleton took 26.6 instead of 21.3 ms to unpickle."""
        self.__dict__ = state

    def __getattr__(self, name: str) -> Any:
        if name in DETAILS:
            stored = self.__dict__.pop("_details", None)
            if stored is None:
                self.read_stored()
                stored = self.__dict__.pop("_details")
            for key, value in pickle.loads(stored).items():  # noqa: S301 - from the rule cache entry
                self.__dict__.setdefault(key, value)  # one set meanwhile stays
            return self.__dict__[name]
        if name != "sigma":
            raise AttributeError(name)
        return self._pysigma()[0]

    def _pysigma(self) -> tuple[SigmaRule, str, list]:
        """(pySigma rule, path, condition trees) from the cache's rule source."""
        source = self.__dict__.get("_source")
        if source is None:
            raise AttributeError("sigma")
        src, index = source
        rule, path, trees = src.rule(index)
        self.sigma = rule
        return rule, path, trees

    def compile_units(self, source: str | None = None) -> None:
        """The predicates of a rule that came from the cache (what ``Unit.pred`` asks): of its
        unit on ``source`` (None: of every unit) as stored in the entry, else of every unit
        compiled again from the rule's pySigma objects.

        The cache key covers the compiler's source, so either gives the units the entry
        describes; should a source's predicate not come out after all, the unit never matches
        and the rule says why in ``flags``."""
        src, index = self.__dict__["_source"]
        units = [u for u in self.units if source is None or u.source == source] or self.units
        with lasting(collect=False):
            preds = src.predicates(index, [u.source for u in units])
        if preds is None:
            units = self.units
            with lasting():
                rule, path, trees = self._pysigma()
                try:
                    fresh, _ = compile_rule(rule, path, trees, src.placeholders)
                    preds = {u.source: u.pred for u in fresh.units}
                except Exception as exc:  # noqa: BLE001 - it compiled when the entry was made
                    from scmwatch.sigma.load import one_line

                    preds = {}
                    why = f"{type(exc).__name__}: {one_line(exc)}"
                    self.flags.append(f"cannot compile from the rule cache: {why}")
        for u in units:
            if u.source not in preds:
                self.flags.append(f"not run on {u.source}: its predicate did not compile from the rule cache")
            u.pred = preds.get(u.source, False)
            u.unread = False


@dataclass
class RuleSet:
    """The loaded rules and correlations, and what could not be loaded or run.

    A rule set from the cache holds its correlations flattened (``corr_specs``: what a hunt
    needs of them) and reads the pySigma objects (``correlations``) from its entry only when
    asked: unpickling them imported pySigma's correlations module, pyparsing and YAML, ~80 ms
    of every start with the built-in pack."""

    rules: list[CompiledRule] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_run: list[tuple[CompiledRule, str]] = field(default_factory=list)  # compiled, no event source
    files: int = 0
    filters: int = 0  # Sigma filter documents applied to the rules at load
    # rule id -> the tuning file's exclusion (``tune.py``): events it holds for are no match
    exclusions: dict[str, Callable[[dict], bool]] = field(default_factory=dict)
    tuned: dict[str, int] = field(default_factory=dict)  # what a tuning file changed (tune.py)
    # ``correlate.spec.CorrSpec`` of each correlation, in order (as the entry was made)
    corr_specs: list[CorrSpec] = field(default_factory=list, repr=False)
    # the pySigma correlations; None: not read from the rule cache entry (``source``) yet
    read_correlations: list[SigmaCorrelationRule] | None = field(default_factory=list, repr=False)
    source: Any = field(default=None, repr=False)  # the entry's ``cache.RuleSource``

    @property
    def correlations(self) -> list[SigmaCorrelationRule]:
        """The pySigma correlation rules (read from the rule cache entry on first access)."""
        if self.read_correlations is None:
            self.read_correlations = self.source.correlations()
        return self.read_correlations

    @correlations.setter
    def correlations(self, value: list[SigmaCorrelationRule]) -> None:
        self.read_correlations = value

    @property
    def correlation_count(self) -> int:
        """``len(correlations)``, without reading them."""
        if self.read_correlations is None:
            return len(self.corr_specs)
        return len(self.read_correlations)

    def specs(self) -> list[CorrSpec] | None:
        """The correlations flattened as the entry stores them, or None once the pySigma
        correlations are read (a tuning file changes those in place): then they say."""
        return self.corr_specs if self.read_correlations is None else None

    def entry_state(self) -> dict[str, Any]:
        """The state the rule cache's skeleton stores: the correlations only flattened (the
        entry holds the pySigma ones apart, ``cache.RuleSource.correlations``)."""
        state = self.__dict__.copy()
        state["read_correlations"] = None
        state["source"] = None
        return state

    def by_id(self) -> dict[str, CompiledRule]:
        return {r.id: r for r in self.rules}


def _tags(rule: SigmaRule) -> list[str]:
    return [f"{t.namespace}.{t.name}" for t in (rule.tags or [])]


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def compile_rule(rule: SigmaRule, path: str, trees: list,
                 placeholders: dict[str, list[str]] | None = None) -> tuple[CompiledRule, str | None]:
    """Compile one pySigma rule for every source its logsource maps to.

    Returns the rule and, when it has no runnable source, the reason (the rule still exists so
    ``rules check`` and coverage can list it). Raises :class:`CompileError` for broken values.
    """
    ls = rule.logsource
    level = _text(rule.level).lower() or "informational"
    cr = CompiledRule(
        id=str(rule.id) if rule.id else f"{path}#{rule.title}",
        title=_text(rule.title),
        level=level,
        description=_text(rule.description).strip(),
        tags=_tags(rule),
        name=rule.name,
        custom=dict(rule.custom_attributes or {}),
        logsource={"product": ls.product, "category": ls.category, "service": ls.service},
        path=path,
        sigma=rule,
        status=_text(rule.status).lower() or None,
        fields=[str(f) for f in (rule.fields or [])],
        detection_fields=condition_fields(trees),
        other_key=None if rule.id else _other_key(rule),
    )
    # Compile the plain form once, whatever the source: a rule broken in itself is rejected.
    base = compile_condition(trees, None, placeholders)
    specs, reason = sources_for(ls)
    for spec in specs:
        comp = base if spec.fieldmap is None else compile_condition(trees, spec.fieldmap, placeholders)
        if comp.pred is False:
            need = ", ".join(sorted(comp.unavailable_used)) or "?"
            cr.flags.append(f"not run on {spec.fieldmap.name if spec.fieldmap else spec.label}: "
                            f"condition needs field(s) {need} that this source lacks")
            continue
        if comp.unavailable_used:
            cr.flags.append(f"on {spec.fieldmap.name}: field(s) {', '.join(sorted(comp.unavailable_used))} "
                            "unavailable; branches using them never match, filters on them exclude")
        keys = spec.keys
        if spec.needs_eventid_narrowing:
            eids = required_eventids(trees)
            if eids:
                keys = [(ch, e) for ch, _ in spec.keys for e in sorted(eids)]
        pred = comp.pred
        if spec.extra:
            pred = _with_extra(pred, spec.extra)
        cr.units.append(Unit(cr, spec.label, keys, pred, comp.literals, comp.literal_fields,
                             requirement=comp.requirement))
        cr.sources.append(spec.label)
    empty = empty_value_fields(trees) if ls.product == "windows" else []
    if empty:
        cr.flags.append(f"compares {', '.join(empty)} with '': Winlogbeat/Elastic exports drop empty "
                        "values, so on them this test sees a missing field")
    if reason is None and not cr.units:
        reason = "cannot fire on any source: " + "; ".join(cr.flags)
    return cr, reason


def _other_key(rule: SigmaRule) -> str:
    from scmwatch.correlate.spec import rule_key

    return rule_key(rule)


def _with_extra(pred: Pred | bool, extra: dict[str, frozenset[str]]) -> Pred:
    checks = tuple(extra.items())

    def gated(f, low):
        for name, allowed in checks:
            if low[name] not in allowed:
                return False
        return pred if isinstance(pred, bool) else pred(f, low)

    return gated


def _runnable_correlations(correlations: list[SigmaCorrelationRule], rejected: list[tuple[str, str]]
                           ) -> tuple[list[SigmaCorrelationRule], list[CorrSpec]]:
    """The correlations the correlator can run, and each one flattened; each other one becomes a
    one-line rejection.

    pySigma accepts some documents the correlator cannot evaluate (``value_percentile`` without
    ``percentile:``); converting here rather than when a hunt starts makes them count in
    ``rules check`` instead of vanishing. A correlation that references a rejected one is
    rejected too (its input would never arrive).
    """
    from scmwatch.correlate.spec import rule_key, spec_from_sigma
    from scmwatch.sigma.load import one_line

    ok: dict[str, SigmaCorrelationRule] = {}
    specs: dict[int, CorrSpec] = {}
    bad: set[str] = set()
    for corr in correlations:
        try:
            specs[id(corr)] = spec_from_sigma(corr)
        except (ValueError, AttributeError, TypeError) as exc:
            rejected.append((_corr_path(corr), f"'{corr.title}': correlation: {one_line(exc)}"))
            bad.add(rule_key(corr))
            continue
        ok[rule_key(corr)] = corr
    changed = bool(bad)
    while changed:
        changed = False
        for key, corr in list(ok.items()):
            refs = [rule_key(r.rule) for r in (corr.referenced_rules or corr.rules or [])
                    if getattr(r, "rule", None) is not None]
            lost = [k for k in refs if k in bad]
            if lost:
                rejected.append((_corr_path(corr), f"'{corr.title}': correlation: references a "
                                 "rejected correlation"))
                bad.add(key)
                del ok[key]
                changed = True
    runnable = [c for c in correlations if rule_key(c) in ok and ok[rule_key(c)] is c]
    return runnable, [specs[id(c)] for c in runnable]


def _corr_path(corr: Any) -> str:
    src = getattr(corr, "source", None)
    return str(src.path) if src is not None and getattr(src, "path", None) else "?"


def load_rules(paths: Iterable[str | os.PathLike] | str | os.PathLike,
               placeholders: str | os.PathLike | dict | None = None) -> RuleSet:
    """Load, gate and compile Sigma rules from files/directories. Never raises for bad rules.

    The rule set comes from the rule cache (``cache.py``) when the files are unchanged, its
    predicates compiled on first use; the cyclic GC is off meanwhile: all of SigmaHQ compiles in
    ~2.7 s with it, ~1.9 s without (nothing allocated here is garbage)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    with no_gc():
        return _load_rules(list(paths), placeholders)


def _load_rules(paths: list[str | os.PathLike], placeholders: str | os.PathLike | dict | None) -> RuleSet:
    bad_placeholders = []
    values: dict[str, list[str]] = {}
    if placeholders is not None:
        from scmwatch.sigma.load import load_placeholders, one_line

        try:
            values = load_placeholders(placeholders)
        except Exception as exc:
            bad_placeholders.append((str(placeholders), f"placeholder file: {one_line(exc)}"))
    key, entry = open_entry(paths, values) if cache_root() is not None else (None, None)
    if entry is not None:
        rs, source = entry
        rs.source = source
        for cr in rs.rules:
            cr._source = (source, cr._source_index)
            cr._origin = (key, cr._source_index)  # what a bucket's cached plan is keyed by
    else:
        from scmwatch.sigma.load import load_sigma

        loaded = load_sigma(paths)
        rs = _compile_all(loaded, values)
        if key is not None:
            write_entry(key, rs, loaded, paths, values)
            for cr in rs.rules:
                cr._origin = (key, cr._source_index)
    rs.rejected[:0] = bad_placeholders
    return rs


def _compile_all(loaded: LoadedSigma, values: dict[str, list[str]]) -> RuleSet:
    from scmwatch.sigma.load import one_line

    rs = RuleSet()
    rs.files = loaded.files
    rs.filters = len(loaded.filters)
    rs.rejected.extend(loaded.rejected)
    rs.warnings.extend(loaded.warnings)
    rs.correlations, rs.corr_specs = _runnable_correlations(loaded.correlations, rs.rejected)
    order = 0
    for index, (rule, path, trees) in enumerate(loaded.rules):
        try:
            cr, reason = compile_rule(rule, path, trees, values)
        except CompileError as exc:
            rs.rejected.append((path, f"'{rule.title}': {exc}"))
            continue
        except Exception as exc:  # a pySigma object shape we did not foresee: report, go on
            why = f"cannot compile: {type(exc).__name__}: {one_line(exc)}"
            rs.rejected.append((path, f"'{rule.title}': {why}"))
            continue
        for u in cr.units:
            u.order = order
            order += 1
        cr._source_index = index
        rs.rules.append(cr)
        if reason is not None:
            rs.not_run.append((cr, reason))
    return rs
