//! The headers Staunch adds to a record it forwards to a retry or dead-letter topic, in one
//! place so redrive (and any other tool) reads exactly what the consumer writes.
//!
//! They carry the facts of spring-kafka's `kafka_dlt-*` headers under `staunch.dlt.*` names.
//! Every value is UTF-8 text (numbers in decimal, times in ms since the Unix epoch), so `kcat`
//! shows them as they are. The forwarded record's key, value, timestamp and **own** headers
//! are unchanged; only headers in the `staunch.dlt.` and `staunch.retry.` namespaces are
//! replaced when a record is forwarded again (from a retry topic to the next one or to the
//! dead-letter topic), and the *original* facts always name the first source record.
//!
//! | header | value |
//! |---|---|
//! | `staunch.dlt.original-topic` | topic of the first source record |
//! | `staunch.dlt.original-partition` | its partition |
//! | `staunch.dlt.original-offset` | its offset |
//! | `staunch.dlt.original-timestamp` | its timestamp (ms) |
//! | `staunch.dlt.attempts` | deliveries that failed so far |
//! | `staunch.dlt.first-failure-ms` | when the first delivery failed |
//! | `staunch.dlt.last-failure-ms` | when the last delivery failed |
//! | `staunch.dlt.error-kind` | `retriable` (attempts ran out) or `fatal` |
//! | `staunch.dlt.error-type` | the error's type name |
//! | `staunch.dlt.error-message` | the error's message (at most 1024 bytes) |
//! | `staunch.dlt.consumer-group` | the group that gave up on it |
//! | `staunch.retry.due-ms` | retry topics only: not to be delivered before this time |
//!
//! ```
//! use staunch_consumer::headers::{ErrorKind, ForwardFacts};
//!
//! let facts = ForwardFacts {
//!     original_topic: "orders".into(),
//!     original_partition: 0,
//!     original_offset: 42,
//!     original_timestamp: 1_700_000_000_000,
//!     attempts: 10,
//!     first_failure_ms: 1_700_000_000_100,
//!     last_failure_ms: 1_700_000_000_900,
//!     error_kind: ErrorKind::Retriable,
//!     error_type: "Timeout".into(),
//!     error_message: "db timed out".into(),
//!     consumer_group: "billing".into(),
//!     due_ms: None,
//! };
//! let headers = facts.to_headers();
//! let borrowed: Vec<(&[u8], Option<&[u8]>)> =
//!     headers.iter().map(|(k, v)| (k.as_bytes(), Some(v.as_slice()))).collect();
//! assert_eq!(ForwardFacts::from_headers(borrowed).unwrap(), facts);
//! ```

/// Prefix of every header Staunch owns on a forwarded record.
pub const PREFIX_DLT: &str = "staunch.dlt.";
/// Prefix of the retry-topic scheduling headers.
pub const PREFIX_RETRY: &str = "staunch.retry.";
/// Topic of the first source record.
pub const ORIGINAL_TOPIC: &str = "staunch.dlt.original-topic";
/// Partition of the first source record.
pub const ORIGINAL_PARTITION: &str = "staunch.dlt.original-partition";
/// Offset of the first source record.
pub const ORIGINAL_OFFSET: &str = "staunch.dlt.original-offset";
/// Timestamp (ms) of the first source record.
pub const ORIGINAL_TIMESTAMP: &str = "staunch.dlt.original-timestamp";
/// Deliveries that failed so far.
pub const ATTEMPTS: &str = "staunch.dlt.attempts";
/// When the first delivery failed (ms since the epoch).
pub const FIRST_FAILURE: &str = "staunch.dlt.first-failure-ms";
/// When the last delivery failed (ms since the epoch).
pub const LAST_FAILURE: &str = "staunch.dlt.last-failure-ms";
/// `retriable` or `fatal`.
pub const ERROR_KIND: &str = "staunch.dlt.error-kind";
/// The error's type name.
pub const ERROR_TYPE: &str = "staunch.dlt.error-type";
/// The error's message.
pub const ERROR_MESSAGE: &str = "staunch.dlt.error-message";
/// The consumer group that forwarded the record.
pub const CONSUMER_GROUP: &str = "staunch.dlt.consumer-group";
/// Retry topics: the record is not delivered before this time (ms since the epoch).
pub const DUE: &str = "staunch.retry.due-ms";

