#!/usr/bin/env python3
"""confluent-kafka (librdkafka) consumer groups against a live broker: two consumers in one
group split a 4-partition topic; one leaves; the other takes over all four partitions.

Steps, each with a bounded wait:
  1. create a topic with 4 partitions (AdminClient);
  2. two consumers (session.timeout.ms 6000) subscribe in one group; wait until the rebalance
     settles with the partitions split between them: disjoint, together all four, 2 + 2 (what
     both of librdkafka's default assignors, range and roundrobin, give), stable for a while;
  3. the first consumer closes (LeaveGroup); the second must own all four partitions, sooner
     than the session timeout (so the leave itself triggered the rebalance);
  4. one new message per partition is produced; the survivor must receive all four.

Both consumers are polled from this one thread, in turn. Exit status 0 on success; non-zero
with a line starting "FAIL:" otherwise.
"""

import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from staunch_checks import check, client_config, create_topic, Failure, log

PARTITIONS = 4
SESSION_TIMEOUT_MS = 6000
BUDGET_END = float("inf")  # set from --budget


def base_config(args, client_id):
    return client_config(args.bootstrap, client_id)


def make_consumer(args, name):
    return Consumer({
        **base_config(args, name),
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 500,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 500,
    })


def owned(consumer, topic):
    """The partitions of topic assigned to consumer."""
    parts = set()
    for tp in consumer.assignment():
        check(tp.topic == topic, f"assigned a partition of unexpected topic {tp.topic}")
        parts.add(tp.partition)
    return parts


def poll_once(consumer, name, received):
    msg = consumer.poll(0.05)
    if msg is None:
        return
    if msg.error():
        err = msg.error()
        if err.code() == KafkaError._PARTITION_EOF:
            return
        check(not err.fatal(), f"{name}: fatal consumer error: {err}")
        log(f"  {name}: consumer error: {err}")
        return
    received.append((msg.partition(), msg.offset(), msg.value()))


def wait_for(description, topic, consumers, condition, timeout, stable_for):
    """Polls every (name, consumer, received) in turn until condition() has held for
    stable_for seconds. Returns the time it took to first hold (of the final stable run).
    Gives up after timeout seconds, or when the whole program's budget runs out."""
    started = time.monotonic()
    timeout = min(timeout, BUDGET_END - started)
    held_since = None
    last_state = None
    while True:
        for name, consumer, received in consumers:
            poll_once(consumer, name, received)
        state = tuple((name, sorted(owned(consumer, topic))) for name, consumer, _ in consumers)
        if state != last_state:
            log(f"  {time.monotonic() - started:6.2f}s assignments: "
                + ", ".join(f"{n}={p}" for n, p in state))
            last_state = state
        now = time.monotonic()
        if condition():
            if held_since is None:
                held_since = now
            if now - held_since >= stable_for:
                return held_since - started
        else:
            held_since = None
        check(now - started < timeout,
              f"timed out after {timeout:.1f}s waiting for {description}; last assignments: "
              + ", ".join(f"{n}={p}" for n, p in state))


def run(args):
    create_topic(args.bootstrap, args.topic, PARTITIONS)
    all_parts = set(range(PARTITIONS))
    c1 = make_consumer(args, "consumer-1")
    c2 = make_consumer(args, "consumer-2")
    received1, received2 = [], []
    closed1 = False
    try:
        c1.subscribe([args.topic])
        c2.subscribe([args.topic])
        log(f"two consumers subscribed to {args.topic} in group {args.group}")

        def split():
            a, b = owned(c1, args.topic), owned(c2, args.topic)
            return a and b and not (a & b) and (a | b) == all_parts

        took = wait_for("the two consumers to split the 4 partitions", args.topic,
                        [("consumer-1", c1, received1), ("consumer-2", c2, received2)],
                        split, args.timeout, stable_for=2.0)
        a, b = owned(c1, args.topic), owned(c2, args.topic)
        check(len(a) == 2 and len(b) == 2,
              f"partitions split {len(a)} + {len(b)} ({sorted(a)} / {sorted(b)}), expected 2 + 2")
        log(f"rebalance settled after {took:.2f}s: consumer-1 owns {sorted(a)}, "
            f"consumer-2 owns {sorted(b)} (disjoint, together all {PARTITIONS})")

        left_at = time.monotonic()
        c1.close()
        closed1 = True
        log(f"consumer-1 closed (left the group) after {time.monotonic() - left_at:.2f}s")

        wait_start = time.monotonic()
        took = wait_for("consumer-2 to take over all 4 partitions", args.topic,
                        [("consumer-2", c2, received2)],
                        lambda: owned(c2, args.topic) == all_parts, args.timeout, stable_for=1.0)
        took_total = wait_start - left_at + took
        log(f"consumer-2 owns all partitions {sorted(owned(c2, args.topic))}, "
            f"{took_total:.2f}s after the leave")
        check(took_total < SESSION_TIMEOUT_MS / 1000,
              f"the takeover took {took_total:.2f}s, longer than the {SESSION_TIMEOUT_MS} ms "
              "session timeout: the LeaveGroup did not trigger the rebalance")

        producer = Producer({**base_config(args, "staunch-test-producer"), "acks": "all"})
        delivered = []
        for p in range(PARTITIONS):
            producer.produce(args.topic, value=f"after-takeover-{p}".encode(), partition=p,
                             on_delivery=lambda err, msg: delivered.append((err, msg.partition())))
        check(producer.flush(15) == 0, "producing the four marker messages did not finish in 15s")
        check(all(err is None for err, _ in delivered), f"marker deliveries failed: {delivered}")
        wanted = {(p, f"after-takeover-{p}".encode()) for p in range(PARTITIONS)}
        wait_for("consumer-2 to receive a marker message from every partition", args.topic,
                 [("consumer-2", c2, received2)],
                 lambda: wanted <= {(p, v) for p, _, v in received2}, args.timeout,
                 stable_for=0.0)
        log(f"consumer-2 received the marker message of each of the {PARTITIONS} partitions")
    finally:
        if not closed1:
            c1.close()
        c2.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--topic", default="split-topic")
    parser.add_argument("--group", default="split-group")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="bound on each wait for an assignment state, seconds")
    parser.add_argument("--budget", type=float, default=50.0,
                        help="bound on all the waits together, seconds")
    args = parser.parse_args()
    global BUDGET_END
    BUDGET_END = time.monotonic() + args.budget
    log(f"confluent-kafka {__import__('confluent_kafka').version()[0]} "
        f"(librdkafka {__import__('confluent_kafka').libversion()[0]}), broker {args.bootstrap}")
    try:
        run(args)
    except (Failure, KafkaException) as e:
        log(f"FAIL: {e}")
        return 1
    log("OK: split and takeover")
    return 0


if __name__ == "__main__":
    sys.exit(main())
