"""Checking a composed config's values against the type hints of the objects they build.

Hydra passes ``memvir.step_gap=abc`` through as the string ``'abc'``; without a check the
constructor fails later with ``invalid literal for int()``, naming neither the key nor the fix.
:func:`check_config_types` reads the ``__init__`` hints of each group's ``_target_`` and says
which key is wrong, what it expects and how to write it, and names keys the object does not
take (``+module.foo=1``). Integers may be written as whole-number floats (``2.0``). An argument
that takes a callable needs an object config (``module.optimizer``: ``_target_`` and ``_partial_``),
whose own keys are checked against its target in turn.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

CHECKED_GROUPS = ("data", "model", "loss", "module", "memvir", "trainer")
# groups of object configs, one per entry (each entry with a ``_target_`` is checked)
CHECKED_COLLECTIONS = ("callbacks", "logger")


class ConfigTypeError(ValueError):
    """A config value of the wrong type for the argument it is passed to."""


def check_config_types(cfg: DictConfig, groups: Sequence[str] = CHECKED_GROUPS) -> None:
    """Raise :class:`ConfigTypeError` for the first value of ``cfg[group]`` that does not fit
    the type hint of the argument it is passed to, or whose key the object does not take
    (groups without ``_target_`` are skipped); the entries of ``callbacks`` and ``logger`` too.
    A whole-number float given for an integer argument (``trainer.max_epochs=2.0``) is replaced
    by the integer in ``cfg``."""
    for group in groups:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            check_node_types(node, group)
    for collection in CHECKED_COLLECTIONS:
        entries = cfg.get(collection)
        if not isinstance(entries, DictConfig):
            continue
        for name, node in entries.items():
            if isinstance(node, DictConfig) and "_target_" in node:
                check_node_types(node, f"{collection}.{name}")


def check_node_types(node: DictConfig, path: str) -> None:
    """Check one object config (``_target_`` + arguments); ``path`` names it in errors."""
    target = hydra.utils.get_object(node._target_)
    hints = argument_hints(target)
    named = argument_defaults(target)
    takes_any_key = named is None or _takes_keywords(target)
    defaults = named or {}
    written = OmegaConf.to_container(node, resolve=False)
    for key in node:
        if str(key).startswith("_"):
            continue
        if not takes_any_key and key not in defaults:
            raise ConfigTypeError(
                f"{path}.{key} is not an argument of {_name(target)}; it takes "
                f"{', '.join(sorted(defaults))}. Remove the key (or the +{path}.{key}=... override) or fix "
                "its spelling."
            )
        value = node[key]
        if isinstance(value, DictConfig) and "_target_" in value:
            check_node_types(value, f"{path}.{key}")
        if key not in hints:
            continue
        if isinstance(value, float) and fits(value, hints[key]) and not fits(value, hints[key], whole_floats=False):
            node[key] = int(value)  # a whole-number float for an integer argument: passed as that integer
            continue
        if not fits(value, hints[key]):
            example = defaults.get(key, inspect.Parameter.empty)
            fix = f"e.g. {path}.{key}={_as_override(example)}" if example is not inspect.Parameter.empty else (
                f"write {path}.{key}=<{describe(hints[key])}>")
            if _is_callable_hint(hints[key]):
                fix = _object_config_fix(path, key)
            as_written = written[key]
            shown = _as_override(value)
            if isinstance(as_written, str) and OmegaConf.is_interpolation(node, key):
                shown = f"{as_written} (resolved to {_as_override(value)})"
            raise ConfigTypeError(
                f"{path}.{key}={shown} is not valid: {_name(target)} expects {describe(hints[key])} "
                f"for '{key}', got {_kind(value)}. Fix the override or config file ({fix})."
            )


def _takes_keywords(target: Any) -> bool:
    """Whether the class's ``__init__`` or the function takes ``**kwargs`` (any key is then valid)."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def argument_hints(target: Any) -> dict[str, Any]:
    """The resolved type hints of a class's ``__init__`` or a function's arguments ({} if unknown)."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # hints naming objects imported only for type checking: no check
        return {}
    hints.pop("return", None)
    return hints


def argument_defaults(target: Any) -> dict[str, Any] | None:
    """Each named argument's default (``inspect.Parameter.empty`` when it has none), ``self``
    left out; ``None`` when the signature cannot be read."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    return {name: p.default for name, p in parameters.items() if name != "self"
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}


def fits(value: Any, hint: Any, whole_floats: bool = True) -> bool:
    """Whether a config value can be passed for an argument hinted ``hint``.

    Checked: int (not bool; with ``whole_floats`` a whole-number float such as ``2.0`` too, which
    :func:`check_node_types` then passes as the integer; not inside lists), float (ints too),
    bool, str, None, unions, Literal and sequences of those; any other hint (a tensor type, a
    module, ``Any``) is accepted unchecked.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg, whole_floats) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            whole_floats and isinstance(value, float) and value.is_integer())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list, Sequence) and typing.get_args(hint):
        if not isinstance(value, (ListConfig, list, tuple)):
            return False
        args = typing.get_args(hint)
        if origin is tuple and Ellipsis not in args:  # a fixed-length tuple
            return len(value) == len(args) and all(fits(v, a, False) for v, a in zip(value, args, strict=True))
        return all(fits(item, args[0], False) for item in value)
    if origin in (dict, Mapping):
        return isinstance(value, (DictConfig, dict))
    if _is_callable_hint(hint):
        return isinstance(value, DictConfig) and "_target_" in value
    return True


def _is_callable_hint(hint: Any) -> bool:
    return typing.get_origin(hint) is Callable or hint is Callable


def _object_config_fix(path: str, key: str) -> str:
    """How to give the callable argument ``path.key``: a file of its config group when there is
    one (``module/optimizer=sgd``), else a ``_target_`` with ``_partial_: true``."""
    from memvir_pl.config import CONFIG_DIR

    options = sorted(p.stem for p in (CONFIG_DIR / path / key).glob("*.yaml"))
    by_target = f"give {path}.{key}._target_=<a class or function> with _partial_: true"
    return f"choose one with {path}/{key}={'|'.join(options)}, or {by_target}" if options else by_target


def describe(hint: Any) -> str:
    """A type hint in words: 'an integer', 'a number or null', 'a list of integers' ..."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (tuple, list, Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"a list of {_plural(describe(args[0]))}" if args else "a list"
    if _is_callable_hint(hint):
        return "an object config (_target_ and _partial_: true)"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(words: str) -> str:
    return words.removeprefix("an ").removeprefix("a ") + "s"


def _name(target: Any) -> str:
    return getattr(target, "__qualname__", getattr(target, "__name__", str(target)))


def _kind(value: Any) -> str:
    if isinstance(value, (ListConfig, list, tuple)):
        return "a list"
    if isinstance(value, float) and not value.is_integer():
        return "a number with a fraction"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(type(value), type(value).__name__)


def _as_override(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (ListConfig, list, tuple)):
        return "[" + ",".join(_as_override(v) for v in value) + "]"
    return str(value)
