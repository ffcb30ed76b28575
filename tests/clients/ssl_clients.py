#!/usr/bin/env python3
"""confluent-kafka or kafka-python against a broker's SSL listener.

--expect ok:
  - the client connects over TLS (verifying the broker's certificate against --ca and its
    host name), produces --count keyed messages to --topic and consumes exactly them back,
    in order, through the same listener (so Metadata must answer the SSL listener's port:
    the clients reconnect to the advertised address).
--expect refused:
  - the client cannot get metadata within a few seconds (the TLS handshake is refused: a
    missing, expired or unknown client certificate, or a plaintext client on a TLS port).

--security-protocol picks what the client speaks (SSL by default; PLAINTEXT to play a
plaintext client on a TLS port). --cert / --key present a client certificate.

Exit status 0 on success; non-zero with a line starting "FAIL:" otherwise.
"""

import argparse
import sys
import time

from staunch_checks import Failure, check, error_cb, log

DEADLINE_S = 60


def confluent(args):
    from confluent_kafka import Consumer, KafkaException, Producer

    config = {
        "bootstrap.servers": args.bootstrap,
        "client.id": "staunch-ssl-test",
        "security.protocol": args.security_protocol,
        "error_cb": error_cb,
        "socket.timeout.ms": 10000,
    }
    if args.security_protocol.upper() == "SSL":
        config["ssl.ca.location"] = args.ca
        if args.cert:
            config["ssl.certificate.location"] = args.cert
            config["ssl.key.location"] = args.key
    if args.expect == "refused":
        # Each refused attempt is logged by librdkafka; the outcome is checked below.
        config["log_level"] = 0
    producer = Producer({**config, "acks": "all", "enable.idempotence": True})
    if args.expect == "refused":
        try:
            metadata = producer.list_topics(timeout=5)
        except KafkaException as e:
            log(f"refused as expected: {e}")
            return
        raise Failure(f"metadata answered over a connection that should be refused: "
                      f"{metadata.brokers}")
    delivered = []

    def on_delivery(err, msg):
        if err is not None:
            raise Failure(f"delivery failed: {err}")
        delivered.append((msg.partition(), msg.offset()))

    for i in range(args.count):
        producer.produce(args.topic, key=f"k{i}", value=f"v{i}", on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(DEADLINE_S)
    check(left == 0, f"{left} messages not delivered within {DEADLINE_S}s")
    check(len(delivered) == args.count, f"{len(delivered)} of {args.count} delivered")
    log(f"produced {args.count} messages over {args.security_protocol}")

    consumer = Consumer({**config, "group.id": f"ssl-test-{args.topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([args.topic])
    values = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(values) < args.count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise Failure(f"consume error: {msg.error()}")
            values.append(msg.value().decode())
    finally:
        consumer.close()
    check(values == [f"v{i}" for i in range(args.count)],
          f"consumed {len(values)} messages, not exactly the {args.count} produced: {values[:5]}...")
    log(f"consumed all {args.count} back over {args.security_protocol}")


def kafka_python(args):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    config = {
        "bootstrap_servers": args.bootstrap,
        "security_protocol": args.security_protocol.upper(),
        "request_timeout_ms": 15000,
    }
    if args.security_protocol.upper() == "SSL":
        config["ssl_cafile"] = args.ca
        if args.cert:
            config["ssl_certfile"] = args.cert
            config["ssl_keyfile"] = args.key
    if args.expect == "refused":
        try:
            config["request_timeout_ms"] = 5000
            producer = KafkaProducer(**config, max_block_ms=5000, bootstrap_timeout_ms=5000)
        except (KafkaError, OSError) as e:
            log(f"refused as expected: {e!r}")
            return
        try:
            producer.partitions_for(args.topic)
        except (KafkaError, OSError) as e:
            log(f"refused as expected: {e!r}")
            return
        finally:
            producer.close(timeout=5)
        raise Failure("kafka-python got metadata over a connection that should be refused")
    producer = KafkaProducer(**config, acks="all")
    try:
        futures = [producer.send(args.topic, key=f"k{i}".encode(), value=f"v{i}".encode())
                   for i in range(args.count)]
        for future in futures:
            future.get(timeout=DEADLINE_S)
    finally:
        producer.close(timeout=10)
    log(f"produced {args.count} messages over {args.security_protocol}")
    consumer = KafkaConsumer(args.topic, **config, group_id=f"ssl-test-{args.topic}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=15000)
    values = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        for msg in consumer:
            values.append(msg.value.decode())
            if len(values) >= args.count or time.monotonic() > deadline:
                break
    finally:
        consumer.close()
    check(values == [f"v{i}" for i in range(args.count)],
          f"consumed {len(values)} messages, not exactly the {args.count} produced")
    log(f"consumed all {args.count} back over {args.security_protocol}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    parser.add_argument("--expect", choices=["ok", "refused"], default="ok")
    parser.add_argument("--security-protocol", default="SSL")
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--topic", default="ssl-test")
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    try:
        if args.client == "confluent":
            confluent(args)
        else:
            kafka_python(args)
    except Exception as e:  # noqa: BLE001 - every failure is a test failure, reported as such
        log(f"FAIL: {type(e).__name__}: {e}")
        return 1
    log(f"OK: {args.client} {args.expect}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