/// Longest error message kept in a header, in bytes (cut at a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Whether the last failure was retriable (so the attempts ran out) or fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Retriable: the record was retried until the back-off gave up.
    Retriable,
    /// Fatal: retrying could not help, so the record was dead-lettered at once.
    Fatal,
}

impl ErrorKind {
    /// The header value: `retriable` or `fatal`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Retriable => "retriable",
            ErrorKind::Fatal => "fatal",
        }
    }

    /// Parses a header value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "retriable" => Some(ErrorKind::Retriable),
            "fatal" => Some(ErrorKind::Fatal),
            _ => None,
        }
    }
}

/// Everything Staunch records about a forwarded record's origin and failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardFacts {
    /// Topic of the first source record.
    pub original_topic: String,
    /// Its partition.
    pub original_partition: i32,
    /// Its offset.
    pub original_offset: i64,
    /// Its timestamp (ms).
    pub original_timestamp: i64,
    /// Deliveries that failed so far.
    pub attempts: u32,
    /// When the first delivery failed (ms).
    pub first_failure_ms: i64,
    /// When the last delivery failed (ms).
    pub last_failure_ms: i64,
    /// Whether the last failure was retriable or fatal.
    pub error_kind: ErrorKind,
    /// The error's type name.
    pub error_type: String,
    /// The error's message.
    pub error_message: String,
    /// The consumer group that forwarded it.
    pub consumer_group: String,
    /// Retry topics only: not to be delivered before this time (ms).
    pub due_ms: Option<i64>,
}

impl ForwardFacts {
    /// The headers to add, names and UTF-8 values, in the order of the module table.
    pub fn to_headers(&self) -> Vec<(&'static str, Vec<u8>)> {
        let encoded = self.encode();
        encoded
            .pairs()
            .map(|(name, value)| (name, value.to_vec()))
            .collect()
    }

    /// The headers of [`ForwardFacts::to_headers`], written into one buffer: what a forward
    /// adds to every record, without an allocation per header.
    pub(crate) fn encode(&self) -> EncodedFacts {
        use std::fmt::Write;
        let mut text = String::with_capacity(
            128 + self.original_topic.len()
                + self.error_type.len()
                + self.error_message.len().min(MAX_MESSAGE_BYTES)
                + self.consumer_group.len(),
        );
        let mut ends = [0; FACT_HEADERS.len()];
        let mut count = 0;
        // Writing to a `String` cannot fail.
        let mut add = |text: &mut String, value: std::fmt::Arguments<'_>| {
            let _ = text.write_fmt(value);
            ends[count] = text.len();
            count += 1;
        };
        add(&mut text, format_args!("{}", self.original_topic));
        add(&mut text, format_args!("{}", self.original_partition));
        add(&mut text, format_args!("{}", self.original_offset));
        add(&mut text, format_args!("{}", self.original_timestamp));
        add(&mut text, format_args!("{}", self.attempts));
        add(&mut text, format_args!("{}", self.first_failure_ms));
        add(&mut text, format_args!("{}", self.last_failure_ms));
        add(&mut text, format_args!("{}", self.error_kind.as_str()));
        add(&mut text, format_args!("{}", self.error_type));
        add(&mut text, format_args!("{}", truncate(&self.error_message)));
        add(&mut text, format_args!("{}", self.consumer_group));
        if let Some(due) = self.due_ms {
            add(&mut text, format_args!("{due}"));
        }
        EncodedFacts { text, ends, count }
    }

    /// Reads the facts back from a record's headers; `None` unless every required header is
    /// present and well formed (`staunch.retry.due-ms` is optional). Of a header given more
    /// than once, the last occurrence with a UTF-8 value counts.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Option<Self> {
        Found::scan(headers).facts().map(|f| f.to_owned())
    }

    /// [`ForwardFacts::attempts`] of the facts in `headers` — `None` where
    /// [`ForwardFacts::from_headers`] finds none — without copying any text out (asked for
    /// every record read from a retry topic).
    pub(crate) fn attempts_in<'a>(
        headers: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Option<u32> {
        Found::scan(headers).facts().map(|f| f.attempts)
    }
}

/// Every header [`ForwardFacts`] reads, in one order.
const FACT_HEADERS: [&str; 12] = [
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    ATTEMPTS,
    FIRST_FAILURE,
    LAST_FAILURE,
    ERROR_KIND,
    ERROR_TYPE,
    ERROR_MESSAGE,
    CONSUMER_GROUP,
    DUE,
];

