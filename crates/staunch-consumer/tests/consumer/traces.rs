//! The consumer's `tracing` output: an INFO span per poll and a DEBUG span per record
//! handler call with the record's coordinates, a WARN event per dead letter, an INFO event
//! per retry-topic forward. Captured by a small subscriber installed as the global default of this test binary (a thread-local
//! one misses events whose call sites other tests' threads registered first), so it also sees
//! what the other tests log: everything checked here is picked out by this test's groups.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_consumer::{Consumer, ConsumerConfig, FailurePolicy, HandlerError, handler_fn};
use staunch_core::BackOff;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::support::*;

type Fields = BTreeMap<String, String>;

/// Every span created (name, level and fields) and every event (level and fields, `message`
/// included).
#[derive(Debug, Default)]
struct Captured {
    spans: Vec<(String, Level, Fields)>,
    events: Vec<(Level, Fields)>,
}

#[derive(Debug, Clone, Default)]
struct Capture {
    captured: Arc<Mutex<Captured>>,
    next_id: Arc<AtomicU64>,
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let mut fields = Fields::new();
        attributes.record(&mut Visitor(&mut fields));
        self.captured.lock().unwrap().spans.push((
            attributes.metadata().name().to_owned(),
            *attributes.metadata().level(),
            fields,
        ));
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        self.captured
            .lock()
            .unwrap()
            .events
            .push((*event.metadata().level(), fields));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Whether `f` belongs to `group` (other tests of this binary log too).
fn ours(f: &Fields, group: &str) -> bool {
    f.get("group").map(String::as_str) == Some(group)
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn spans_per_poll_and_handler_call_events_per_forward() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(capture.clone())
        .expect("no other test installs a subscriber");
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;

    // Blocking retry: "bad" is delivered twice, then dead-lettered.
    let tp = topic_with(b.as_ref(), "traced", &[("k1", "good"), ("k2", "bad")]).await;
    let handler = handler_fn(|r| async move {
        match r.value.as_deref() {
            Some(b"bad") => Err(HandlerError::retriable("Boom", "no")),
            _ => Ok(()),
        }
    });
    let config = ConsumerConfig {
        failure: FailurePolicy::Blocking(BackOff::fixed(Duration::ZERO, 1)),
        fetch_max_wait: Duration::from_millis(20),
        ..ConsumerConfig::new("g-traced")
    };
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.assign(vec![tp.clone()]).await.unwrap();
    let start = std::time::Instant::now();
    while consumer.metrics().total.dead_lettered == 0 {
        assert!(
            start.elapsed() < LIMIT,
            "not dead-lettered within {LIMIT:?}"
        );
        consumer.poll(&handler).await.unwrap();
    }
    {
        let captured = capture.captured.lock().unwrap();
        assert!(
            captured.spans.iter().any(|(name, level, f)| name == "poll"
                && *level == Level::INFO
                && f == &fields(&[("group", "g-traced")])),
            "{:?}",
            captured.spans
        );
        let handled: Vec<&Fields> = captured
            .spans
            .iter()
            .filter(|(name, _, f)| name == "handle" && ours(f, "g-traced"))
            .map(|(_, level, f)| {
                // An INFO span per record would cost more than the consumer's own work on it.
                assert_eq!(*level, Level::DEBUG, "{f:?}");
                f
            })
            .collect();
        let coordinates = |offset: &str, attempt: &str| {
            fields(&[
                ("group", "g-traced"),
                ("topic", "traced"),
                ("partition", "0"),
                ("offset", offset),
                ("attempt", attempt),
            ])
        };
        assert_eq!(
            handled,
            [
                &coordinates("0", "1"),
                &coordinates("1", "1"),
                &coordinates("1", "2")
            ],
            "one span per handler call"
        );
        let dead: Vec<&(Level, Fields)> = captured
            .events
            .iter()
            .filter(|(_, f)| {
                ours(f, "g-traced") && f.get("message").map(String::as_str) == Some("dead-lettered")
            })
            .collect();
        assert_eq!(dead.len(), 1, "{:?}", captured.events);
        let (level, f) = dead[0];
        assert_eq!(*level, Level::WARN);
        for (k, v) in [
            ("group", "g-traced"),
            ("topic", "traced"),
            ("partition", "0"),
            ("offset", "1"),
            ("attempt", "2"),
            ("error_type", "Boom"),
        ] {
            assert_eq!(f.get(k).map(String::as_str), Some(v), "{k} in {f:?}");
        }
        assert!(f["destination"].contains("traced.DLT"), "{f:?}");
    }
    consumer.close().await.unwrap();

    // Retry topics: the forward is an INFO event naming the retry topic.
    topic_with(b.as_ref(), "hopping", &[("k", "bad")]).await;
    let config = ConsumerConfig {
        failure: FailurePolicy::RetryTopics(BackOff::fixed(Duration::from_secs(60), 1)),
        fetch_max_wait: Duration::from_millis(20),
        heartbeat_interval: Duration::from_millis(100),
        ..ConsumerConfig::new("g-hopping")
    };
    let mut consumer = Consumer::new(b.clone(), config).unwrap();
    consumer.subscribe(&["hopping"]).await.unwrap();
    let start = std::time::Instant::now();
    while consumer.metrics().total.forwarded_to_retry == 0 {
        assert!(start.elapsed() < LIMIT, "not forwarded within {LIMIT:?}");
        let _ = consumer.poll(&handler).await;
    }
    let captured = capture.captured.lock().unwrap();
    let forwards: Vec<&(Level, Fields)> = captured
        .events
        .iter()
        .filter(|(_, f)| {
            ours(f, "g-hopping")
                && f.get("message").map(String::as_str) == Some("forwarded to a retry topic")
        })
        .collect();
    assert_eq!(forwards.len(), 1, "{:?}", captured.events);
    let (level, f) = forwards[0];
    assert_eq!(*level, Level::INFO);
    assert_eq!(f.get("topic").map(String::as_str), Some("hopping"));
    assert_eq!(f.get("attempt").map(String::as_str), Some("1"));
    assert!(f["destination"].contains("hopping-retry-60000"), "{f:?}");
}
