"""Compiled predicates to bytes and back, for the rule cache (``cache.py``).

Why: a rule set from the cache had to compile each rule again on first use (unpickle its pySigma
objects, map its logsource, generate and ``eval`` its code): ~0.6 ms per rule, 1.3 s of a 1.6 s
hunt of the dev corpus with all SigmaHQ (2,183 rules met), paid again by every ``--jobs`` worker.
A predicate is a function made at run time (the generated ``lambda f, low: ...`` over its
namespace, closures of ``compile.py``), which plain pickle refuses. This pickler stores such a
function by value: its code, its closure cells, defaults and attributes, and its globals: a
module's dictionary by the module's name, a generated namespace by value (shared by the rule's
functions, as when compiled). Its code is ``marshal``-ed only when generated: a closure of an
``scmwatch`` function (``_ci_group``'s ``test``: 10,569 of SigmaHQ's 17,005 stored functions)
refers to its code in the module by qualified name and line, so every predicate shares the one
code object; generated code is unmarshalled when its function is first called
(:func:`_lazy_function`), which a hunt with the C extensions hardly ever does. Objects that are
module attributes of ``scmwatch`` (helper functions, shared tables, sentinels compared with
``is``) are stored by reference, so they keep their identity.
With both, and each function made in one call: reading the 813 predicates a hunt of the attack
corpus x5 reads took 18-22 instead of 28-29 ms in a loop (CPU, min of 10; 2.3 instead of
2.9 MB). What is stored by reference is a persistent id (``Unpickler.persistent_load``: one
lookup in a table of what earlier pieces resolved, see :class:`_Refs`) and a function is made by
``types.FunctionType`` and ``types.CellType`` themselves: no global looked up by name (~1.1 us
each, ~7 per piece) and no Python call per closure or reference, 174M -> 139M instructions
for the 809 predicates of an x5 hunt (callgrind). A function that holds something unpicklable
(the RE2 matcher's compiled object) says how to make it again in a ``__rebuild__`` attribute:
``(callable, args)`` (the RE2 matcher: one that compiles its regex when first needed,
``values._stored_matcher``).
Anything else goes through ordinary pickling; a rule whose predicates cannot be pickled has none
in the cache and is compiled from its pySigma objects as before.

The cache key holds the Python version (``marshal``'s format) and the compiler's source, so a
stored code object, or a reference to one, always belongs to the code that made it; a reference
that no longer resolves (a nested function moved in a module the key does not cover) fails to
load, and its rule is compiled again (``cache.RuleSource.predicates``).
"""

from __future__ import annotations

import importlib
import io
import marshal
import pickle
import sys
import types
from collections.abc import Iterator
from typing import Any

_EMPTY = object()  # an empty closure cell
_PLAIN = (str, int, float, bool, bytes, type(None))  # values, not worth a reference
_SEP = "\x00"  # between the parts of a persistent id


def _module(name: str) -> types.ModuleType:
    """``sys.modules`` first: ``importlib.import_module`` costs ~0.1 ms even for a module
    already imported (0.23 s over the 2,183 rules of a dev-corpus hunt, measured)."""
    mod = sys.modules.get(name)
    return mod if mod is not None else importlib.import_module(name)


def _new_function(code: types.CodeType, globals_: dict[str, Any], name: str,
                  cells: int) -> types.FunctionType:
    closure = tuple(types.CellType() for _ in range(cells)) or None
    return types.FunctionType(code, globals_, name, None, closure)


def _set_function(f: types.FunctionType, state: tuple) -> None:
    """Filled in after the function exists, so that cells and defaults may refer back to it."""
    cells, defaults, kwdefaults, attrs, qualname = state
    for cell, value in zip(f.__closure__ or (), cells, strict=True):
        if value is not _EMPTY:
            cell.cell_contents = value
    f.__defaults__ = defaults
    f.__kwdefaults__ = kwdefaults
    f.__qualname__ = qualname
    if attrs:
        f.__dict__.update(attrs)


class _Namespace:
    """A generated function's globals, pickled once per pickle as a plain dict (without
    ``__builtins__``, which a function made from it takes from where it is made)."""

    def __init__(self, ns: dict[str, Any]) -> None:
        self.ns = ns


