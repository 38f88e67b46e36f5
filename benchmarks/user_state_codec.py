"""User states decoded, encoded and freed: the compact layout (pipelines.user_state.UserState,
a MessagePack array with ids as one string and the buffer as packed records) beside the same
states as the plain dict of lists the pipeline used before. The states are those of the
throughput benchmark's users after its events; both layouts run in one process, alternately.

Run: PYTHONPATH=. .venv/bin/python benchmarks/user_state_codec.py [--events 500000]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec

from benchmarks.pipeline_throughput import PARTITIONS, synthetic_events
from config.catalog import KEY_SEP
from jobs.simulate import demo_catalog
from pipelines.attribution import Aggregates, AttributionConfig, UserAttribution
from pipelines.events import CatalogIndex, Event, decode_message
from pipelines.producer import envelopes
from pipelines.user_state import BUFFER_RECORD, ID_END, UserState, decode_state, encode_state

encode_plain = msgspec.msgpack.Encoder().encode
decode_plain = msgspec.msgpack.Decoder(dict[str, Any]).decode


def final_states(count: int) -> list[UserState]:
    """Every user's state after ``count`` events, applied one envelope at a time."""
    catalog = demo_catalog()
    index = CatalogIndex.of(catalog)
    attribution = UserAttribution(AttributionConfig.of(catalog, 3600, 14 * 86400), Aggregates())
    states: dict[str, UserState] = {}
    for _, envelope in envelopes(synthetic_events(count), PARTITIONS, 500):
        by_user: dict[str, list[Event]] = defaultdict(list)
        for event in decode_message(envelope, index).events:
            by_user[event.user_id].append(event)
        for user, events in by_user.items():
            states[user], _ = attribution.apply(states.get(user), events)
    return list(states.values())


def plain(state: UserState) -> dict[str, Any]:
    """The layout before UserState: a dict of lists."""
    raw: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for key, totals in state.raw.items():
        experiment, metric = key.split(KEY_SEP)
        raw[experiment][metric] = totals
    return {
        "ids": state.ids.strip(ID_END).split(ID_END) if state.id_count else [],
        "exp": {e: list(exposure) for e, exposure in state.exposures.items()},
        "xo": state.crossovers,
        "raw": dict(raw),
        "buf": [
            [ts, state.buffer_metrics[index], value]
            for ts, value, index in BUFFER_RECORD.iter_unpack(state.buffer)
        ],
        "hi": state.newest,
        "off": state.offset,
    }


def round_trip(
    records: list[bytes], decode: Callable[[bytes], Any], encode: Callable[[Any], bytes]
) -> float:
    """CPU seconds to decode every record, encode every state again and free them."""
    started = time.process_time()
    states = [decode(record) for record in records]
    for state in states:
        encode(state)
    del states
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    states = final_states(args.events)
    compact = [encode_state(state) for state in states]
    dicts = [encode_plain(plain(state)) for state in states]
    assert all(decode_state(c) == s for c, s in zip(compact, states, strict=True))
    gc.freeze()  # as the worker does
    best = {"compact": float("inf"), "dict of lists": float("inf")}
    for _ in range(args.rounds):
        best["compact"] = min(best["compact"], round_trip(compact, decode_state, encode_state))
        best["dict of lists"] = min(
            best["dict of lists"], round_trip(dicts, decode_plain, encode_plain)
        )
    size = {"compact": compact, "dict of lists": dicts}
    print(f"{len(states)} user states after {args.events} events; best of {args.rounds} rounds")
    for name, seconds in best.items():
        mean_bytes = sum(map(len, size[name])) / len(states)
        print(
            f"{name:14s} {seconds / len(states) * 1e6:6.2f} µs per state "
            f"(decode, encode, free), {mean_bytes:.0f} B"
        )
    print(f"dict of lists / compact: {best['dict of lists'] / best['compact']:.2f}x")


if __name__ == "__main__":
    main()
