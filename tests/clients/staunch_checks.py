"""What every client script shares: a failed check, a flushed log line, and librdkafka's error
callback. Imported by the scripts in this directory (their own directory is on sys.path)."""


class Failure(Exception):
    """A check did not hold."""


def log(text):
    print(text, flush=True)


def check(condition, text):
    if not condition:
        raise Failure(text)


def error_cb(err):
    # librdkafka retries transient errors itself and reports client-level ones here; only log
    # them: a real problem shows up as a timeout.
    log(f"  client error callback: {err}")


def client_config(bootstrap, client_id):
    """The librdkafka settings every confluent-kafka client in these scripts starts from."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "error_cb": error_cb,
        "socket.timeout.ms": 10000,
    }


def create_topic(bootstrap, topic, partitions):
    """Creates `topic` with `partitions` partitions (replication 1) with confluent-kafka's admin
    client and checks that the metadata then shows exactly those partitions."""
    # Imported here: the kafka-python script shares this module without confluent-kafka.
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(bootstrap, "staunch-test-admin"))
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)],
                                  operation_timeout=10, request_timeout=15)
    try:
        futures[topic].result(timeout=20)
    except KafkaException as e:
        raise Failure(f"creating topic {topic}: {e}") from e
    metadata = admin.list_topics(timeout=10).topics.get(topic)
    check(metadata is not None, f"topic {topic} missing from metadata after creation")
    check(metadata.error is None, f"topic {topic} metadata error: {metadata.error}")
    check(len(metadata.partitions) == partitions,
          f"topic {topic} has {len(metadata.partitions)} partitions, expected {partitions}")
    log(f"created topic {topic} with {partitions} partition(s)")
