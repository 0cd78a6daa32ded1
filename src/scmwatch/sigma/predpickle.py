"""Compiled predicates to bytes and back, for the rule cache (``cache.py``).

Why: a rule set from the cache had to compile each rule again on first use (unpickle its pySigma
objects, map its logsource, generate and ``eval`` its code): ~0.6 ms per rule, 1.3 s of a 1.6 s
hunt of the dev corpus with all SigmaHQ (2,183 rules met), paid again by every ``--jobs`` worker.
A predicate is a function made at run time (the generated ``lambda f, low: ...`` over its
namespace, closures of ``compile.py``), which plain pickle refuses. This pickler stores such a
function by value: its code (``marshal``), its closure cells, defaults and attributes, and its
globals: a module's dictionary by the module's name, a generated namespace by value (shared by
the rule's functions, as when compiled). Objects that are module attributes of ``scmwatch``
(helper functions, shared tables, sentinels compared with ``is``) are stored by reference, so
they keep their identity. A function that holds something unpicklable (the RE2 matcher's
compiled object) says how to make it again in a ``__rebuild__`` attribute: ``(callable, args)``.
Anything else goes through ordinary pickling; a rule whose predicates cannot be pickled has none
in the cache and is compiled from its pySigma objects as before.

The cache key holds the Python version (``marshal``'s format) and the compiler's source, so a
stored code object always belongs to the code that made it.
"""

from __future__ import annotations

import importlib
import io
import marshal
import pickle
import sys
import types
from typing import Any

_EMPTY = object()  # an empty closure cell
_PLAIN = (str, int, float, bool, bytes, type(None))  # values, not worth a reference


def _module(name: str) -> types.ModuleType:
    """``sys.modules`` first: ``importlib.import_module`` costs ~0.1 ms even for a module
    already imported (0.23 s over the 2,183 rules of a dev-corpus hunt, measured)."""
    mod = sys.modules.get(name)
    return mod if mod is not None else importlib.import_module(name)


def _module_attr(module: str, name: str) -> Any:
    return getattr(_module(module), name)


def _module_dict(module: str) -> dict[str, Any]:
    return _module(module).__dict__


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
        self.module = module


def module_attributes(prefix: str = "scmwatch") -> dict[int, tuple[str, str]]:
    """``id(obj) -> (module, name)`` for every attribute of the loaded modules under
    ``prefix`` (objects alive as long as their module, so their ids are theirs)."""
    out: dict[int, tuple[str, str]] = {}
    for modname, mod in list(sys.modules.items()):
        if mod is None or not (modname == prefix or modname.startswith(prefix + ".")):
            continue
        for name, value in list(vars(mod).items()):
            if not name.startswith("__") and not isinstance(value, _PLAIN):
                out.setdefault(id(value), (modname, name))
    return out


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, by_ref: dict[int, tuple[str, str]]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.by_ref = by_ref
        self.keep: dict[int, Any] = {}  # wrappers made here, alive (their ids unique) while pickling

    def _wrapper(self, key: Any, make: Any) -> Any:
        w = self.keep.get(id(key))
        if w is None:
            w = self.keep[id(key)] = (make(), key)
        return w[0]

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t is types.FunctionType:
            return self._function(obj)
        if isinstance(obj, type):
            return NotImplemented  # by reference, as pickle does
        ref = self.by_ref.get(id(obj))
        if ref is not None:
            return _module_attr, ref
        if t is types.CodeType:
            return marshal.loads, (marshal.dumps(obj),)
        if t is types.ModuleType:
            return _module, (obj.__name__,)
        if t is _Namespace:
            return dict, (), None, None, iter(obj.ns.items())
        if t is _ModuleDict:
            return _module_dict, (obj.module,)
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
        cells = []
        for c in f.__closure__ or ():
            try:
                cells.append(c.cell_contents)
            except ValueError:
                cells.append(_EMPTY)
        state = (tuple(cells), f.__defaults__, f.__kwdefaults__, dict(f.__dict__) or None, f.__qualname__)
        return _new_function, (f.__code__, globals_, f.__name__, len(cells)), state, None, None, _set_function


def dumps(obj: Any, by_ref: dict[int, tuple[str, str]]) -> bytes:
    """``obj`` (e.g. a rule's ``{source: predicate}``) as bytes; raises what pickling raises
    (``pickle.PicklingError``, ``TypeError`` ...) when something in it cannot be stored."""
    buf = io.BytesIO()
    _Pickler(buf, by_ref).dump(obj)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 - the cache's own entry (see cache.py)
