"""API keys: ``xps_<key_id>_<secret>``, stored as a SHA-256 (keys are random, so a fast hash is
enough) and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sinks.sql.audit import audit
from sinks.sql.models import ApiKeyRow

ROLES = ("client", "sdk", "viewer", "analyst", "developer", "admin")
PREFIX = "xps_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_key(
    engine: Engine, role: str, name: str, actor: str = "cli", payload_key: str | None = None
) -> str:
    """A new key of ``role``, audited as made by ``actor``; the returned token is the only copy
    of the secret. ``payload_key``: a client key whose SDK payload is served encrypted."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    key_id = secrets.token_hex(6)
    token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        session.add(
            ApiKeyRow(
                key_id=key_id,
                name=name,
                role=role,
                secret_sha256=_digest(token),
                created_at=now,
                payload_key=payload_key,
            )
        )
        audit(
            session,
            at=now,
            actor=actor,
            action="key.create",
            entity_type="key",
            entity_key=key_id,
            before=None,
            after={"role": role, "name": name, "encrypted_payload": payload_key is not None},
        )
    return token


def resolve_api_key(engine: Engine, token: str) -> tuple[str, str, str | None] | None:
    """(key_id, role, payload_key) of a valid, unrevoked key; None otherwise."""
    parts = token.removeprefix(PREFIX).split("_", 1)
    if not token.startswith(PREFIX) or len(parts) != 2:
        return None
    with Session(engine) as session:
        row = session.get(ApiKeyRow, parts[0])
        expected = row.secret_sha256 if row is not None else _digest("")
        matches = hmac.compare_digest(_digest(token), expected)
        if row is None or not matches or row.revoked_at is not None:
            return None
        return row.key_id, row.role, row.payload_key


def revoke_api_key(engine: Engine, key_id: str, actor: str = "cli") -> bool:
    """Revoke an active key, audited as done by ``actor``; False when there is none."""
    with Session(engine) as session, session.begin():
        row = session.get(ApiKeyRow, key_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = datetime.now(UTC)
        audit(
            session,
            at=row.revoked_at,
            actor=actor,
            action="key.revoke",
            entity_type="key",
            entity_key=key_id,
            before={"role": row.role, "name": row.name},
            after=None,
        )
        return True
