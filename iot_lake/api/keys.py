"""API keys: created once by a person (`iot-lake api-keys create`), stored only as a hash.

A key is ``iotl_<id>_<secret>``; the store keeps its id, name, scope and the SHA-256 of the whole
key. The secret has 256 bits of entropy, so a plain (unsalted) hash cannot be reversed and a lookup
by hash is safe; the key itself is printed once and never stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from iot_lake.cases.schema import UtcDateTime, create_engine, reading

READ, OPERATOR = "read", "operator"
SCOPES = (READ, OPERATOR)  # operator includes read
PREFIX = "iotl_"

metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime),
)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scope: str

    def allows(self, scope: str) -> bool:
        return self.scope == OPERATOR or scope == READ


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, url: str):
        self.engine = create_engine(url)
        metadata.create_all(self.engine)

    def create(self, name: str, scope: str) -> str:
        """A new key with this name and scope; the key itself, which is shown once and never stored."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if not name.strip() or len(name) > 64:
            raise ValueError("a key needs a name of 1 to 64 characters (who or what uses it)")
        key_id = secrets.token_hex(4)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        row = dict(key_id=key_id, name=name, scope=scope, key_sha256=digest(key), created_at=datetime.now(UTC))
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
        return key

    def verify(self, key: str | None) -> ApiKey | None:
        """The key's identity, or None for a missing, unknown or revoked key."""
        if not key or not key.startswith(PREFIX) or len(key) > 200:
            return None
        query = sa.select(api_keys).where(api_keys.c.key_sha256 == digest(key), api_keys.c.revoked_at.is_(None))
        with reading(self.engine).connect() as conn:
            row = conn.execute(query).first()
        return ApiKey(row.key_id, row.name, row.scope) if row else None

    def revoke(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return done.rowcount == 1

    def list(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).mappings().all()
        return [{k: v for k, v in row.items() if k != "key_sha256"} for row in rows]
