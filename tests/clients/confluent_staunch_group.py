#!/usr/bin/env python3
"""`staunch consume --group` processes and a confluent-kafka (librdkafka) consumer in one
consumer group, all with the same assignor (default cooperative-sticky): they split a
4-partition topic, partitions move between them as members join and leave while records keep
arriving, and every record is consumed exactly once in total, whichever of them leads.

The member that joins an empty group first leads it: its assignor computes every assignment,
so the others must understand the assignment bytes it sends (ConsumerProtocolAssignment), and
it must understand their subscriptions (ConsumerProtocolSubscription, with the partitions
each owns and the generation it owned them in, which the cooperative protocol depends on).
--first says which kind joins first.

Steps, each with a bounded wait:
  1. create a topic with 4 partitions; produce 25 records to each (phase 1);
  2. start the first member; wait until it owns all four partitions (so it leads the group);
  3. start the second member (the other kind); wait until the rebalance settles: two
     partitions each, disjoint, together all four, stable for a while;
  4. produce 25 more records to each partition (phase 2); wait until all are consumed; both
     members must have received phase-2 records, each only from the partitions it owns;
  5. while a producer keeps writing to every partition (phase 3), a second staunch process
     joins; the group must settle at 2 + 1 + 1 (balanced), with cooperative-sticky the first
     two members keeping partitions they had (exactly one partition moves); every record is
     consumed;
  6. while the producer writes again (phase 4), the first member (the leader) leaves: SIGTERM
     for staunch (it must exit 0 after committing and leaving), close() for confluent-kafka;
     the other two must settle at 2 + 2, the longest-standing of them now leading; every
     record is consumed;
  7. the rest leave; no (partition, offset) was consumed twice and none was missed; a fresh
     client sees the group's committed offsets at every partition's end.

The confluent-kafka consumer commits synchronously after each record it received (again after
a commit refused mid-rebalance, and at the latest when a partition is revoked), and staunch
after printing each batch; nothing is uncommitted when a partition moves, so a record consumed
twice is a real bug (two members owning a partition at once, or a commit lost). Exit status 0
on success; non-zero with a line starting "FAIL:" otherwise.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)

from staunch_checks import check, client_config, create_topic, Failure, log

PARTITIONS = 4
PER_PARTITION = 25
SESSION_TIMEOUT_MS = 6000
BUDGET_END = float("inf")  # set from --budget


def base_config(args, client_id):
    return client_config(args.bootstrap, client_id)


def new_producer(args):
    return Producer({**base_config(args, "staunch-test-producer"), "acks": "all",
                     "enable.idempotence": True, "linger.ms": 1})


def produce_phase(args, phase):
    """PER_PARTITION records to each partition, values 'phase-partition-i'; returns the
    (partition, offset, value) of each, as acknowledged."""
    producer = new_producer(args)
    delivered = []

    def on_delivery(err, msg):
        delivered.append((err, msg.partition(), msg.offset(), msg.value().decode()))

    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            producer.produce(args.topic, value=f"{phase}-{p}-{i}".encode(), partition=p,
                             on_delivery=on_delivery)
    check(producer.flush(20) == 0, f"phase {phase}: producing did not finish in 20s")
    errors = [d for d in delivered if d[0] is not None]
    check(not errors, f"phase {phase}: deliveries failed: {errors[:5]}")
    check(len(delivered) == PARTITIONS * PER_PARTITION,
          f"phase {phase}: {len(delivered)} deliveries reported")
    log(f"phase {phase}: produced {len(delivered)} records ({PER_PARTITION} per partition)")
    return [(p, o, v) for _, p, o, v in delivered]


class SteadyProducer:
    """Writes one record to each partition in turn every few milliseconds, on a thread of its
    own, until stopped: records keep arriving while partitions change hands."""

    def __init__(self, args, phase):
        self.args = args
        self.phase = phase
        self.stop_flag = threading.Event()
        self.delivered = []
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            producer = new_producer(self.args)

            def on_delivery(err, msg):
                self.delivered.append((err, msg.partition(), msg.offset(),
                                       msg.value().decode()))

            i = 0
            # Bounded: stopped by the main thread, or after 60 s at the latest.
            deadline = time.monotonic() + 60
            while not self.stop_flag.is_set() and time.monotonic() < deadline:
                p = i % PARTITIONS
                producer.produce(self.args.topic, value=f"{self.phase}-{p}-{i}".encode(),
                                 partition=p, on_delivery=on_delivery)
                producer.poll(0)
                i += 1
                time.sleep(0.005)
            if producer.flush(20) != 0:
                self.error = "producing did not finish in 20s"
        except Exception as e:  # reported by stop()
            self.error = repr(e)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(timeout=30)
        check(not self.thread.is_alive(), f"phase {self.phase}: the producer did not stop")
        check(self.error is None, f"phase {self.phase}: {self.error}")
        errors = [d for d in self.delivered if d[0] is not None]
        check(not errors, f"phase {self.phase}: deliveries failed: {errors[:5]}")
        check(self.delivered, f"phase {self.phase}: nothing produced")
        log(f"phase {self.phase}: produced {len(self.delivered)} records while the group "
            "rebalanced")
        return [(p, o, v) for _, p, o, v in self.delivered]


class ConfluentMember:
    """A confluent-kafka consumer polled from the main thread. It commits each record right
    after receiving it; a commit refused because the group is rebalancing (as Kafka refuses
    one sent with the generation that just ended) is tried again on the next step, and the
    offsets of partitions being revoked are committed in the revoke callback, once the
    rebalance gave the member its new generation (what a Java consumer does in
    onPartitionsRevoked)."""

    REBALANCE_CODES = (KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS)

    def __init__(self, args):
        self.name = "confluent"
        self.topic = args.topic
        self.received = []
        self.pending = {}  # partition -> next offset to commit
        self.closed = False
        self.consumer = Consumer({
            **base_config(args, "confluent-member"),
            "group.id": args.group,
            "partition.assignment.strategy": args.assignor,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 500,
            "enable.auto.commit": False,
        })

    def commit(self, partitions):
        """Commits the pending offsets of partitions; False if the group was rebalancing."""
        offsets = {p: o for p, o in self.pending.items() if p in partitions}
        if not offsets:
            return True
        try:
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, o)
                                          for p, o in sorted(offsets.items())],
                                 asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() not in self.REBALANCE_CODES:
                raise
            log(f"  confluent: commit {offsets} refused during a rebalance "
                f"({e.args[0].name()}); will retry")
            return False
        for p, o in offsets.items():
            if self.pending.get(p) == o:
                del self.pending[p]
        return True

    def start(self):
        def on_assign(consumer, partitions):
            log(f"  confluent: assigned {sorted(tp.partition for tp in partitions)}")

        def on_revoke(consumer, partitions):
            revoked = {tp.partition for tp in partitions}
            log(f"  confluent: revoked {sorted(revoked)}")
            check(self.commit(revoked),
                  f"confluent: committing revoked partitions {sorted(revoked)} was refused")

        def on_lost(consumer, partitions):
            log(f"  confluent: LOST {sorted(tp.partition for tp in partitions)}")

        self.consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke,
                                on_lost=on_lost)
        log("confluent-kafka consumer subscribed")

    def step(self):
        if self.closed:
            return
        msg = self.consumer.poll(0.02)
        if msg is not None:
            if msg.error():
                err = msg.error()
                check(not err.fatal(), f"confluent: fatal consumer error: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log(f"  confluent: consumer error: {err}")
            else:
                self.received.append((msg.partition(), msg.offset(), msg.value().decode()))
                self.pending[msg.partition()] = msg.offset() + 1
        self.commit(set(self.pending))

    def owned(self):
        if self.closed:
            return set()
        parts = set()
        for tp in self.consumer.assignment():
            check(tp.topic == self.topic, f"confluent assigned unexpected topic {tp.topic}")
            parts.add(tp.partition)
        return parts

    def snapshot(self):
        return list(self.received)

    def leave(self):
        check(self.commit(set(self.pending)), "confluent: the last commit was refused")
        self.consumer.close()
        self.closed = True
        log("confluent-kafka consumer closed (committed, left the group)")

    def cleanup(self):
        if not self.closed:
            self.consumer.close()
            self.closed = True


class StaunchMember:
    """A `staunch consume --group` child process; its stdout and stderr read by threads. Its
    partitions are what its last rebalance line on stderr says it owns."""

    def __init__(self, args, name):
        self.args = args
        self.name = name
        self.lock = threading.Lock()
        self.received = []
        self.owned_parts = set()
        self.proc = None
        self.exit_status = None

    def start(self):
        command = [self.args.staunch, "consume", self.args.topic, "--group", self.args.group,
                   "--assignor", self.args.assignor, "--format", "%p %o %v",
                   "--bootstrap", self.args.bootstrap]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "NO_COLOR": "1"})
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        log(f"{self.name}: started {' '.join(command)} (pid {self.proc.pid})")

    def _read_stdout(self):
        for line in self.proc.stdout:
            p, o, v = line.rstrip("\n").split(" ", 2)
            with self.lock:
                self.received.append((int(p), int(o), v))

    def _read_stderr(self):
        prefix = f"staunch: group {self.args.group}: "
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            log(f"  {self.name} stderr: {line}")
            if not (line.startswith(prefix) and "; owns " in line):
                continue
            owns = line.split("; owns ", 1)[1]
            parts = set()
            if ": " in owns:
                for name in owns.split(": ", 1)[1].split(", "):
                    topic, partition = name.rsplit("-", 1)
                    if topic == self.args.topic:
                        parts.add(int(partition))
            with self.lock:
                self.owned_parts = parts

    def step(self):
        if self.exit_status is None and self.proc.poll() is not None:
            self.exit_status = self.proc.returncode
            check(False, f"{self.name} exited on its own with status {self.exit_status}")

    def owned(self):
        with self.lock:
            return set(self.owned_parts)

    def snapshot(self):
        with self.lock:
            return list(self.received)

    def leave(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_status = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure(f"{self.name} did not exit within 20s of SIGTERM")
        check(self.exit_status == 0,
              f"{self.name} exited with status {self.exit_status} after SIGTERM")
        with self.lock:
            self.owned_parts = set()
        log(f"{self.name} exited 0 after SIGTERM (committed, left the group)")

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(description, members, condition, timeout, stable_for=0.0):
    """Steps every member until condition() has held for stable_for seconds; bounded by
    timeout and by the whole program's budget."""
    started = time.monotonic()
    timeout = min(timeout, BUDGET_END - started)
    held_since = None
    last_state = None
    while True:
        for m in members:
            m.step()
        if not any(isinstance(m, ConfluentMember) for m in members):
            time.sleep(0.02)
        state = tuple((m.name, sorted(m.owned())) for m in members)
        if state != last_state:
            log(f"  {time.monotonic() - started:6.2f}s owned: "
                + ", ".join(f"{n}={p}" for n, p in state))
            last_state = state
        now = time.monotonic()
        if condition():
            if held_since is None:
                held_since = now
            if now - held_since >= stable_for:
                return
        else:
            held_since = None
        check(now - started < timeout,
              f"timed out after {timeout:.1f}s waiting for {description}; owned: "
              + ", ".join(f"{n}={p}" for n, p in state))


