"""Runtime settings, read from the environment with the prefix ``XPSTREAM_``
(docs/design.md §11)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "XPSTREAM_"


class SettingsError(ValueError):
    """A setting has a wrong value; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = "sqlite:///./xpstream.db"
    kafka_url: str = ""  # empty: start the embedded Tansu broker
    # "tansu": no transactions and a workaround for its end offsets (docs/design.md §6).
    kafka_flavor: Literal["apache", "tansu"] = "apache"
    # Faust's transactions on Apache Kafka (Tansu has none: at-least-once + event_id dedup).
    exactly_once: bool = True
    namespace: str = Field(default="xpstream", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
    opensearch_url: str = ""  # empty: OpenSearch sink off
    opensearch_username: str = ""  # basic auth for managed clusters
    opensearch_password: str = ""
    opensearch_verify_certs: bool = True
    opensearch_ca_certs: str = ""  # a CA bundle path for TLS
    opensearch_prefix: str = Field(default="xpstream", pattern=r"^[a-z0-9][a-z0-9_-]{0,60}$")
    kinesis_stream: str = ""
    aws_endpoint_url: str = ""
    partitions: int = Field(default=8, ge=1, le=1024)
    window_seconds: int = Field(default=3600, ge=1)
    flush_seconds: float = Field(default=2.0, gt=0)
    # `xpstream run`'s user states: on disk under data_dir (RocksDB), or in memory (re-read
    # from the changelog at every start); a stopped experiment's part of them is kept this long.
    state_store: Literal["rocksdb", "memory"] = "rocksdb"
    data_dir: str = "./xpstream-data"
    state_ttl_days: float = Field(default=30.0, ge=0, le=36500)
    cuped_lookback_days: float = Field(default=14.0, ge=0)
    analysis_interval_seconds: float = Field(default=5.0, gt=0)
    scheduler_interval_seconds: float = Field(default=15.0, gt=0, le=3600)
    # Analysis history: every look of the last hours, then one per period per comparison.
    history_full_hours: float = Field(default=24.0, ge=0, le=24 * 366)
    history_every_seconds: float = Field(default=3600.0, gt=0, le=86400 * 31)
    # Events outside these bounds are dead-lettered (ts_out_of_range, value_out_of_range):
    # event time within [now − max age, now + max ahead], |value| at most the bound.
    event_max_age_days: float = Field(default=400.0, gt=0, le=36500)
    event_max_ahead_days: float = Field(default=1.0, ge=0, le=3650)
    event_max_abs_value: float = Field(default=1e12, gt=0, le=1e15)
    # `xpstream api`: request headers at most this big (431), connections served at once
    # (503 beyond), seconds an idle keep-alive connection stays open.
    api_max_header_bytes: int = Field(default=64 * 1024, ge=4096, le=1024 * 1024)
    api_limit_concurrency: int = Field(default=1000, ge=1)
    api_keep_alive_seconds: int = Field(default=5, ge=1)
    # Who may read GET /metrics: loopback clients without a key (others with an analyst key),
    # anyone ("open"), or only callers with an analyst key ("key").
    metrics_access: Literal["loopback", "open", "key"] = "loopback"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    tau: float = Field(default=0.05, gt=0)
    # `xpstream run`'s log level (stderr): Faust's warnings, agent crashes, rebalances at INFO.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    @field_validator("kafka_url", "opensearch_url", "aws_endpoint_url", "kinesis_stream")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def load_settings() -> Settings:
    """Read settings; a wrong value raises :class:`SettingsError` naming ``XPSTREAM_<FIELD>``."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise SettingsError("invalid setting: " + "; ".join(problems)) from None
