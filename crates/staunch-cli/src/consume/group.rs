//! `staunch consume --group`: a member of a consumer group that prints each record and commits
//! its offset only after the record was written out.
//!
//! A thin front end over `staunch_consumer::Consumer` through a `staunch_client::Client`: the
//! handler renders a batch of one partition's records, writes it to standard output and
//! flushes; only its `Ok` lets the consumer commit those offsets. A write that fails (a closed
//! pipe, a full disk) fails the batch: nothing of it is committed, the consumer stops, and the
//! next member of the group reads those records again. The failure policy retries in place
//! with no limit, so a record is never dead-lettered by this command.
//!
//! `-n N` caps each poll at the records still wanted (`max_poll_records`), so exactly N are
//! printed and committed. On SIGINT or SIGTERM the poll in flight finishes (a second signal,
//! or `--timeout`, cuts it short: what it printed but did not commit is printed again by the
//! next reader, nothing is lost), then the consumer commits and leaves the group (bounded by
//! twice `--timeout`, or cut short by another signal). Rebalances are reported on standard
//! error (`staunch: group G: assigned …; owns N partition(s): …`), as kcat -G does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use staunch_client::Client;
use staunch_consumer::{
    Assignor, BatchFailure, BatchHandler, Consumer, ConsumerConfig, ConsumerError, ConsumerEvents,
    ConsumerRecord, FailurePolicy, HandlerError, OffsetReset,
};
use staunch_core::api::OffsetSpec;
use staunch_core::batch::Record;
use staunch_core::{ApiError, BackOff, BrokerApi, ErrorCode, TopicPartition};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{ConsumeArgs, MAX_WAIT, Piece, Start, record_json, render};
use crate::client;

/// How often the member heartbeats: a rebalance is noticed within this (Kafka's default is
/// 3 s; a command-line consumer favours a quick hand-over).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Pause after a poll failed with a transient error.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Parses `--assignor`.
pub(super) fn parse_assignor(text: &str) -> Result<Assignor, String> {
    [
        Assignor::Range,
        Assignor::Sticky,
        Assignor::CooperativeSticky,
    ]
    .into_iter()
    .find(|a| a.protocol_name() == text)
    .ok_or_else(|| format!("expected range, sticky or cooperative-sticky, got '{text}'"))
}

/// Where the group starts in partitions it has no committed offset for.
fn reset_of(from: Start) -> Result<OffsetReset, String> {
    match from {
        Start::Beginning => Ok(OffsetReset::Earliest),
        Start::End => Ok(OffsetReset::Latest),
        Start::Offset(_) | Start::BeforeEnd(_) => Err(
            "--from takes only beginning or end with --group: a group reads from its committed \
             offsets, and --from says only where it starts in partitions it has none for"
                .to_owned(),
        ),
    }
}

/// A view of a consumed record for the shared renderers.
fn as_record(r: &ConsumerRecord) -> Record<'_> {
    Record {
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key.as_deref(),
        value: r.value.as_deref(),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_deref()))
            .collect(),
    }
}

/// Why printing stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Closed {
    /// Standard output was closed (e.g. `| head`): stop quietly.
    BrokenPipe,
    /// Writing failed otherwise.
    Failed(String),
}

/// The handler: renders, writes and flushes one partition's batch; counts what was printed.
#[derive(Debug)]
struct Printer {
    pieces: Vec<Piece>,
    json: bool,
    state: Mutex<PrinterState>,
}

#[derive(Debug, Default)]
struct PrinterState {
    printed: u64,
    closed: Option<Closed>,
}

impl Printer {
    fn state(&self) -> std::sync::MutexGuard<'_, PrinterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn print(&self, records: &[ConsumerRecord]) -> Result<(), BatchFailure> {
        let mut state = self.state();
        if state.closed.is_some() {
            return Err(not_printed("standard output is closed"));
        }
        let mut buf = Vec::new();
        for r in records {
            let record = as_record(r);
            if self.json {
                buf.extend_from_slice(
                    record_json(&r.topic, r.partition, &record)
                        .to_string()
                        .as_bytes(),
                );
                buf.push(b'\n');
            } else {
                render(&self.pieces, &r.topic, r.partition, &record, &mut buf);
            }
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match out.write_all(&buf).and_then(|()| out.flush()) {
            Ok(()) => {
                state.printed += records.len() as u64;
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                state.closed = Some(if e.kind() == std::io::ErrorKind::BrokenPipe {
                    Closed::BrokenPipe
                } else {
                    Closed::Failed(format!("writing the output: {e}"))
                });
                Err(not_printed(&why))
            }
        }
    }
}

