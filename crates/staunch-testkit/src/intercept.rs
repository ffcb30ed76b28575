//! Test doubles that change a few calls of a real broker and pass the rest through.
//!
//! Fault-injecting wrappers only care about produce (and sometimes metadata); forwarding every
//! other [`BrokerApi`] call by hand in each wrapper repeats itself and must be redone whenever
//! the trait grows. An [`Intercept`] names the inner broker and overrides what it changes;
//! [`Intercepted`] makes it a `BrokerApi`.

use std::future::Future;
use std::ops::Deref;

use bytes::Bytes;
use staunch_core::api::{
    CreateTopicCall, FetchCall, FetchedRecords, GroupMembership, JoinGroupCall, JoinOutcome,
    ListedOffset, OffsetAndMetadata, OffsetSpec, SyncGroupCall, TopicCreation,
};
use staunch_core::{
    ApiError, BrokerApi, ProduceAck, ProduceCall, ProducerIdentity, TopicInfo, TopicPartition,
};

/// What a test double changes about a broker. `produce`, `topic`, `commit_offsets` and
/// `join_group` default to the inner broker's; every other call always goes to it untouched.
pub trait Intercept: Send + Sync + 'static {
    /// The broker underneath.
    type Inner: BrokerApi;

    /// The broker underneath, which answers everything not overridden.
    fn inner(&self) -> &Self::Inner;

    /// A produce call; by default the inner broker's.
    fn produce(
        &self,
        call: ProduceCall,
    ) -> impl Future<Output = Vec<(TopicPartition, Result<ProduceAck, ApiError>)>> + Send {
        self.inner().produce(call)
    }

    /// A metadata call; by default the inner broker's.
    fn topic(&self, topic: &str) -> impl Future<Output = Result<TopicInfo, ApiError>> + Send {
        self.inner().topic(topic)
    }

    /// An offset commit; by default the inner broker's.
    fn commit_offsets(
        &self,
        member: &GroupMembership,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> impl Future<Output = Vec<(TopicPartition, Result<(), ApiError>)>> + Send {
        self.inner().commit_offsets(member, offsets)
    }

    /// A join of a consumer group; by default the inner broker's.
    fn join_group(
        &self,
        call: JoinGroupCall,
    ) -> impl Future<Output = Result<JoinOutcome, ApiError>> + Send {
        self.inner().join_group(call)
    }
}

/// An [`Intercept`] as a [`BrokerApi`]: its overrides first, the inner broker for the rest. Derefs
/// to the intercept, so a test reads the double's own state (counters, switches) through it.
#[derive(Debug, Clone)]
pub struct Intercepted<I>(pub I);

impl<I> Deref for Intercepted<I> {
    type Target = I;

    fn deref(&self) -> &I {
        &self.0
    }
}

impl<I: Intercept> BrokerApi for Intercepted<I> {
    async fn produce(
        &self,
        call: ProduceCall,
    ) -> Vec<(TopicPartition, Result<ProduceAck, ApiError>)> {
        self.0.produce(call).await
    }

    async fn topic(&self, topic: &str) -> Result<TopicInfo, ApiError> {
        self.0.topic(topic).await
    }

    async fn init_producer_id(&self) -> Result<ProducerIdentity, ApiError> {
        self.0.inner().init_producer_id().await
    }

    async fn fetch(
        &self,
        call: FetchCall,
    ) -> Vec<(TopicPartition, Result<FetchedRecords, ApiError>)> {
        self.0.inner().fetch(call).await
    }

    async fn list_offsets(
        &self,
        partitions: Vec<(TopicPartition, OffsetSpec)>,
    ) -> Vec<(TopicPartition, Result<Option<ListedOffset>, ApiError>)> {
        self.0.inner().list_offsets(partitions).await
    }

    async fn create_topic(&self, call: CreateTopicCall) -> Result<TopicCreation, ApiError> {
        self.0.inner().create_topic(call).await
    }

    async fn join_group(&self, call: JoinGroupCall) -> Result<JoinOutcome, ApiError> {
        self.0.join_group(call).await
    }

    async fn sync_group(&self, call: SyncGroupCall) -> Result<Bytes, ApiError> {
        self.0.inner().sync_group(call).await
    }

    async fn heartbeat(&self, member: &GroupMembership) -> Result<(), ApiError> {
        self.0.inner().heartbeat(member).await
    }

    async fn leave_group(&self, member: &GroupMembership) -> Result<(), ApiError> {
        self.0.inner().leave_group(member).await
    }

    async fn commit_offsets(
        &self,
        member: &GroupMembership,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Vec<(TopicPartition, Result<(), ApiError>)> {
        self.0.commit_offsets(member, offsets).await
    }

    async fn fetch_committed_offsets(
        &self,
        group_id: &str,
        partitions: Vec<TopicPartition>,
    ) -> Vec<(TopicPartition, Result<Option<OffsetAndMetadata>, ApiError>)> {
        self.0
            .inner()
            .fetch_committed_offsets(group_id, partitions)
            .await
    }
}
