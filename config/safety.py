"""Safety settings (docs/design.md §18): guardrails every rollout schedule and every experiment
with a flag gets, unless a flag has its own list."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.catalog import KEY_PATTERN, Catalog, Guardrail

MAX_GUARDRAILS = 100


def merged(own: tuple[Guardrail, ...], added: tuple[Guardrail, ...]) -> tuple[Guardrail, ...]:
    """``own`` guardrails, then the ``added`` ones on metrics not already guarded."""
    guarded = {g.metric for g in own}
    return own + tuple(g for g in added if g.metric not in guarded)


class SafetySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    guardrails: tuple[Guardrail, ...] = Field(default=(), max_length=MAX_GUARDRAILS)
    # Flag key → the guardrails its experiments and rollouts get instead of ``guardrails``.
    flags: dict[str, tuple[Guardrail, ...]] = Field(default_factory=dict, max_length=10_000)

    @field_validator("flags")
    @classmethod
    def _flag_keys(
        cls, flags: dict[str, tuple[Guardrail, ...]]
    ) -> dict[str, tuple[Guardrail, ...]]:
        for key, guardrails in flags.items():
            if not re.fullmatch(KEY_PATTERN, key):
                raise ValueError(f"flags.{key}: a flag key matches {KEY_PATTERN}")
            if len(guardrails) > MAX_GUARDRAILS:
                raise ValueError(f"flags.{key}: at most {MAX_GUARDRAILS} guardrails")
        return flags

    def for_flag(self, flag: str) -> tuple[Guardrail, ...]:
        return self.flags.get(flag, self.guardrails)

    def problems(self, catalog: Catalog) -> list[str]:
        """References the catalog does not hold: unknown metrics and flags."""
        metrics = {m.key for m in catalog.metrics}
        flags = {f.key for f in catalog.flags}
        out = [
            f"guardrails.{i}.metric: unknown metric {g.metric!r}"
            for i, g in enumerate(self.guardrails)
            if g.metric not in metrics
        ]
        for key, guardrails in self.flags.items():
            if key not in flags:
                out.append(f"flags.{key}: unknown flag {key!r}")
            out += [
                f"flags.{key}.{i}.metric: unknown metric {g.metric!r}"
                for i, g in enumerate(guardrails)
                if g.metric not in metrics
            ]
        return out

    def applied(self, catalog: Catalog) -> Catalog:
        """The catalog whose experiments with a flag also carry the safety guardrails: what
        the pipeline attributes and the analyzer checks."""
        if not self.guardrails and not self.flags:
            return catalog
        metrics = {m.key for m in catalog.metrics}
        experiments = tuple(
            e
            if e.flag is None
            else e.model_copy(
                update={
                    "guardrails": merged(
                        e.guardrails,
                        tuple(g for g in self.for_flag(e.flag) if g.metric in metrics),
                    )
                }
            )
            for e in catalog.experiments
        )
        return catalog.model_copy(update={"experiments": experiments})
