"""Targeting conditions in GrowthBook's condition language (MongoDB-style), checked when a catalog
is loaded: an unknown operator or an operand of the wrong type is refused with its path, so the
server and every SDK evaluate only conditions they all understand (docs/design.md §16)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

LOGICAL = frozenset({"$and", "$or", "$nor", "$not"})
LIST_OPERANDS = frozenset({"$in", "$nin", "$ini", "$nini", "$all", "$alli"})
VERSION_OPERATORS = frozenset({"$veq", "$vne", "$vlt", "$vlte", "$vgt", "$vgte"})
ORDER_OPERATORS = frozenset({"$lt", "$lte", "$gt", "$gte"})
EQUALITY_OPERATORS = frozenset({"$eq", "$ne"})
GROUP_OPERATORS = frozenset({"$inGroup", "$notInGroup"})
OPERATORS = (
    LIST_OPERANDS
    | VERSION_OPERATORS
    | ORDER_OPERATORS
    | EQUALITY_OPERATORS
    | GROUP_OPERATORS
    | {"$elemMatch", "$size", "$exists", "$type", "$regex", "$regexi", "$not"}
)
TYPES = frozenset({"string", "number", "boolean", "array", "object", "null", "undefined"})
MAX_DEPTH = 16


def condition_errors(condition: Any, path: str, groups: Iterable[str] = ()) -> list[str]:
    """Every problem of ``condition`` as ``path.to.field: what is wrong``; empty when valid."""
    errors: list[str] = []
    _condition(condition, path, frozenset(groups), errors, 0)
    return errors


def _condition(
    condition: Any, path: str, groups: frozenset[str], errors: list[str], depth: int
) -> None:
    if depth > MAX_DEPTH:
        errors.append(f"{path}: nested deeper than {MAX_DEPTH} levels")
        return
    if not isinstance(condition, dict):
        errors.append(f"{path}: a condition is an object of attributes and operators")
        return
    for key, value in condition.items():
        where = f"{path}.{key}"
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list):
                errors.append(f"{where}: a list of conditions")
                continue
            for index, item in enumerate(value):
                _condition(item, f"{where}.{index}", groups, errors, depth + 1)
        elif key == "$not":
            _condition(value, where, groups, errors, depth + 1)
        elif key.startswith("$"):
            errors.append(
                f"{where}: unknown operator {key!r} here (attributes or $and/$or/$nor/$not)"
            )
        elif not key:
            errors.append(f"{where}: an attribute path may not be empty")
        else:
            _value(value, where, groups, errors, depth + 1)


def _value(value: Any, path: str, groups: frozenset[str], errors: list[str], depth: int) -> None:
    """What an attribute is compared with: a bare value (equality) or an operator object."""
    if not (isinstance(value, dict) and any(str(k).startswith("$") for k in value)):
        return  # a bare value: equality, any JSON
    if depth > MAX_DEPTH:
        errors.append(f"{path}: nested deeper than {MAX_DEPTH} levels")
        return
    for operator, operand in value.items():
        where = f"{path}.{operator}"
        if operator not in OPERATORS:
            errors.append(f"{where}: unknown operator {operator!r}")
        elif operator in LIST_OPERANDS and not isinstance(operand, list):
            errors.append(f"{where}: needs a list")
        elif operator in VERSION_OPERATORS and not isinstance(operand, str):
            errors.append(f"{where}: needs a version string")
        elif operator in ORDER_OPERATORS and not _scalar(operand):
            errors.append(f"{where}: needs a number or a string")
        elif operator in GROUP_OPERATORS:
            if not isinstance(operand, str):
                errors.append(f"{where}: needs a saved group id")
            elif operand not in groups:
                errors.append(f"{where}: unknown saved group {operand!r}")
        elif operator == "$exists" and not isinstance(operand, bool):
            errors.append(f"{where}: needs true or false")
        elif operator == "$type" and operand not in TYPES:
            errors.append(f"{where}: one of {sorted(TYPES)}")
        elif operator in ("$regex", "$regexi"):
            _regex(operand, where, errors)
        elif operator == "$size":
            if isinstance(operand, dict):
                _value(operand, where, groups, errors, depth + 1)
            elif not _number(operand):
                errors.append(f"{where}: needs a number or an operator object")
        elif operator == "$elemMatch":
            if not isinstance(operand, dict):
                errors.append(f"{where}: needs a condition or an operator object")
            elif any(str(k).startswith("$") for k in operand) and not LOGICAL & set(operand):
                _value(operand, where, groups, errors, depth + 1)
            else:
                _condition(operand, where, groups, errors, depth + 1)
        elif operator == "$not":
            if isinstance(operand, dict):
                _value(operand, where, groups, errors, depth + 1)
            else:
                errors.append(f"{where}: needs an operator object")


def _regex(operand: Any, where: str, errors: list[str]) -> None:
    if not isinstance(operand, str):
        errors.append(f"{where}: needs a pattern string")
        return
    try:
        re.compile(operand)
    except re.error as exc:
        errors.append(f"{where}: not a valid pattern ({exc})")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(value: Any) -> bool:
    return _number(value) or isinstance(value, str)


def for_sdks(condition: dict[str, Any]) -> dict[str, Any]:
    """``condition`` as sent to SDKs: every ordering comparison ($lt $lte $gt $gte) also
    requires the attribute to exist. GrowthBook's JavaScript SDK compares a missing attribute
    as null (``null <= 0.5`` is true), its Python SDK and this server find it false; with the
    attribute required, all of them agree, and the server's answers are unchanged."""
    return {key: _sdk_part(key, value) for key, value in condition.items()}


def _sdk_part(key: str, value: Any) -> Any:
    if key in ("$and", "$or", "$nor") and isinstance(value, list):
        return [for_sdks(item) if isinstance(item, dict) else item for item in value]
    if key == "$not" and isinstance(value, dict):
        return for_sdks(value)
    if key.startswith("$") or not isinstance(value, dict):
        return value
    return _sdk_operators(value)


def _sdk_operators(value: dict[str, Any]) -> dict[str, Any]:
    if not any(str(k).startswith("$") for k in value):
        return value  # a bare object: equality
    out = dict(value)
    for operator in ("$not", "$size"):
        if isinstance(out.get(operator), dict):
            out[operator] = _sdk_operators(out[operator])
    if isinstance(out.get("$elemMatch"), dict):
        inner = out["$elemMatch"]
        is_operators = any(str(k).startswith("$") for k in inner) and not LOGICAL & set(inner)
        out["$elemMatch"] = _sdk_operators(inner) if is_operators else for_sdks(inner)
    if ORDER_OPERATORS & set(out) and "$exists" not in out:
        out["$exists"] = True
    return out
