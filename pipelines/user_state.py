"""A user's attribution state (docs/design.md §5) and its record in the ``users`` table."""

from __future__ import annotations

import math
import struct

import msgspec

from config.catalog import KEY_SEP

ID_END = "\x00"  # follows every event id in UserState.ids (and precedes the first)
BUFFER_RECORD = struct.Struct("<ddI")  # ts, value, index into UserState.buffer_metrics
FIRST_TS = struct.Struct("<d").unpack_from  # the oldest buffered record's ts


class UserState(msgspec.Struct, array_like=True, gc=False):
    """One user's attribution state, a MessagePack array in the users store. It is decoded,
    encoded and freed once per touched user and unit, so recent ids are one string and the
    buffer packed records (as a dict of lists, ~1.6x the time on the throughput benchmark)."""

    ids: str = ID_END  # recent event ids, by attribution.id_key, each followed by ID_END
    id_count: int = 0
    exposures: dict[str, tuple[str, float]] = msgspec.field(default_factory=dict)  # variant, t_e
    crossovers: list[str] = msgspec.field(default_factory=list)
    # experiment SEP event metric → [y_raw, x_raw]: totals after exposure and in the lookback
    raw: dict[str, list[float]] = msgspec.field(default_factory=dict)
    buffer: bytearray = msgspec.field(default_factory=bytearray)  # BUFFER_RECORDs, in arrival order
    buffer_metrics: list[str] = msgspec.field(default_factory=list)
    newest: float = -math.inf  # the newest event time seen
    offset: int = -1  # the last offset applied (worker.py's redelivery fence)


encode_state = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(UserState).decode


class StateLayoutError(RuntimeError):
    """A user-state record this version cannot read."""


def decode_state(record: bytes) -> UserState:
    try:
        return _decode_state(record)
    except msgspec.ValidationError as error:
        raise StateLayoutError(
            f"a user state in the users changelog is not a UserState ({error}): records written "
            "before commit 1680e57 hold a dict; start the workers on a new XPSTREAM_NAMESPACE"
        ) from None


def expire_experiments(record: bytes, experiments: set[str]) -> bytes | None:
    """A state without ``experiments`` (exposures, crossovers, raw totals): the same record
    when it had none of them, ``None`` when no experiment is left."""
    state = decode_state(record)
    if not experiments.intersection(state.exposures):
        return record
    for experiment in experiments:
        state.exposures.pop(experiment, None)
    if not state.exposures:
        return None
    prefixes = tuple(f"{experiment}{KEY_SEP}" for experiment in experiments)
    state.crossovers = [e for e in state.crossovers if e not in experiments]
    state.raw = {key: v for key, v in state.raw.items() if not key.startswith(prefixes)}
    return encode_state(state)
