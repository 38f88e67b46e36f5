"""Server-side flag evaluation (docs/design.md §16): each flag's rules in order, conditions by
the ``growthbook`` package's own evaluator and attribute values hashed as its SDKs hash them,
so the server and every SDK that loads the payload (:mod:`api.sdk_payload`) agree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

# The SDK's condition evaluator and its JS-compatible formatting of hashed attribute values.
from growthbook.core import _hash_string, _is_hashable, evalCondition

from api.state import AssignmentPlan, CatalogSnapshot
from config.catalog import ExperimentRule, Flag, ForceRule
from stats.assignment import choose_variant, hash_unit

Source = Literal["rule", "experiment", "rollout", "default", "disabled", "rolled_back"]


@dataclass(frozen=True)
class FlagValue:
    value: Any
    source: Source
    rule_id: str | None = None
    experiment: str | None = None
    variant: str | None = None
    in_experiment: bool = False

    def as_json(self) -> dict[str, Any]:
        """The response's shape (``dataclasses.asdict`` deep-copies values: 2x slower)."""
        return {
            "value": self.value,
            "source": self.source,
            "rule_id": self.rule_id,
            "experiment": self.experiment,
            "variant": self.variant,
            "in_experiment": self.in_experiment,
        }


def hash_value(attributes: Mapping[str, Any], attribute: str) -> str:
    """The attribute's value as SDKs hash it (JavaScript's ``String()``); "" when missing."""
    value = attributes.get(attribute)
    return _hash_string(value) if _is_hashable(value) else ""


def evaluate(
    snapshot: CatalogSnapshot, flag: Flag, user_id: str, attributes: Mapping[str, Any]
) -> FlagValue:
    """The value ``flag`` serves the user ``user_id`` (the attribute ``id``) with
    ``attributes``."""
    held = snapshot.flag_held.get(flag.key)
    if held is not None:
        return FlagValue(flag.default, held)
    context = {**attributes, "id": user_id}
    groups = snapshot.catalog.saved_groups
    for rule in flag.rules:
        if rule.condition is not None and not evalCondition(context, rule.condition, groups):
            continue
        if isinstance(rule, ExperimentRule):
            result = _experiment(snapshot.plans[rule.experiment], rule, user_id)
            if result is not None:
                return result
        elif _in_rollout(flag, rule, context):
            source: Source = "rule" if rule.rollout is None else "rollout"
            return FlagValue(rule.value, source, rule.id)
    return FlagValue(flag.default, "default")


def _in_rollout(flag: Flag, rule: ForceRule, context: Mapping[str, Any]) -> bool:
    """Half-open ``[0, rollout)`` of the version-2 hash seeded by the flag key, as the SDKs read
    the payload's ``range``; a user without the hash attribute is not in a rollout."""
    if rule.rollout is None:
        return True
    value = hash_value(context, rule.hash_attribute)
    if not value:
        return False
    unit = hash_unit(flag.key, value, 2)
    return unit is not None and unit < rule.rollout


def _experiment(plan: AssignmentPlan, rule: ExperimentRule, user_id: str) -> FlagValue | None:
    """The user's arm's value, or None (fall through) when the experiment is held or the user is
    outside its coverage."""
    if plan.held is not None or not user_id:
        return None
    experiment = plan.experiment
    unit = hash_unit(experiment.hashing_seed, user_id, experiment.hash_version, plan.seed_state)
    index = -1 if unit is None else choose_variant(unit, plan.ranges)
    if index < 0:
        return None
    variant = experiment.variants[index]
    return FlagValue(variant.value, "experiment", rule.id, experiment.key, variant.key, True)