/// [`ForwardFacts`] as header values: the values one after another in `text`, the `i`-th
/// (named `FACT_HEADERS[i]`) ending at `ends[i]`; `count` of them (the due time is optional).
#[derive(Debug)]
pub(crate) struct EncodedFacts {
    text: String,
    ends: [usize; FACT_HEADERS.len()],
    count: usize,
}

impl EncodedFacts {
    /// Each header's name and value, in the order of the module table.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&'static str, &[u8])> + Clone {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        FACT_HEADERS
            .iter()
            .zip(starts.zip(self.ends))
            .take(self.count)
            .map(|(name, (start, end))| (*name, &self.text.as_bytes()[start..end]))
    }
}

/// The UTF-8 values of a record's fact headers (of each, the last occurrence with one),
/// borrowed from the headers.
struct Found<'a>([Option<&'a str>; FACT_HEADERS.len()]);

impl<'a> Found<'a> {
    /// A record without Staunch headers (the usual case on a source topic) costs one prefix
    /// check per header.
    fn scan(headers: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> Self {
        let mut found = Found([None; FACT_HEADERS.len()]);
        for (k, v) in headers {
            if !is_staunch_header(k) {
                continue;
            }
            if let (Some(i), Some(Ok(v))) = (
                FACT_HEADERS.iter().position(|name| name.as_bytes() == k),
                v.map(std::str::from_utf8),
            ) {
                found.0[i] = Some(v);
            }
        }
        found
    }

    /// The facts, if every required header is there and well formed. Read by position, in
    /// [`FACT_HEADERS`] order (asked for every record read from a retry topic).
    fn facts(&self) -> Option<FactsRef<'a>> {
        let [
            original_topic,
            original_partition,
            original_offset,
            original_timestamp,
            attempts,
            first_failure,
            last_failure,
            error_kind,
            error_type,
            error_message,
            consumer_group,
            due,
        ] = self.0;
        let num = |value: Option<&str>| value?.parse::<i64>().ok();
        Some(FactsRef {
            original_topic: original_topic?,
            original_partition: i32::try_from(num(original_partition)?).ok()?,
            original_offset: num(original_offset)?,
            original_timestamp: num(original_timestamp)?,
            attempts: u32::try_from(num(attempts)?).ok()?,
            first_failure_ms: num(first_failure)?,
            last_failure_ms: num(last_failure)?,
            error_kind: ErrorKind::parse(error_kind?)?,
            error_type: error_type?,
            error_message: error_message?,
            consumer_group: consumer_group?,
            due_ms: num(due),
        })
    }
}

/// [`ForwardFacts`] with its text borrowed from the headers.
struct FactsRef<'a> {
    original_topic: &'a str,
    original_partition: i32,
    original_offset: i64,
    original_timestamp: i64,
    attempts: u32,
    first_failure_ms: i64,
    last_failure_ms: i64,
    error_kind: ErrorKind,
    error_type: &'a str,
    error_message: &'a str,
    consumer_group: &'a str,
    due_ms: Option<i64>,
}

impl FactsRef<'_> {
    fn to_owned(&self) -> ForwardFacts {
        ForwardFacts {
            original_topic: self.original_topic.to_owned(),
            original_partition: self.original_partition,
            original_offset: self.original_offset,
            original_timestamp: self.original_timestamp,
            attempts: self.attempts,
            first_failure_ms: self.first_failure_ms,
            last_failure_ms: self.last_failure_ms,
            error_kind: self.error_kind,
            error_type: self.error_type.to_owned(),
            error_message: self.error_message.to_owned(),
            consumer_group: self.consumer_group.to_owned(),
            due_ms: self.due_ms,
        }
    }
}

/// Whether a header belongs to Staunch (and is replaced when a record is forwarded again).
pub fn is_staunch_header(name: &[u8]) -> bool {
    name.starts_with(PREFIX_DLT.as_bytes()) || name.starts_with(PREFIX_RETRY.as_bytes())
}

