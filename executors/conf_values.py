"""Parsers of configuration values: a conf holds strings (a SparkConf) or Python values (a dict), and a bad
value raises ``ValueError`` naming its key and the value, when the Context or stream is made.

In the lowest layer so that the executors, the driver and the API all read their settings alike.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

#: the spellings of true and false (any case, surrounding white space ignored)
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_bool(name: str, value: Any) -> bool:
    """A bool, or a string spelling of one (``"true"``, ``"off"``, ``" Yes "``, ...); nothing else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _bool_text(name, value, value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def conf_bool(conf: Mapping[str, Any], key: str, default: bool) -> bool:
    """The true/false setting ``key`` of ``conf`` (``default`` when absent): a bool, or any value whose text
    spells one (``"off"``, and also ``1`` or ``0``)."""
    value = conf.get(key, default)
    if isinstance(value, bool):
        return value
    return _bool_text(key, str(value), value)


def _bool_text(name: str, text: str, value: Any) -> bool:
    text = text.strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def positive_int(name: str, value: Any, what: str = "") -> int:
    """An int of at least 1, given as an int or a string of digits (never a bool or a float); ``what`` the
    setting counts, said in the error (``"attempts of a task"``)."""
    detail = f" ({what})" if what else ""
    try:
        if isinstance(value, (bool, float)):
            raise TypeError
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer{detail}, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer{detail}, got {value!r}")
    return number


def parse_float(name: str, value: Any, unit: str = "", *, finite: bool = True, at_least: float | None = None,
                bool_as_number: bool = False) -> float:
    """A float, given as a number or a numeric string, not NaN; finite unless ``finite`` is false, and at
    least ``at_least`` when given. ``unit`` is said in the errors (``"seconds"``). A bool is refused unless
    ``bool_as_number`` (then ``True`` is 1.0, as the rate settings have always read it)."""
    of_unit = f" of {unit}" if unit else ""
    try:
        if isinstance(value, bool) and not bool_as_number:
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number{of_unit}, got {value!r}") from None
    if math.isnan(number) or (finite and math.isinf(number)) or (at_least is not None and number < at_least):
        bound = "" if at_least is None else f", at least {at_least:g}"
        raise ValueError(f"{name} must be a {'finite ' if finite else ''}number{of_unit}{bound}, got {value!r}")
    return number
