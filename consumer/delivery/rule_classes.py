"""Checking that ``[classification]`` rules name exception classes that exist, as they are named.

Rules match an exception by the dotted path of its class or a base class
(``retry_topics.classification.qualified_name``: module plus qualified name). A misspelt
rule, or one naming a class by an alias (``requests.Timeout`` for
``requests.exceptions.Timeout``, ``socket.timeout`` for ``builtins.TimeoutError``), would
never match, and the failures it was written for would quietly fall to the default. So
``run`` imports what each rule names once, at start-up, beside the handler it applies to.
"""

from __future__ import annotations

import importlib

from consumer.errors import ConfigError
from retry_topics.classification import ExceptionRules, qualified_name


def check_rule_classes(rules: ExceptionRules) -> None:
    """Raise ``ConfigError`` for a rule that does not name an exception class by its path."""
    for kind, names in (("transient", rules.transient), ("permanent", rules.permanent)):
        for name in names:
            problem = _problem(name)
            if problem:
                raise ConfigError(f"classification.{kind}: {name!r} {problem}; a rule names "
                                  f"an exception class by module and class name, such as "
                                  f"'builtins.TimeoutError'")


class _Unresolvable(Exception):
    """Nothing importable is at the rule's path; the message says why."""


def _problem(name: str) -> str | None:
    """What is wrong with ``name`` as a rule, or None when it names an exception class."""
    try:
        found = _resolve(name)
    except _Unresolvable as exc:
        return str(exc)
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        return f"is a {type(found).__name__}, not an exception class"
    actual = qualified_name(found)
    if actual != name:
        return f"is the class {actual!r}, which the rule must name that way to match"
    return None


def _resolve(name: str) -> object:
    """The object at dotted path ``name``, the longest importable module first."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            target: object = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # that prefix is not a module: try a shorter one
            raise _Unresolvable(f"cannot be imported: {exc}") from exc
        except Exception as exc:  # a module that fails to import: say so, not a traceback
            raise _Unresolvable(f"cannot be imported: importing {module_name!r} failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        for depth in range(split, len(parts)):
            if not hasattr(target, parts[depth]):
                raise _Unresolvable(f"does not exist: {'.'.join(parts[:depth])!r} has no "
                                    f"attribute {parts[depth]!r}")
            target = getattr(target, parts[depth])
        return target
    raise _Unresolvable(f"cannot be imported: no module named {parts[0]!r}")
