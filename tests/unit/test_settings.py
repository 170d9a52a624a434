import logging

import pytest

from loyalty.errors import SettingsError
from loyalty.settings import Settings, mask_url
from worker.log_format import JsonFormatter, SecretMask


def test_defaults() -> None:
    s = Settings.from_env({})
    # The worker and the command line are the application role, never the owner.
    assert s.database_url == "postgresql+psycopg://loyalty_app@127.0.0.1:5432/loyalty"
    assert s.owner_database_url == "postgresql+psycopg://loyalty_owner@127.0.0.1:5432/loyalty"
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.result_backend == "redis://127.0.0.1:6379/1"


def test_reads_prefixed_variables_and_ints() -> None:
    s = Settings.from_env({"LOYALTY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
                           "LOYALTY_MAX_RETRIES": "2", "PATH": "/bin"})
    assert s.broker_url.startswith("amqp://")
    assert s.max_retries == 2


@pytest.mark.parametrize("env", [
    {"LOYALTY_BROKR_URL": "redis://x"},
    {"LOYALTY_MAX_RETRIES": "many"},
    {"LOYALTY_LOG_FORMAT": "xml"},
    {"LOYALTY_BROKER_URL": "sqs://queue"},
    {"LOYALTY_VISIBILITY_TIMEOUT": "30", "LOYALTY_TASK_TIME_LIMIT": "60"},
    {"LOYALTY_QUEUE_TYPE": "stream", "LOYALTY_BROKER_URL": "amqp://x//"},
    {"LOYALTY_QUEUE_TYPE": "quorum"},  # a RabbitMQ feature; the default broker is Redis
])
def test_rejects_bad_settings(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_test_variables_are_not_settings() -> None:
    Settings.from_env({"LOYALTY_TEST_ADMIN_URL": "postgresql://x"})


def test_secrets_are_masked() -> None:
    s = Settings.from_env({"LOYALTY_DATABASE_URL": "postgresql+psycopg://app:s3cr3t@db/loyalty",
                           "LOYALTY_BROKER_URL": "amqp://user:hunter2@mq//"})
    assert mask_url(s.database_url) == "postgresql+psycopg://app:***@db/loyalty"
    formatter = JsonFormatter(SecretMask(s.secrets()))
    record = logging.LogRecord("x", logging.ERROR, __file__, 1,
                               "cannot connect to %s", (s.database_url,), None)
    record.detail = "amqp://user:hunter2@mq//"
    line = formatter.format(record)
    assert "s3cr3t" not in line and "hunter2" not in line
    assert '"msg": "cannot connect to postgresql+psycopg://app:***@db/loyalty"' in line


def test_each_queue_has_its_own_exchange_and_key() -> None:
    """A bare client's send_task(queue=...) declares exactly these; nothing lands twice."""
    from worker.config import celery_config

    queues = celery_config(Settings.from_env({}))["task_queues"]
    assert [(q.name, q.exchange.name, q.exchange.type, q.routing_key) for q in queues] == [
        ("loyalty.events", "loyalty.events", "direct", "loyalty.events"),
        ("loyalty.admin", "loyalty.admin", "direct", "loyalty.admin"),
    ]


def test_quorum_queues_are_declared_as_a_producer_with_that_type_declares_them() -> None:
    from worker.config import celery_config

    config = celery_config(Settings.from_env({"LOYALTY_QUEUE_TYPE": "quorum",
                                              "LOYALTY_BROKER_URL": "amqp://x//"}))
    assert [q.queue_arguments for q in config["task_queues"]] == [{"x-queue-type": "quorum"}] * 2
    assert config["task_create_missing_queue_type"] == "quorum"
    classic = celery_config(Settings.from_env({}))
    assert [q.queue_arguments for q in classic["task_queues"]] == [None, None]
