//! What the application plugs in: a [`Handler`] for one record at a time or a
//! [`BatchHandler`] for a batch, and the errors they return.
//!
//! A handler's `Ok` is the only thing that lets the consumer commit a record's offset without
//! forwarding it; an error sends it down the failure path ([`crate::policy`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use staunch_core::{Offset, TopicPartition};

use crate::headers::ForwardFacts;

/// One record as delivered to a handler.
///
/// Key, value and headers are [`Bytes`] sharing the buffer the records were fetched in (no
/// copy per record); a record kept after its handler returned keeps that buffer (about
/// `max.partition.fetch.bytes`) alive — copy what you keep for long
/// (`Bytes::copy_from_slice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic it was read from (a retry topic for a record being retried there); shared
    /// by the records of one fetch.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// Its offset.
    pub offset: Offset,
    /// Its timestamp (ms).
    pub timestamp: i64,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its value.
    pub value: Option<Bytes>,
    /// Its headers, in order.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// Which delivery this is, from 1; counts across restarts and retry topics.
    pub delivery_attempt: u32,
}

impl ConsumerRecord {
    /// Gives the record its own copy of its key, value and headers, so that holding it no
    /// longer keeps alive the whole buffer of the fetch it came from (about 1 MiB): for a
    /// record kept a while — parked, waiting for a retry, or being forwarded.
    pub(crate) fn detach(&mut self) {
        let copy = |b: &Bytes| Bytes::copy_from_slice(b);
        self.key = self.key.as_ref().map(copy);
        self.value = self.value.as_ref().map(copy);
        for (k, v) in &mut self.headers {
            *k = copy(k);
            *v = v.as_ref().map(copy);
        }
    }

    /// The partition it was read from.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }

    /// The facts Staunch put on it when it was forwarded (to a retry topic), if any.
    pub fn forward_facts(&self) -> Option<ForwardFacts> {
        ForwardFacts::from_headers(
            self.headers
                .iter()
                .map(|(k, v)| (k.as_ref(), v.as_ref().map(|v| v.as_ref()))),
        )
    }

    /// The topic the record was first produced to: its own topic, or the original topic of a
    /// record read from a retry topic.
    pub fn source_topic(&self) -> String {
        self.forward_facts()
            .map(|f| f.original_topic)
            .unwrap_or_else(|| self.topic.to_string())
    }
}

/// How a handler classifies its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Retrying may help: the record goes through the back-off.
    Retriable,
    /// Retrying cannot help: the record is dead-lettered at once.
    Fatal,
    /// Let the consumer's [`ErrorClassifier`] decide by the error type.
    Unclassified,
}

/// A handler's failure: a severity, a type name (for classification and the dead-letter
/// headers) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// How the handler classified it.
    pub severity: Severity,
    /// The error's type name, e.g. `"std::io::Error"` or `"PaymentDeclined"`.
    pub error_type: String,
    /// The error's message.
    pub message: String,
}

impl HandlerError {
    /// An error retrying may fix.
    pub fn retriable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::with(Severity::Retriable, error_type, message)
    }

    /// An error retrying cannot fix: the record goes to the dead-letter topic at once.
    pub fn fatal(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::with(Severity::Fatal, error_type, message)
    }

    /// An error the consumer's [`ErrorClassifier`] classifies by `error_type`.
    pub fn classify(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::with(Severity::Unclassified, error_type, message)
    }

    /// An unclassified error from any `std::error::Error`, named by its Rust type.
    pub fn from_error<E: std::error::Error>(error: &E) -> Self {
        Self::classify(std::any::type_name::<E>(), error.to_string())
    }

    fn with(severity: Severity, error_type: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            severity,
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl std::error::Error for HandlerError {}

/// Classifies [`Severity::Unclassified`] errors by type name, as spring's
/// `@Retryable(include = …, exclude = …)`: a type in `exclude` is fatal; if `include` is
/// non-empty only the types in it are retriable; otherwise every type is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorClassifier {
    /// Types that are retried (all, when empty).
    pub include: Vec<String>,
    /// Types that are never retried.
    pub exclude: Vec<String>,
}

impl ErrorClassifier {
    /// Whether `error` is retried.
    pub fn is_retriable(&self, error: &HandlerError) -> bool {
        match error.severity {
            Severity::Retriable => true,
            Severity::Fatal => false,
            Severity::Unclassified => {
                let t = error.error_type.as_str();
                !self.exclude.iter().any(|e| e == t)
                    && (self.include.is_empty() || self.include.iter().any(|i| i == t))
            }
        }
    }
}

/// Processes one record. `Ok` means the record is done and its offset may be committed.
pub trait Handler: Send + Sync {
    /// Handles `record`. Called again for the same record when it is retried.
    fn handle(
        &self,
        record: &ConsumerRecord,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A batch handler's failure: every record before `index` succeeded (and is committed), the
/// record at `index` failed with `error` and goes through the retry path, and the records after
/// it are delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// Position in the batch of the record that failed; 0 when the whole batch failed.
    pub index: usize,
    /// Why.
    pub error: HandlerError,
}

/// Processes the records of one partition in offset order, several at a time (spring's batch
/// listener). `Ok` means every record of the batch is done.
pub trait BatchHandler: Send + Sync {
    /// Handles `records` (never empty; all of one partition, ascending offsets).
    fn handle_batch(
        &self,
        records: &[ConsumerRecord],
    ) -> impl Future<Output = Result<(), BatchFailure>> + Send;
}

/// Runs a [`Handler`] as a [`BatchHandler`]: record by record, stopping at the first failure.
#[derive(Debug, Clone)]
pub struct PerRecord<H>(pub H);

impl<H: Handler> BatchHandler for PerRecord<H> {
    async fn handle_batch(&self, records: &[ConsumerRecord]) -> Result<(), BatchFailure> {
        for (index, record) in records.iter().enumerate() {
            self.0
                .handle(record)
                .await
                .map_err(|error| BatchFailure { index, error })?;
        }
        Ok(())
    }
}

/// A [`Handler`] from an async closure over an owned record; see [`handler_fn`].
pub struct FnHandler<F>(F);

impl<F> fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHandler")
    }
}

/// Wraps `f` (called with a clone of each record) as a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(ConsumerRecord) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    FnHandler(f)
}

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(ConsumerRecord) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(
        &self,
        record: &ConsumerRecord,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (self.0)(record.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude_lists_classify_like_spring_retryable() {
        let all = ErrorClassifier::default();
        let timeout = HandlerError::classify("Timeout", "x");
        let parse = HandlerError::classify("ParseError", "x");
        assert!(all.is_retriable(&timeout) && all.is_retriable(&parse));
        let only_timeouts = ErrorClassifier {
            include: vec!["Timeout".into()],
            exclude: vec![],
        };
        assert!(only_timeouts.is_retriable(&timeout));
        assert!(!only_timeouts.is_retriable(&parse));
        let not_parse = ErrorClassifier {
            include: vec![],
            exclude: vec!["ParseError".into()],
        };
        assert!(not_parse.is_retriable(&timeout));
        assert!(!not_parse.is_retriable(&parse));
        assert!(!all.is_retriable(&HandlerError::fatal("Timeout", "x")));
        assert!(not_parse.is_retriable(&HandlerError::retriable("ParseError", "x")));
    }
}