class _ModuleDict:
    def __init__(self, module: str) -> None:
        self.pid = _SEP.join(("d", module))  # one str: met again, pickle's memo writes a reference


def module_attributes(prefix: str = "scmwatch") -> dict[int, str]:
    """``id(obj) -> persistent id`` of what is stored by reference: every attribute of the
    loaded modules under ``prefix`` (``a``, module, name), and the code of every function nested
    in one of their functions (``c``, module, qualname, first line). Both live as long as their
    module, so their ids are theirs."""
    out: dict[int, str] = {}
    for modname, mod in list(sys.modules.items()):
        if mod is None or not (modname == prefix or modname.startswith(prefix + ".")):
            continue
        for name, value in list(vars(mod).items()):
            if not name.startswith("__") and not isinstance(value, _PLAIN):
                out.setdefault(id(value), _SEP.join(("a", modname, name)))
        for (qualname, line), code in _nested_codes(mod).items():
            if code is not None:
                out.setdefault(id(code), _SEP.join(("c", modname, qualname, str(line))))
    return out


def _nested_codes(mod: types.ModuleType) -> dict[tuple[str, int], types.CodeType | None]:
    """The code objects of the functions nested in ``mod``'s own functions and methods, by
    ``(qualname, first line)``; None where two share both (two lambdas on one line): those are
    stored by value."""
    out: dict[tuple[str, int], types.CodeType | None] = {}

    def visit(code: types.CodeType) -> None:
        for c in code.co_consts:
            if type(c) is types.CodeType:
                where = (c.co_qualname, c.co_firstlineno)
                out[where] = None if where in out else c
                visit(c)

    classes: set[type] = set()

    def functions(ns: dict[str, Any]) -> Iterator[types.FunctionType]:
        for value in list(ns.values()):
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            if type(value) is types.FunctionType and value.__module__ == mod.__name__:
                yield value
            elif isinstance(value, type) and value.__module__ == mod.__name__ and value not in classes:
                classes.add(value)
                yield from functions(dict(vars(value)))
            elif isinstance(value, property):
                yield from (f for f in (value.fget, value.fset, value.fdel) if type(f) is types.FunctionType)

    seen: set[int] = set()
    for f in functions(dict(vars(mod))):
        if id(f.__code__) not in seen:
            seen.add(id(f.__code__))
            visit(f.__code__)
    return out


_codes: dict[str, dict[tuple[str, int], types.CodeType | None]] = {}


def _nested_code(module: str, qualname: str, line: int) -> types.CodeType:
    """A nested function's code from its module (:func:`module_attributes`): the same object
    for every predicate that holds one of its closures, instead of a copy per closure from
    ``marshal``. Looked for under the function its qualname names first (:func:`_code_under`),
    else in the table of the whole module."""
    code = _code_under(_module(module), qualname, line)
    if code is not None:
        return code
    table = _codes.get(module)
    if table is None:
        table = _codes[module] = _nested_codes(_module(module))
    code = table.get((qualname, line))
    if code is None:
        raise pickle.UnpicklingError(f"no nested function {qualname} at line {line} in {module}")
    return code


def _code_under(mod: types.ModuleType, qualname: str, line: int) -> types.CodeType | None:
    """The code of ``qualname`` at ``line``, found in the code of the module's own function that
    the qualname's part before its first ``.<locals>.`` names (``f`` of ``f.<locals>.g``, a
    method ``C.m`` of ``C.m.<locals>.g``); None when that function is not there or holds no
    such code or two (then :func:`_nested_codes` decides).

    Why: a nested function's code lies in the code of the function it is defined in, and that
    one's qualname is the part before ``.<locals>.``, so this reads one function's constants
    where the table of the whole module walks all of them: ~1 ms (compile.py, values.py and
    ruleset.py, for the 20 nested codes an x5 hunt's predicates refer to) in each process that
    reads predicates, every ``--jobs`` worker included; now ~0.1."""
    head, sep, _ = qualname.partition(".<locals>.")
    if not sep:
        return None
    obj: Any = mod
    for name in head.split("."):
        obj = vars(obj).get(name) if isinstance(obj, type | types.ModuleType) else None
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
    if type(obj) is not types.FunctionType or obj.__module__ != mod.__name__ \
            or obj.__code__.co_qualname != head:
        return None
    found: list[types.CodeType] = []

    def visit(code: types.CodeType) -> None:
        for c in code.co_consts:
            if type(c) is types.CodeType:
                if c.co_qualname == qualname and c.co_firstlineno == line:
                    found.append(c)
                visit(c)

    visit(obj.__code__)
    return found[0] if len(found) == 1 else None


