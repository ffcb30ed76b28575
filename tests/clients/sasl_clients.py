#!/usr/bin/env python3
"""confluent-kafka and kafka-python over SASL_PLAINTEXT against a live broker.

    --client confluent|kafka-python --mechanism PLAIN|SCRAM-SHA-256|SCRAM-SHA-512
    --user U --password P --topic T --count N [--expect-auth-failure] [--seconds S]

Without --expect-auth-failure: produces N messages (acks=all, each delivery checked), spread
over --seconds (default 0: at once; with the broker's connections_max_reauth_ms small, the
client has to re-authenticate along the way), then consumes the topic from the start and
checks every message is there, in order. Prints "PRODUCED n" and "CONSUMED n".

With --expect-auth-failure: the client must report an authentication error and nothing may
be acknowledged; prints "AUTH FAILED: <error>".

Exit status 0 on success; non-zero with a line starting "FAIL:" otherwise. Every wait is
bounded.
"""

import argparse
import sys
import time

from staunch_checks import Failure, check, log


def confluent_config(args, client_id):
    return {
        "bootstrap.servers": args.bootstrap,
        "client.id": client_id,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": args.mechanism,
        "sasl.username": args.user,
        "sasl.password": args.password,
        "socket.timeout.ms": 10000,
    }


def confluent(args):
    from confluent_kafka import Consumer, KafkaError, Producer

    errors = []

    def error_cb(err):
        log(f"  client error callback: {err}")
        errors.append(err)

    config = confluent_config(args, "staunch-sasl")
    config.update({"error_cb": error_cb, "acks": "all", "message.timeout.ms": 15000,
                   "enable.idempotence": True})
    producer = Producer(config)
    delivered = []
    failed = []

    def on_delivery(err, msg):
        if err is None:
            delivered.append(msg.offset())
        else:
            failed.append(err)

    if args.expect_auth_failure:
        producer.produce(args.topic, b"must not be stored", on_delivery=on_delivery)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not failed and not delivered:
            producer.poll(0.2)
            if any(e.code() == KafkaError._AUTHENTICATION for e in errors):
                break
        producer.purge()
        producer.flush(5)
        check(not delivered, f"a message was acknowledged at {delivered}")
        auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        check(auth, f"no authentication error reported (errors: {errors}, failed: {failed})")
        log(f"AUTH FAILED: {auth[0]}")
        return

    gap = args.seconds / max(args.count, 1)
    for i in range(args.count):
        producer.produce(args.topic, f"message {i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
        if gap:
            time.sleep(gap)
            producer.poll(0)
    left = producer.flush(30)
    check(left == 0, f"{left} messages not delivered")
    check(not failed, f"delivery failures: {failed[:3]}")
    check(len(delivered) == args.count, f"{len(delivered)} of {args.count} delivered")
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    check(not auth, f"authentication errors while producing: {auth}")
    log(f"PRODUCED {len(delivered)}")

    consumer_config = confluent_config(args, "staunch-sasl-consumer")
    consumer_config.update({"group.id": f"sasl-{args.topic}", "auto.offset.reset": "earliest",
                            "enable.auto.commit": False, "error_cb": error_cb})
    consumer = Consumer(consumer_config)
    consumer.subscribe([args.topic])
    values = []
    deadline = time.monotonic() + 60
    while len(values) < args.count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        check(msg.error() is None, f"consume error: {msg.error()}")
        values.append(msg.value().decode())
    consumer.close()
    check(values == [f"message {i}" for i in range(args.count)],
          f"consumed {len(values)} values, first differences: {values[:3]}")
    log(f"CONSUMED {len(values)}")


def kafka_python(args):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    common = {
        "bootstrap_servers": args.bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": args.mechanism,
        "sasl_plain_username": args.user,
        "sasl_plain_password": args.password,
        "request_timeout_ms": 15000,
    }
    if args.expect_auth_failure:
        # kafka-python logs the broker's refusal and keeps trying to bootstrap until
        # max_block_ms; the refusal is what must show, and no acknowledgement.
        import logging

        seen = []

        class Capture(logging.Handler):
            def emit(self, record):
                seen.append(record.getMessage())

        logging.getLogger("kafka").addHandler(Capture())
        logging.getLogger("kafka").setLevel(logging.INFO)
        acknowledged = False
        try:
            producer = KafkaProducer(acks="all", max_block_ms=8000, **common)
            producer.send(args.topic, b"must not be stored").get(timeout=8)
            acknowledged = True
        except KafkaError as e:
            log(f"  client raised {e!r}")
        check(not acknowledged, "a message was acknowledged with wrong credentials")
        refusals = [m for m in seen if "Authentication failed during authentication" in m]
        check(refusals, f"no authentication failure logged; log: {seen[-5:]}")
        log(f"AUTH FAILED: {refusals[0]}")
        return

    producer = KafkaProducer(acks="all", **common)
    futures = [producer.send(args.topic, f"message {i}".encode()) for i in range(args.count)]
    for f in futures:
        f.get(timeout=30)
    producer.close()
    log(f"PRODUCED {len(futures)}")
    consumer = KafkaConsumer(args.topic, group_id=f"sasl-kp-{args.topic}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=20000, **common)
    values = []
    for msg in consumer:
        values.append(msg.value.decode())
        if len(values) == args.count:
            break
    consumer.close()
    check(values == [f"message {i}" for i in range(args.count)],
          f"consumed {len(values)} values, first: {values[:3]}")
    log(f"CONSUMED {len(values)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--client", choices=["confluent", "kafka-python"], required=True)
    parser.add_argument("--mechanism", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--expect-auth-failure", action="store_true")
    args = parser.parse_args()
    try:
        if args.client == "confluent":
            confluent(args)
        else:
            kafka_python(args)
    except Failure as e:
        log(f"FAIL: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
