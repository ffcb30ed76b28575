#!/usr/bin/env python3
"""aiokafka with a transactional producer against Staunch, which has no transactions:
AIOKafkaProducer(transactional_id=...).start() must fail fast with a non-retriable error
instead of retrying for ever.

Calls start() (bounded here by --timeout, since aiokafka itself never gives up on a retriable
error) and measures how long it takes to raise. Prints

    ELAPSED <seconds>
    ERROR <exception class> retriable=<bool>: <the error's text>

and exits 0 only if start() raised within --bound seconds with a Kafka error that is not
retriable; non-zero with a line starting "FAIL:" otherwise (it succeeded, took longer, was
still retrying at --timeout, or the error is retriable).
"""

import argparse
import asyncio
import logging
import sys
import time

import aiokafka
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from staunch_checks import check, Failure, log


async def run(args):
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap,
                                client_id="staunch-test-txn",
                                transactional_id=args.transactional_id,
                                request_timeout_ms=10000)
    started = time.monotonic()
    try:
        await asyncio.wait_for(producer.start(), args.timeout)
    except asyncio.TimeoutError as e:
        elapsed = time.monotonic() - started
        log(f"ELAPSED {elapsed:.3f}")
        raise Failure(f"start() was still retrying after {elapsed:.1f}s") from e
    except KafkaError as e:
        elapsed = time.monotonic() - started
        retriable = bool(getattr(e, "retriable", False))
        log(f"ELAPSED {elapsed:.3f}")
        log(f"ERROR {type(e).__name__} retriable={retriable}: {e}")
        check(elapsed <= args.bound,
              f"start() took {elapsed:.1f}s to fail, more than {args.bound}s")
        check(not retriable, f"the error is retriable: {type(e).__name__}")
        return
    finally:
        await producer.stop()
    elapsed = time.monotonic() - started
    raise Failure(f"start() succeeded after {elapsed:.1f}s against a broker without "
                  f"transactions")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--transactional-id", default="staunch-test-txn-aiokafka")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="how long start() may run before this gives up, seconds")
    parser.add_argument("--bound", type=float, default=5.0,
                        help="the longest start() may take to fail, seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING,
                        format="  aiokafka %(levelname)s %(name)s: %(message)s")
    log(f"aiokafka {aiokafka.__version__}, broker {args.bootstrap}")
    try:
        asyncio.run(run(args))
    except Failure as e:
        log(f"FAIL: {e}")
        return 1
    log("OK: start() failed fast with a non-retriable error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
