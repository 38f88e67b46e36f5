"""docker-compose.yml is for users (no Docker engine here): check its services and ports."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"

PROMISED = {
    "kafka": ("apache/kafka:", "127.0.0.1:9092:9092"),
    "postgres": ("postgres:15", "127.0.0.1:5432:5432"),
    "opensearch": ("opensearchproject/opensearch:", "127.0.0.1:9200:9200"),
    "opensearch-dashboards": ("opensearchproject/opensearch-dashboards:", "127.0.0.1:5601:5601"),
    "localstack": ("localstack/localstack:", "127.0.0.1:4566:4566"),
}


def test_compose_declares_promised_services_on_loopback_with_pinned_images() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(PROMISED) <= set(services)
    for name, (image_prefix, port) in PROMISED.items():
        image = services[name]["image"]
        assert image.startswith(image_prefix), name
        tag = image.rsplit(":", 1)[1]
        assert tag not in {"", "latest"} and tag[0].isdigit(), f"{name} image not pinned: {image}"
        assert port in services[name]["ports"], name


def test_compose_kafka_runs_kraft_with_transactions_possible() -> None:
    kafka = yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert "9092" in kafka["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_dashboards_point_at_opensearch() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert (
        "http://opensearch:9200"
        in services["opensearch-dashboards"]["environment"]["OPENSEARCH_HOSTS"]
    )


def test_compose_localstack_serves_kinesis() -> None:
    localstack = yaml.safe_load(COMPOSE.read_text())["services"]["localstack"]["environment"]
    assert "kinesis" in localstack["SERVICES"].split(",")
