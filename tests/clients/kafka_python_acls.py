#!/usr/bin/env python3
"""kafka-python's KafkaAdminClient manages ACLs on a broker with the authorizer on, connected
as a super user (User:ANONYMOUS on a PLAINTEXT listener):

  - create_acls: three ACLs (an ALLOW WRITE on a literal topic, an ALLOW READ on a prefixed
    topic, a DENY on a group) all succeed; one with an unknown operation code fails alone
    with INVALID_REQUEST;
  - describe_acls: every ACL filter lists exactly the three; a MATCH filter for a topic under
    the prefix lists the prefixed ACL; a principal filter lists only that principal's;
  - delete_acls: a filter for one principal removes exactly that principal's ACLs, and
    describe_acls then lists the others only;
  - with --expect-disabled (the authorizer off) describe_acls raises SecurityDisabledError.

Exit status 0 on success; non-zero with a line starting "FAIL:" otherwise.
"""

import argparse
import sys

import kafka
import kafka.errors as Errors
from kafka import KafkaAdminClient
from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                         ACLResourcePatternType, ResourcePattern, ResourcePatternFilter,
                         ResourceType)

from staunch_checks import check, Failure, log


def key(acl):
    p = acl.resource_pattern
    return (p.resource_type.name, p.resource_name, p.pattern_type.name, acl.principal, acl.host,
            acl.operation.name, acl.permission_type.name)


def any_filter(principal=None, resource=None):
    return ACLFilter(principal=principal, host=None, operation=ACLOperation.ANY,
                     permission_type=ACLPermissionType.ANY,
                     resource_pattern=resource or ResourcePatternFilter(
                         ResourceType.ANY, None, ACLResourcePatternType.ANY))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--expect-disabled", action="store_true",
                        help="the broker runs without the authorizer")
    args = parser.parse_args()
    log(f"kafka-python {kafka.__version__}, broker {args.bootstrap}")
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, client_id="staunch-test-acls",
                             request_timeout_ms=15000)
    try:
        if args.expect_disabled:
            try:
                admin.describe_acls(any_filter())
            except Errors.SecurityDisabledError:
                log("describe_acls without the authorizer: SecurityDisabledError, as Kafka")
                return 0
            raise Failure("describe_acls succeeded on a broker without the authorizer")

        acls = [
            ACL("User:alice", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                ResourcePattern(ResourceType.TOPIC, "orders", ACLResourcePatternType.LITERAL)),
            ACL("User:alice", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                ResourcePattern(ResourceType.TOPIC, "logs.", ACLResourcePatternType.PREFIXED)),
            ACL("User:bob", "10.0.0.7", ACLOperation.ALL, ACLPermissionType.DENY,
                ResourcePattern(ResourceType.GROUP, "billing", ACLResourcePatternType.LITERAL)),
        ]
        created = admin.create_acls(acls)
        check(len(created["succeeded"]) == 3 and not created["failed"],
              f"create_acls: {created}")
        log("create_acls: 3 ACLs created")

        bad = ACL("User:carol", "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                  ResourcePattern(ResourceType.TOPIC, "t", ACLResourcePatternType.LITERAL))
        bad.operation = ACLOperation.UNKNOWN  # not a valid operation on the wire
        result = admin.create_acls([bad])
        check(not result["succeeded"] and result["failed"] == [Errors.InvalidRequestError],
              f"create_acls with operation UNKNOWN: {result}")
        log("create_acls with operation UNKNOWN: INVALID_REQUEST")

        listed, error = admin.describe_acls(any_filter())
        check(error is Errors.NoError, f"describe_acls error {error}")
        check(sorted(map(key, listed)) == sorted(map(key, acls)),
              f"describe_acls lists {sorted(map(key, listed))}, expected {sorted(map(key, acls))}")
        log(f"describe_acls lists the {len(listed)} ACLs")

        match = ResourcePatternFilter(ResourceType.TOPIC, "logs.app", ACLResourcePatternType.MATCH)
        listed, _ = admin.describe_acls(any_filter(resource=match))
        check([key(a) for a in listed] == [key(acls[1])],
              f"describe_acls MATCH logs.app lists {[key(a) for a in listed]}")
        listed, _ = admin.describe_acls(any_filter(principal="User:bob"))
        check([key(a) for a in listed] == [key(acls[2])],
              f"describe_acls for User:bob lists {[key(a) for a in listed]}")
        log("describe_acls with MATCH and principal filters lists exactly the matching ACLs")

        results = admin.delete_acls([any_filter(principal="User:alice")])
        check(len(results) == 1, f"delete_acls: {results}")
        _, matched, error = results[0]
        check(error is Errors.NoError, f"delete_acls error {error}")
        check(sorted(map(key, matched)) == sorted(map(key, acls[:2])),
              f"delete_acls removed {sorted(map(key, matched))}")
        listed, _ = admin.describe_acls(any_filter())
        check([key(a) for a in listed] == [key(acls[2])],
              f"after delete_acls, describe_acls lists {[key(a) for a in listed]}")
        log("delete_acls removed exactly User:alice's 2 ACLs; User:bob's remains")
        return 0
    except Failure as failure:
        log(f"FAIL: {failure}")
        return 1
    finally:
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