class _Lazy:
    """A generated function's code, ``marshal``-ed, until the function is first called."""

    __slots__ = ("fn", "code", "defaults")

    def __init__(self, fn: types.FunctionType, code: bytes, defaults: tuple | None) -> None:
        self.fn = fn
        self.code = code
        self.defaults = defaults

    def load(self) -> types.FunctionType:
        fn = self.fn
        fn.__code__ = marshal.loads(self.code)
        fn.__defaults__ = self.defaults
        fn.__kwdefaults__ = None
        return fn


def _trampoline(*args: Any, _lazy: _Lazy, **kwargs: Any) -> Any:
    return _lazy.load()(*args, **kwargs)


def _lazy_function(code: bytes, globals_: dict[str, Any], name: str, qualname: str,
                   defaults: tuple | None) -> types.FunctionType:
    """A generated function (no closure) whose code is unmarshalled on its first call, when it
    swaps in its own code: until then it runs :func:`_trampoline`. A rule's generated lambda is
    called only where ``_prog`` is missing (``SCMWATCH_PURE_PYTHON=1``) or could not run its
    tests (``compile.c_program``): the hunt runs the ``Prog`` made from the lambda's namespace.
    An x5 hunt read 798 predicates and called 2 of their lambdas; unmarshalling them all (code
    objects of up to ~6 KB, their names interned one by one) was 13.7M of the 81M instructions
    the reading took (callgrind)."""
    fn = types.FunctionType(_trampoline.__code__, globals_, name)
    fn.__qualname__ = qualname
    fn.__kwdefaults__ = {"_lazy": _Lazy(fn, code, defaults)}
    return fn


# What a stored predicate is made with, by persistent id (small ints), besides the references
# of :func:`module_attributes` (strings).
_BUILTINS: dict[Any, int] = {types.FunctionType: 0, types.CellType: 1, marshal.loads: 2, dict: 3,
                             _lazy_function: 4}


class _Refs(dict):
    """Persistent id -> object, each string id resolved on first use (an import, a lookup in a
    module) and kept: every later piece finds it with one lookup in C
    (``Unpickler.persistent_load`` is this dict's ``__getitem__``)."""

    def __missing__(self, pid: Any) -> Any:
        if not isinstance(pid, str):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        kind, module, *rest = pid.split(_SEP)
        try:
            if kind == "a" and len(rest) == 1:
                value = getattr(_module(module), rest[0])
            elif kind == "c" and len(rest) == 2:
                value = _nested_code(module, rest[0], int(rest[1]))
            elif kind == "d" and not rest:
                value = _module(module).__dict__
            elif kind == "m" and not rest:
                value = _module(module)
            else:
                raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        except (ImportError, AttributeError, ValueError) as exc:
            raise pickle.UnpicklingError(f"persistent id {pid!r}: {exc}") from exc
        self[pid] = value
        return value


_REFS = _Refs({v: k for k, v in _BUILTINS.items()})
_persistent_load = _REFS.__getitem__