def settled(members, sizes):
    """The members own disjoint partitions, together all of them, in these counts."""
    owned = [m.owned() for m in members]
    union = set().union(*owned)
    return (sum(len(o) for o in owned) == len(union) and union == set(range(PARTITIONS))
            and sorted(len(o) for o in owned) == sorted(sizes))


def consumed_all(everyone, produced):
    got = set()
    for m in everyone:
        got |= {(p, o) for p, o, _ in m.snapshot()}
    return {(p, o) for p, o, _ in produced} <= got


def run(args, everyone):
    create_topic(args.bootstrap, args.topic, PARTITIONS)
    produced = produce_phase(args, 1)
    staunch = StaunchMember(args, "staunch-1")
    confluent = ConfluentMember(args)
    third = StaunchMember(args, "staunch-2")
    everyone += [staunch, confluent, third]
    first, second = (staunch, confluent) if args.first == "staunch" else (confluent, staunch)

    first.start()
    wait_for(f"{first.name} (joining first) to own all {PARTITIONS} partitions", [first],
             lambda: len(first.owned()) == PARTITIONS, args.timeout)
    log(f"{first.name} owns every partition: it leads the group")

    second.start()
    members = [first, second]
    wait_for("the rebalance to split the partitions 2 + 2", members,
             lambda: settled(members, [2, 2]), args.timeout, stable_for=2.0)
    owned = {m.name: m.owned() for m in members}
    log(f"settled: {first.name} (leader) owns {sorted(owned[first.name])}, "
        f"{second.name} owns {sorted(owned[second.name])}")

    before = {m.name: len(m.snapshot()) for m in members}
    produced += produce_phase(args, 2)
    wait_for("every record of phases 1 and 2 to be consumed", members,
             lambda: consumed_all(everyone, produced), args.timeout)
    for m in members:
        phase2 = [r for r in m.snapshot()[before[m.name]:] if r[2].startswith("2-")]
        check(phase2, f"{m.name} received no phase-2 record")
        parts = {p for p, _, _ in phase2}
        check(parts <= owned[m.name],
              f"{m.name} received phase-2 records of partitions {sorted(parts)} but owns "
              f"{sorted(owned[m.name])}")
        log(f"{m.name} received {len(phase2)} phase-2 records, of partitions {sorted(parts)}")

    steady = SteadyProducer(args, 3)
    third.start()
    members = [first, second, third]
    wait_for("the rebalance to settle at 2 + 1 + 1", members,
             lambda: settled(members, [2, 1, 1]), args.timeout, stable_for=2.0)
    produced += steady.stop()
    if args.assignor == "cooperative-sticky":
        for m in (first, second):
            now = m.owned()
            check(now <= owned[m.name],
                  f"{m.name} owned {sorted(owned[m.name])} and now owns {sorted(now)}: the "
                  "assignment is not sticky")
    log("settled at 2 + 1 + 1: "
        + ", ".join(f"{m.name}={sorted(m.owned())}" for m in members))
    wait_for("every record of phase 3 to be consumed", members,
             lambda: consumed_all(everyone, produced), args.timeout)

    steady = SteadyProducer(args, 4)
    first.leave()
    members = [second, third]
    wait_for(f"{second.name} and {third.name} to split the partitions 2 + 2 after "
             f"{first.name} left", members, lambda: settled(members, [2, 2]), args.timeout,
             stable_for=1.0)
    produced += steady.stop()
    wait_for("every record of phase 4 to be consumed", members,
             lambda: consumed_all(everyone, produced), args.timeout)
    for m in members:
        m.leave()

    seen = {}
    for m in everyone:
        for p, o, v in m.snapshot():
            seen.setdefault((p, o), []).append((m.name, v))
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    check(not twice, f"{len(twice)} records consumed more than once, e.g. "
          f"{sorted(twice.items())[:5]}")
    expected = {(p, o): v for p, o, v in produced}
    missing = sorted(set(expected) - set(seen))
    check(not missing, f"{len(missing)} records never consumed, e.g. {missing[:5]}")
    wrong = [(k, seen[k][0][1], v) for k, v in expected.items() if seen[k][0][1] != v]
    check(not wrong, f"records consumed with another value than produced: {wrong[:5]}")
    counts = {m.name: len(m.snapshot()) for m in everyone}
    log(f"every one of the {len(expected)} records consumed exactly once: {counts}")

    # The group's committed offsets, as a fresh client sees them: every partition's end.
    checker = Consumer({**base_config(args, "offset-checker"), "group.id": args.group,
                        "enable.auto.commit": False})
    try:
        committed = checker.committed([TopicPartition(args.topic, p) for p in range(PARTITIONS)],
                                      timeout=10)
        ends = {p: max(o for q, o, _ in produced if q == p) + 1 for p in range(PARTITIONS)}
        got = {tp.partition: tp.offset for tp in committed}
        check(got == ends, f"committed offsets {got}, expected the ends {ends}")
        log(f"the group's committed offsets are at every partition's end: {got}")
    finally:
        checker.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--staunch", required=True, help="path of the staunch binary")
    parser.add_argument("--first", choices=["staunch", "confluent"], required=True,
                        help="which kind of member joins first (and so leads the group)")
    parser.add_argument("--assignor", choices=["cooperative-sticky", "range"],
                        default="cooperative-sticky",
                        help="the assignor every member proposes (range: the eager protocol)")
    parser.add_argument("--topic", default="mixed-group")
    parser.add_argument("--group", default="mixed-group")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="bound on each wait, seconds")
    parser.add_argument("--budget", type=float, default=75.0,
                        help="bound on all the waits together, seconds")
    args = parser.parse_args()
    global BUDGET_END
    BUDGET_END = time.monotonic() + args.budget
    log(f"confluent-kafka {__import__('confluent_kafka').version()[0]} "
        f"(librdkafka {__import__('confluent_kafka').libversion()[0]}), broker {args.bootstrap}, "
        f"{args.first} joins first, assignor {args.assignor}")
    everyone = []
    try:
        run(args, everyone)
    except (Failure, KafkaException) as e:
        log(f"FAIL: {e}")
        return 1
    finally:
        for m in everyone:
            m.cleanup()
    log(f"OK: staunch consume and confluent-kafka shared the group ({args.first} first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
