//! Integration tests of the producer: against the embedded broker, and against a wrapper that
//! injects faults into it.

#![allow(missing_docs, unreachable_pub, dead_code)]

mod compression;
mod faults;
mod outbox;
mod semantics;
mod support;
