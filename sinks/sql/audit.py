"""Flag changes with their audit rows: every rollback or restore says who, what, before, after."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from sinks.sql.models import AuditRow, FlagRow
from sinks.sql.store import as_utc, bump_catalog_version


def audit(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    entity_type: str,
    entity_key: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    session.add(
        AuditRow(
            at=at,
            actor=actor,
            action=action,
            entity_type=entity_type,
            entity_key=entity_key,
            before=before,
            after=after,
        )
    )


def flag_state(flag: FlagRow) -> dict[str, Any]:
    return {
        "type": flag.type,
        "default": flag.default_value,
        "enabled": flag.enabled,
        "rules": flag.rules,
        "rolled_back_at": flag.rolled_back_at.isoformat() if flag.rolled_back_at else None,
        "rollback_reason": flag.rollback_reason,
    }


def rollback_flag(session: Session, key: str, *, reason: str, actor: str, at: datetime) -> bool:
    """Serve control to everyone; False when the flag is unknown or already rolled back."""
    return _set_rollback(session, key, (at, reason), actor=actor, at=at)


def restore_flag(session: Session, key: str, *, actor: str, at: datetime) -> bool:
    """A person re-enables a rolled-back flag; False when it was not rolled back."""
    return _set_rollback(session, key, None, actor=actor, at=at)


def _set_rollback(
    session: Session,
    key: str,
    rollback: tuple[datetime, str] | None,
    *,
    actor: str,
    at: datetime,
) -> bool:
    flag = session.get(FlagRow, key)
    if flag is None or (flag.rolled_back_at is None) == (rollback is None):
        return False  # unknown, or already in that state
    bump_catalog_version(session)  # the catalog lock first, as every catalog change takes it
    session.refresh(flag, with_for_update=True)
    if (flag.rolled_back_at is None) == (rollback is None):
        return False  # changed meanwhile
    before = flag_state(flag)
    flag.rolled_back_at, flag.rollback_reason = rollback if rollback else (None, None)
    flag.version += 1
    session.flush()
    audit(
        session,
        at=at,
        actor=actor,
        action="flag.rollback" if rollback else "flag.restore",
        entity_type="flag",
        entity_key=key,
        before=before,
        after=flag_state(flag),
    )
    return True


def list_audit(engine: Engine, since: datetime | None = None) -> list[dict[str, Any]]:
    """Audit rows, newest first."""
    query = select(AuditRow).order_by(AuditRow.at.desc(), AuditRow.id.desc())
    if since is not None:
        query = query.where(AuditRow.at >= since)
    with Session(engine) as session:
        return [
            {
                "id": row.id,
                "at": as_utc(row.at).isoformat(),
                "actor": row.actor,
                "action": row.action,
                "entity_type": row.entity_type,
                "entity_key": row.entity_key,
                "before": row.before,
                "after": row.after,
            }
            for row in session.scalars(query)
        ]
