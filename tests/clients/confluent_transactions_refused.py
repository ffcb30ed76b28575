#!/usr/bin/env python3
"""confluent-kafka (librdkafka) with a transactional producer against Staunch, which has no
transactions: init_transactions() must fail fast with a fatal (non-retriable) error instead of
retrying until its timeout.

Creates Producer({'transactional.id': ...}), calls init_transactions(--timeout) and measures
how long it takes to raise. Prints

    ELAPSED <seconds>
    ERROR <code name> fatal=<bool> retriable=<bool>: <the error's text>

and exits 0 only if init_transactions() raised within --bound seconds with an error that is
fatal and not retriable; non-zero with a line starting "FAIL:" otherwise (it succeeded, took
longer, timed out, or the error is retriable).
"""

import argparse
import sys
import time

import confluent_kafka
from confluent_kafka import KafkaException, Producer

from staunch_checks import check, client_config, Failure, log


def run(args):
    producer = Producer({
        **client_config(args.bootstrap, "staunch-test-txn"),
        "transactional.id": args.transactional_id,
    })
    started = time.monotonic()
    try:
        producer.init_transactions(args.timeout)
    except KafkaException as e:
        elapsed = time.monotonic() - started
        error = e.args[0]
        log(f"ELAPSED {elapsed:.3f}")
        log(f"ERROR {error.name()} fatal={error.fatal()} retriable={error.retriable()}: "
            f"{error.str()}")
        check(elapsed <= args.bound,
              f"init_transactions() took {elapsed:.1f}s to fail, more than {args.bound}s")
        check(not error.retriable(), f"the error is retriable: {error.name()}")
        check(error.fatal(), f"the error is not fatal: {error.name()}")
        return
    elapsed = time.monotonic() - started
    raise Failure(f"init_transactions() succeeded after {elapsed:.1f}s against a broker "
                  f"without transactions")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--transactional-id", default="staunch-test-txn-confluent")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="init_transactions() timeout, seconds")
    parser.add_argument("--bound", type=float, default=5.0,
                        help="the longest init_transactions() may take to fail, seconds")
    args = parser.parse_args()
    log(f"confluent-kafka {confluent_kafka.version()[0]} "
        f"(librdkafka {confluent_kafka.libversion()[0]}), broker {args.bootstrap}")
    try:
        run(args)
    except Failure as e:
        log(f"FAIL: {e}")
        return 1
    log("OK: init_transactions() failed fast with a fatal error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
