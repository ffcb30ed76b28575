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
