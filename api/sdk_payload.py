"""The features payload of GrowthBook's SDKs (docs/design.md §16): every flag with its rules,
and every running experiment without a flag as a feature of its own, so any GrowthBook SDK
evaluates xpstream's flags and experiments locally as :mod:`api.flag_evaluation` does."""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from api.state import AssignmentPlan, CatalogSnapshot
from config.catalog import Experiment, Flag, ForceRule
from config.conditions import for_sdks


def features(snapshot: CatalogSnapshot) -> dict[str, Any]:
    """Flag key → ``{"defaultValue", "rules"}``; a disabled or rolled-back flag has no rules."""
    payload: dict[str, Any] = {}
    for flag in snapshot.catalog.flags:
        rules = [] if flag.key in snapshot.flag_held else _rules(snapshot, flag)
        payload[flag.key] = {"defaultValue": flag.default, "rules": rules}
    for experiment in snapshot.running:
        plan = snapshot.plans[experiment.key]
        if experiment.flag is None and plan.held is None:
            values = [v.key for v in experiment.variants]
            payload[experiment.key] = {
                "defaultValue": experiment.control,
                "rules": [_experiment_rule(plan, experiment.key, values)],
            }
    return payload


def _rules(snapshot: CatalogSnapshot, flag: Flag) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for rule in flag.rules:
        if isinstance(rule, ForceRule):
            out: dict[str, Any] = {"id": rule.id, "force": rule.value}
            if rule.rollout is not None:
                # A range, not coverage: the SDKs read it alike (half-open); say the version.
                out |= {
                    "range": [0, rule.rollout],
                    "hashAttribute": rule.hash_attribute,
                    "seed": flag.key,
                    "hashVersion": 2,
                }
        else:
            plan = snapshot.plans[rule.experiment]
            if plan.held is not None:
                continue  # not running, or its own flag serves control: the rule is left out
            values = [v.value for v in plan.experiment.variants]
            out = _experiment_rule(plan, rule.id, values)
        if rule.condition is not None:
            out["condition"] = for_sdks(rule.condition)
        rules.append(out)
    return rules


def _experiment_rule(plan: AssignmentPlan, rule_id: str, values: list[Any]) -> dict[str, Any]:
    experiment: Experiment = plan.experiment
    return {
        "id": rule_id,
        "key": experiment.key,
        "seed": experiment.hashing_seed,
        "hashVersion": experiment.hash_version,
        "hashAttribute": "id",
        "variations": values,
        "weights": list(plan.weights),
        "coverage": experiment.coverage,
        "ranges": [list(r) for r in plan.ranges],
        # The SDK's tracking callback names the variant by its meta key.
        "meta": [{"key": v.key} for v in experiment.variants],
    }


def payload(snapshot: CatalogSnapshot, encryption_key: str | None) -> dict[str, Any]:
    """The whole response body; with ``encryption_key`` (base64 AES-128) the features and saved
    groups are encrypted as the SDKs' ``decryption_key`` expects."""
    body: dict[str, Any] = {"status": 200, "dateUpdated": snapshot.updated_at.isoformat()}
    found = features(snapshot)
    groups = snapshot.catalog.saved_groups
    if encryption_key is None:
        return body | {"features": found, "savedGroups": groups}
    return body | {
        "encryptedFeatures": encrypt(orjson.dumps(found), encryption_key),
        "encryptedSavedGroups": encrypt(orjson.dumps(groups), encryption_key),
    }


def encrypt(plain: bytes, key: str) -> str:
    """AES-128-CBC with PKCS7 padding, ``base64(iv).base64(ciphertext)`` (GrowthBook's format)."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(base64.b64decode(key)), modes.CBC(iv)).encryptor()
    cipher = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    return f"{base64.b64encode(iv).decode()}.{base64.b64encode(cipher).decode()}"


def new_encryption_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()