/// The batch was not (entirely) printed: none of it may be committed.
fn not_printed(why: &str) -> BatchFailure {
    BatchFailure {
        index: 0,
        error: HandlerError::retriable("Output", why),
    }
}

impl BatchHandler for Printer {
    fn handle_batch(
        &self,
        records: &[ConsumerRecord],
    ) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        std::future::ready(self.print(records))
    }
}

/// Reports rebalances on standard error, as kcat -G does.
#[derive(Debug)]
struct Rebalances {
    group: String,
    owned: BTreeSet<TopicPartition>,
}

impl Rebalances {
    fn report(&self, what: &str, partitions: &[TopicPartition]) {
        let list = |ps: &mut dyn Iterator<Item = &TopicPartition>| {
            ps.map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        let owns = match self.owned.len() {
            0 => "owns no partitions".to_owned(),
            n => format!("owns {n} partition(s): {}", list(&mut self.owned.iter())),
        };
        eprintln!(
            "staunch: group {}: {what} {}; {owns}",
            self.group,
            list(&mut partitions.iter()),
        );
    }
}

impl ConsumerEvents for Rebalances {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        if partitions.is_empty() {
            return;
        }
        self.owned.extend(partitions.iter().cloned());
        self.report("assigned", partitions);
    }

    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        if partitions.is_empty() {
            return;
        }
        for tp in partitions {
            self.owned.remove(tp);
        }
        self.report("revoked", partitions);
    }
}

/// SIGINT and SIGTERM.
#[derive(Debug)]
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> Result<Self, String> {
        let listen = |kind| signal(kind).map_err(|e| format!("listening for signals: {e}"));
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Errors a poll can hit while the group rebalances or the broker is briefly away; the member
/// carries on (within `--timeout`).
fn is_transient(e: &ConsumerError) -> bool {
    match e {
        ConsumerError::Api(e) => {
            e.is_retriable()
                || e.code().is_some_and(|c| {
                    matches!(
                        c,
                        ErrorCode::RebalanceInProgress
                            | ErrorCode::IllegalGeneration
                            | ErrorCode::UnknownMemberId
                    )
                })
        }
        _ => false,
    }
}

/// What to do about an error that ends the command, where there is something to say.
fn hint(e: &ConsumerError) -> &'static str {
    match e {
        ConsumerError::Api(e) if e.code() == Some(ErrorCode::InconsistentGroupProtocol) => {
            " (the group's members use another assignor or are not consumers: pass the \
             --assignor they use)"
        }
        _ => "",
    }
}

/// Whether every partition this member owns has been read to its end. A member without
/// partitions is not at the end: it waits for an assignment, as kcat -G -e does.
async fn at_end(api: &Client, consumer: &Consumer<Client>) -> Result<bool, ApiError> {
    let assigned = consumer.assignment();
    if assigned.is_empty() {
        return Ok(false);
    }
    let mut positions = BTreeMap::new();
    for tp in assigned {
        match consumer.position(&tp) {
            Some(p) => positions.insert(tp, p),
            None => return Ok(false),
        };
    }
    let ends = api
        .list_offsets(
            positions
                .keys()
                .map(|tp| (tp.clone(), OffsetSpec::Latest))
                .collect(),
        )
        .await;
    let mut answered = 0;
    for (tp, end) in ends {
        let end = end?.map_or(0, |l| l.offset);
        if positions.get(&tp).is_none_or(|&p| p < end) {
            return Ok(false);
        }
        answered += 1;
    }
    Ok(answered == positions.len())
}