class _Cycle(Exception):
    """A function met again while its own arguments were being pickled (:meth:`_Pickler._function`)."""


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, by_ref: dict[int, str], cycles: bool = False) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.by_ref = by_ref
        self.builtins = {id(k): v for k, v in _BUILTINS.items()}
        self.keep: dict[int, Any] = {}  # wrappers made here, alive (their ids unique) while pickling
        self.cycles = cycles  # every function in two steps, so that cells may refer back to it
        self.started: set[int] = set()  # functions whose one-call reduction was begun

    def _wrapper(self, key: Any, make: Any) -> Any:
        w = self.keep.get(id(key))
        if w is None:
            w = self.keep[id(key)] = (make(), key)
        return w[0]

    def persistent_id(self, obj: Any) -> Any:
        """What is stored by reference, as a persistent id (:class:`_Refs`)."""
        i = id(obj)
        ref = self.by_ref.get(i)
        if ref is None:
            ref = self.builtins.get(i)
        if ref is None:
            t = type(obj)
            if t is types.ModuleType:
                return _SEP.join(("m", obj.__name__))
            if t is _ModuleDict:
                return obj.pid
        return ref

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t is types.FunctionType:
            return self._function(obj)
        if t is types.CodeType:
            return marshal.loads, (marshal.dumps(obj),)
        if t is _Namespace:
            return dict, (), None, None, iter(obj.ns.items())
        if t is types.CellType:
            return types.CellType, (obj.cell_contents,)
        return NotImplemented

    def _function(self, f: types.FunctionType) -> Any:
        rebuild = f.__dict__.get("__rebuild__")
        if rebuild is not None:
            return rebuild  # (callable, args) that make it again, for what holds unpicklable objects
        g = f.__globals__
        modname = g.get("__name__")
        mod = sys.modules.get(modname) if isinstance(modname, str) else None
        if mod is not None and vars(mod) is g:
            if "<" not in f.__qualname__ and getattr(mod, f.__name__, None) is f:
                return NotImplemented  # a module-level function: by reference, as pickle does
            globals_: Any = self._wrapper(g, lambda: _ModuleDict(modname))
        else:
            ns = {k: v for k, v in g.items() if k != "__builtins__"}
            globals_ = self._wrapper(g, lambda: _Namespace(ns))
        lazy = f.__kwdefaults__.get("_lazy") if f.__code__ is _trampoline.__code__ else None
        if lazy is not None and not self.cycles:  # read and not called yet: stored as it was read
            if id(f) in self.started:
                raise _Cycle
            self.started.add(id(f))
            return _lazy_function, (lazy.code, globals_, f.__name__, f.__qualname__, lazy.defaults)
        cells = []
        for c in f.__closure__ or ():
            try:
                cells.append(c.cell_contents)
            except ValueError:
                cells.append(_EMPTY)
        code = f.__code__
        if (not self.cycles and _EMPTY not in cells and not f.__kwdefaults__ and not f.__dict__
                and f.__name__ == code.co_name and f.__qualname__ == code.co_qualname):
            # pickle memoizes a reduced object only once its arguments are written: met again
            # before that, it is its own argument, which one call cannot make (see ``dumps``)
            if id(f) in self.started:
                raise _Cycle
            self.started.add(id(f))
            if f.__closure__ is None and id(code) not in self.by_ref:  # generated: see _lazy_function
                return _lazy_function, (marshal.dumps(code), globals_, f.__name__, f.__qualname__,
                                        f.__defaults__)
            # made by ``FunctionType`` itself (its cells by ``CellType``), no Python frame
            return types.FunctionType, (code, globals_, None, f.__defaults__, f.__closure__)
        state = (tuple(cells), f.__defaults__, f.__kwdefaults__, dict(f.__dict__) or None, f.__qualname__)
        return _new_function, (code, globals_, f.__name__, len(cells)), state, None, None, _set_function


def dumps(obj: Any, by_ref: dict[int, str]) -> bytes:
    """``obj`` (e.g. a rule's ``{source: predicate}``) as bytes; raises what pickling raises
    (``pickle.PicklingError``, ``TypeError`` ...) when something in it cannot be stored."""
    buf = io.BytesIO()
    try:
        _Pickler(buf, by_ref).dump(obj)
    except _Cycle:  # a function its own closure refers to: all of them in two steps
        buf = io.BytesIO()
        _Pickler(buf, by_ref, cycles=True).dump(obj)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    """What :func:`dumps` stored (the cache's own entry, see cache.py)."""
    unpickler = pickle.Unpickler(io.BytesIO(data))  # noqa: S301
    unpickler.persistent_load = _persistent_load
    return unpickler.load()