fn truncate(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_garbled_headers_decode_to_none_not_a_panic() {
        assert_eq!(ForwardFacts::from_headers(Vec::new()), None);
        let bad: Vec<(&[u8], Option<&[u8]>)> =
            vec![(ORIGINAL_PARTITION.as_bytes(), Some(&[0xff, 0xfe][..]))];
        assert_eq!(ForwardFacts::from_headers(bad), None);
    }

    /// `from_headers` and `attempts_in` find the facts (and the same attempt count) exactly
    /// when every required header is there and well formed, whatever else the record
    /// carries; of a repeated header, the last one with a UTF-8 value counts.
    #[test]
    fn facts_are_read_only_from_whole_well_formed_headers() {
        let facts = ForwardFacts {
            original_topic: "orders".into(),
            original_partition: 3,
            original_offset: 42,
            original_timestamp: 1_000,
            attempts: 4,
            first_failure_ms: 2_000,
            last_failure_ms: 3_000,
            error_kind: ErrorKind::Retriable,
            error_type: "Timeout".into(),
            error_message: "db timed out".into(),
            consumer_group: "billing".into(),
            due_ms: Some(4_000),
        };
        type Headers = Vec<(Vec<u8>, Option<Vec<u8>>)>;
        let whole: Headers = facts
            .to_headers()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), Some(v)))
            .collect();
        // Every fact, the due time too, reads back as written.
        let borrowed = whole.iter().map(|(k, v)| (&k[..], v.as_deref()));
        assert_eq!(ForwardFacts::from_headers(borrowed), Some(facts.clone()));
        assert_eq!(
            whole.last().map(|(_, v)| v.as_deref()),
            Some(Some(&b"4000"[..]))
        );
        let with = |name: &str, value: Option<&[u8]>| {
            let mut h = whole.clone();
            h.push((name.as_bytes().to_vec(), value.map(<[u8]>::to_vec)));
            h
        };
        let replaced = |name: &str, value: Option<&[u8]>| -> Headers {
            whole
                .iter()
                .map(|(k, v)| {
                    if k == name.as_bytes() {
                        (k.clone(), value.map(<[u8]>::to_vec))
                    } else {
                        (k.clone(), v.clone())
                    }
                })
                .collect()
        };
        let mut non_utf8_key = whole.clone();
        non_utf8_key.push((b"staunch.dlt.\xff".to_vec(), Some(b"x".to_vec())));
        let mut cases: Vec<(String, Headers, Option<u32>)> = vec![
            ("whole".into(), whole.clone(), Some(4)),
            ("repeated".into(), with(ATTEMPTS, Some(b"7")), Some(7)),
            ("then null".into(), with(ATTEMPTS, None), Some(4)),
            (
                "then not UTF-8".into(),
                with(ATTEMPTS, Some(&[0xff])),
                Some(4),
            ),
            (
                "other staunch header".into(),
                with("staunch.dlt.other", Some(b"x")),
                Some(4),
            ),
            ("non-UTF-8 key".into(), non_utf8_key, Some(4)),
            (
                "attempts not a number".into(),
                replaced(ATTEMPTS, Some(b"abc")),
                None,
            ),
            (
                "attempts negative".into(),
                replaced(ATTEMPTS, Some(b"-1")),
                None,
            ),
            (
                "partition too large".into(),
                replaced(ORIGINAL_PARTITION, Some(b"3000000000")),
                None,
            ),
            (
                "unknown error kind".into(),
                replaced(ERROR_KIND, Some(b"bogus")),
                None,
            ),
            (
                "due not a number".into(),
                replaced(DUE, Some(b"soon")),
                Some(4),
            ),
            (
                "foreign only".into(),
                vec![(b"trace-id".to_vec(), None)],
                None,
            ),
            (
                "staunch, not facts".into(),
                vec![(b"staunch.dlt.other".to_vec(), Some(b"x".to_vec()))],
                None,
            ),
            ("none".into(), Vec::new(), None),
        ];
        for (name, _) in facts.to_headers() {
            let optional = name == DUE;
            let expected = if optional { Some(4) } else { None };
            let missing = whole
                .iter()
                .filter(|(k, _)| k != name.as_bytes())
                .cloned()
                .collect();
            cases.push((format!("{name} missing"), missing, expected));
            cases.push((format!("{name} null"), replaced(name, None), expected));
            cases.push((
                format!("{name} not UTF-8"),
                replaced(name, Some(&[0xff])),
                expected,
            ));
        }
        for (case, headers, expected) in &cases {
            let borrowed = || headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
            assert_eq!(ForwardFacts::attempts_in(borrowed()), *expected, "{case}");
            assert_eq!(
                ForwardFacts::from_headers(borrowed()).map(|f| f.attempts),
                *expected,
                "{case}"
            );
        }
        let borrowed = whole.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
        assert_eq!(ForwardFacts::from_headers(borrowed), Some(facts));
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