/// Runs `staunch consume --group`.
pub(super) async fn consume(
    args: ConsumeArgs,
    group: String,
    pieces: Vec<Piece>,
) -> Result<(), String> {
    let reset = reset_of(args.from)?;
    if group.is_empty() {
        return Err("--group needs a group name".to_owned());
    }
    // Listening from the start: a signal before the first poll ends the command at once
    // (nothing was printed or joined yet), one later in a clean close.
    let mut signals = Signals::new()?;
    let setup = async {
        let mut connection = client::connect(&args.client).await?;
        for topic in &args.topics {
            client::topic(&mut connection, topic, false).await?;
        }
        drop(connection);
        let api = Arc::new(client::connect_cluster(&args.client).await?);
        let config = ConsumerConfig {
            // Retry in place without end: a record this command could not print is never
            // forwarded anywhere, only read again.
            failure: FailurePolicy::Blocking(BackOff::exponential(
                Duration::from_millis(100),
                2.0,
                Duration::from_secs(5),
            )),
            assignor: args.assignor.unwrap_or_default(),
            reset,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            fetch_max_wait: MAX_WAIT.min(args.client.timeout / 2),
            ..ConsumerConfig::new(group.clone())
        };
        let events = Rebalances {
            group: group.clone(),
            owned: BTreeSet::new(),
        };
        let mut consumer = Consumer::new(Arc::clone(&api), config)
            .map_err(|e| e.to_string())?
            .with_events(events);
        let topics: Vec<&str> = args.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .await
            .map_err(|e| format!("group {group}: {e}"))?;
        Ok::<_, String>((api, consumer))
    };
    let (api, mut consumer) = tokio::select! {
        ready = setup => ready?,
        () = signals.recv() => return Ok(()),
    };
    let printer = Printer {
        pieces,
        json: args.client.json,
        state: Mutex::new(PrinterState::default()),
    };
    let outcome = run_member(&args, &group, &api, &mut consumer, &printer, &mut signals).await;
    let limit = args.client.timeout * 2;
    let close_error = tokio::select! {
        closed = tokio::time::timeout(limit, consumer.close()) => match closed {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {limit:?}")),
        },
        () = signals.recv() => Some("interrupted".to_owned()),
    }
    .map(|e| {
        format!(
            "group {group}: committing and leaving on exit failed: {e} (records printed since \
             the last commit are printed again by the group's next reader)"
        )
    });
    match (outcome, close_error) {
        (Err(e), Some(close)) => Err(format!("{e}; {close}")),
        (Err(e), None) | (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
    }
}

/// The poll loop, until `-n`, `-e`, a signal, closed output or an error.
async fn run_member(
    args: &ConsumeArgs,
    group: &str,
    api: &Client,
    consumer: &mut Consumer<Client>,
    printer: &Printer,
    signals: &mut Signals,
) -> Result<(), String> {
    let mut failing_since: Option<Instant> = None;
    loop {
        let printed = {
            let state = printer.state();
            match &state.closed {
                Some(Closed::BrokenPipe) => return Ok(()),
                Some(Closed::Failed(e)) => return Err(e.clone()),
                None => state.printed,
            }
        };
        if let Some(max) = args.max {
            if printed >= max {
                return Ok(());
            }
            let left = usize::try_from(max - printed).unwrap_or(usize::MAX);
            consumer.set_max_poll_records(Some(left));
        }
        let polled = {
            let poll = consumer.poll_batch(printer);
            tokio::pin!(poll);
            tokio::select! {
                result = &mut poll => Some(result),
                () = signals.recv() => {
                    // Let the poll in flight finish, so what it printed is committed.
                    tokio::select! {
                        result = &mut poll => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "the last poll failed");
                            }
                        }
                        () = signals.recv() => {}
                        () = tokio::time::sleep(args.client.timeout) => {}
                    }
                    None
                }
            }
        };
        let Some(result) = polled else {
            return Ok(());
        };
        match result {
            Ok(()) => failing_since = None,
            Err(e) if is_transient(&e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > args.client.timeout {
                    return Err(format!(
                        "group {group}: {e} (still failing after {:?})",
                        args.client.timeout
                    ));
                }
                tokio::select! {
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                    () = signals.recv() => return Ok(()),
                }
                continue;
            }
            Err(e) => return Err(format!("group {group}: {e}{}", hint(&e))),
        }
        if args.exit_at_end
            && printer.state().closed.is_none()
            && at_end(api, consumer)
                .await
                .map_err(|e| format!("finding the end offsets: {e}"))?
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignors_parse_by_their_protocol_names() {
        assert_eq!(parse_assignor("range"), Ok(Assignor::Range));
        assert_eq!(parse_assignor("sticky"), Ok(Assignor::Sticky));
        assert_eq!(
            parse_assignor("cooperative-sticky"),
            Ok(Assignor::CooperativeSticky)
        );
        assert!(parse_assignor("roundrobin").is_err());
    }

    #[test]
    fn only_beginning_and_end_apply_to_a_group() {
        assert_eq!(reset_of(Start::Beginning), Ok(OffsetReset::Earliest));
        assert_eq!(reset_of(Start::End), Ok(OffsetReset::Latest));
        assert!(reset_of(Start::Offset(3)).is_err());
        assert!(reset_of(Start::BeforeEnd(3)).is_err());
    }
}
