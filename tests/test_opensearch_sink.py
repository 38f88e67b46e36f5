"""The OpenSearch sink against a real OpenSearch node: documents equal SQL, replays overwrite,
aggregations agree with `xpstream report`, an outage loses and duplicates nothing, a refused
document is kept with its error; the saved-objects file matches the templates."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opensearchpy import OpenSearch

from config.settings import Settings
from jobs.replay import produce_lines, wait_until_flushed
from pipelines.topics import Topics, ensure_topics
from pipelines.worker import build_pipeline
from sinks.opensearch.dashboards import saved_objects
from sinks.opensearch.sink import OpenSearchSink, backlog
from sinks.opensearch.templates import templates
from sinks.sql.migrate import upgrade_to_head
from sinks.sql.models import SearchOutboxRow
from sinks.sql.store import flush_partition_state, make_engine, save_catalog, window_rows
from stats.sufficient import STATISTICS as STATS
from tests.conftest import Broker
from tests.pipeline.conftest import load_catalog, pipeline_env, xpstream
from tests.pipeline.generate import CATALOG, EventFile, generate
from tests.services.opensearch import OpenSearchNode


@pytest.fixture(scope="module")
def small_file() -> EventFile:
    return generate(users=1500, seed=9)


def window_docs(client: OpenSearch, prefix: str) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    client.indices.refresh(index=f"{prefix}-windows-*")
    response = client.search(
        index=f"{prefix}-windows-*", body={"size": 10_000, "query": {"match_all": {}}}
    )
    docs = {}
    for hit in response["hits"]["hits"]:
        source = hit["_source"]
        key = (
            source["experiment"],
            source["variant"],
            source["metric"],
            int(source["window_start"]),
        )
        assert key not in docs, f"document twice: {key}"
        docs[key] = source
    assert response["hits"]["total"]["value"] == len(docs)
    return docs


def sql_windows(
    engine: sa.Engine, experiments: list[str]
) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    rows = {}
    for experiment in experiments:
        for row in window_rows(engine, experiment):
            rows[(experiment, row["variant"], row["metric"], int(row["window_start"]))] = row
    return rows


def assert_docs_equal_sql(docs: dict[Any, dict[str, Any]], rows: dict[Any, dict[str, Any]]) -> None:
    assert set(docs) == set(rows)
    for key, row in rows.items():
        for stat in STATS:
            assert docs[key][stat] == pytest.approx(float(row[stat] or 0.0), rel=1e-12, abs=1e-9), (
                key,
                stat,
            )


def test_replay_documents_equal_sql_and_report(
    apache_kafka: Broker, opensearch: str, small_file: EventFile, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    database = f"sqlite:///{tmp_path}/xp.db"
    env = pipeline_env(
        apache_kafka,
        database,
        XPSTREAM_OPENSEARCH_URL=opensearch,
        XPSTREAM_OPENSEARCH_PREFIX=prefix,
    )
    load_catalog(env, CATALOG, tmp_path)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(small_file.lines) + "\n")
    first = xpstream(env, "replay", str(path), "--json", timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout)["search_backlog"] == 0

    client = OpenSearch([opensearch])
    engine = sa.create_engine(database)
    experiments = [e["key"] for e in CATALOG["experiments"]]
    docs = window_docs(client, prefix)
    assert_docs_equal_sql(docs, sql_windows(engine, experiments))
    client.indices.refresh(index=f"{prefix}-results")
    results = client.count(index=f"{prefix}-results")["count"]
    assert results > 0

    again = xpstream(env, "replay", str(path), "--json", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert window_docs(client, prefix).keys() == docs.keys()  # overwritten, not duplicated
    assert client.count(index=f"{prefix}-results")["count"] == results

    # Analysts' aggregation: per arm, windows by day, n summed — totals as `xpstream report`.
    experiment, metric = "exp-a", "revenue"
    response = client.search(
        index=f"{prefix}-windows-*",
        body={
            "size": 0,
            "query": {
                "bool": {
                    "filter": [{"term": {"experiment": experiment}}, {"term": {"metric": metric}}]
                }
            },
            "aggs": {
                "arm": {
                    "terms": {"field": "variant"},
                    "aggs": {
                        "day": {
                            "date_histogram": {"field": "window_start", "calendar_interval": "day"},
                            "aggs": {
                                "n": {"sum": {"field": "n"}},
                                "sum": {"sum": {"field": "sum"}},
                            },
                        }
                    },
                }
            },
        },
    )
    totals = {
        bucket["key"]: (
            sum(day["n"]["value"] for day in bucket["day"]["buckets"]),
            sum(day["sum"]["value"] for day in bucket["day"]["buckets"]),
        )
        for bucket in response["aggregations"]["arm"]["buckets"]
    }
    report = json.loads(xpstream(env, "report", experiment, "--format", "json").stdout)
    expected = {a["variant"]: (a["n"], a["sum"]) for a in report["arms"] if a["metric"] == metric}
    assert totals.keys() == expected.keys()
    for variant, (n, total) in expected.items():
        assert totals[variant][0] == pytest.approx(n)
        assert totals[variant][1] == pytest.approx(total)
    engine.dispose()


def test_outage_loses_nothing_and_duplicates_nothing(
    apache_kafka: Broker, small_file: EventFile, tmp_path: Path
) -> None:
    node = OpenSearchNode().start()
    prefix = f"o{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path}/outage.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    save_catalog(engine, small_file.catalog)
    settings = Settings(
        database_url=url,
        namespace=f"o{uuid.uuid4().hex[:8]}",
        partitions=4,
        flush_seconds=0.5,
        opensearch_url=node.url,
        opensearch_prefix=prefix,
    )
    lines = [line.encode() for line in small_file.lines]
    half = len(lines) // 2
    client = OpenSearch([node.url])
    sink = OpenSearchSink(engine, client, prefix)
    topic = Topics.of(settings.namespace).events
    seen_backlog = []

    async def scenario() -> None:
        await ensure_topics(apache_kafka.bootstrap, Topics.of(settings.namespace).layout(4))
        pipeline = build_pipeline(settings, apache_kafka.bootstrap, engine)
        await pipeline.app.start()
        stop = asyncio.Event()
        shipping = asyncio.create_task(sink.run(stop, poll_seconds=0.2))
        try:
            targets = await produce_lines(settings, apache_kafka.bootstrap, lines[:half])
            await wait_until_flushed(engine, topic, targets, timeout=120)
            await asyncio.to_thread(node.stop)  # OpenSearch goes away; events keep flowing
            targets = await produce_lines(settings, apache_kafka.bootstrap, lines[half:])
            await wait_until_flushed(engine, topic, targets, timeout=120)
            seen_backlog.append(await asyncio.to_thread(backlog, engine))
            await asyncio.to_thread(node.start)
            for _ in range(600):
                if await asyncio.to_thread(backlog, engine) == 0:
                    break
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await shipping
            await pipeline.app.stop()

    try:
        asyncio.run(scenario())
        assert seen_backlog[0] > 0  # documents waited while OpenSearch was down
        assert backlog(engine) == 0
        experiments = [e.key for e in small_file.catalog.experiments]
        assert_docs_equal_sql(window_docs(client, prefix), sql_windows(engine, experiments))
    finally:
        node.remove()
        engine.dispose()


def test_refused_documents_are_kept_with_their_error(opensearch: str, tmp_path: Path) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path}/refused.db"
    upgrade_to_head(url)
    engine = make_engine(url)
    client = OpenSearch([opensearch])
    # An index whose mapping cannot take our documents (experiment as a number).
    client.indices.create(
        index=f"{prefix}-windows-2025.11",
        body={"mappings": {"properties": {"experiment": {"type": "long"}}}},
    )
    zero = dict.fromkeys(STATS, 0.0)
    rows = [
        {
            "experiment": "exp",
            "variant": "a",
            "metric": "m",
            "window_start": ws,
            "partition": 0,
            **zero,
            "n": 2.0,
            "source_offset": 1,
        }
        for ws in (1_764_000_000, 1_767_000_000)  # 2025-11 (refused) and 2025-12 (accepted)
    ]
    flush_partition_state(engine, rows, [], [], search_outbox=True)
    stats = OpenSearchSink(engine, client, prefix).drain()
    assert (stats.sent, stats.failed) == (1, 1)
    with engine.connect() as conn:
        [(error,)] = conn.execute(sa.select(SearchOutboxRow.error)).all()
    assert error is not None and error.startswith("mapper_parsing_exception")
    assert backlog(engine) == 0  # refused rows are kept, not counted as waiting
    engine.dispose()


def test_saved_objects_are_ndjson_matching_the_templates() -> None:
    lines = saved_objects("xpstream").decode().splitlines()
    objects = [json.loads(line) for line in lines]
    assert all({"type", "id", "attributes"} <= o.keys() for o in objects)
    patterns = {o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    templated = {p for body in templates("xpstream").values() for p in body["index_patterns"]}
    assert patterns == templated
    ids = {o["id"] for o in objects}
    for o in objects:
        for reference in o.get("references", []):
            assert reference["id"] in ids, (o["id"], reference)
    fields_by_pattern = {
        p: set(body["template"]["mappings"]["properties"])
        for body in templates("xpstream").values()
        for p in body["index_patterns"]
    }
    pattern_of = {
        o["id"]: o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"
    }
    for o in objects:
        if o["type"] != "visualization":
            continue
        fields = fields_by_pattern[pattern_of[o["references"][0]["id"]]]
        for agg in json.loads(o["attributes"]["visState"])["aggs"]:
            if "field" in agg["params"]:
                assert agg["params"]["field"] in fields, (o["id"], agg)
    renamed = saved_objects("acme").decode()
    assert '"acme-windows-*"' in renamed and '"xpstream-windows-*"' not in renamed
