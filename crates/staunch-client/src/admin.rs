//! Topic creation over the network: CreateTopics at the controller (where Kafka clusters
//! without request forwarding need it), else any broker.

use staunch_core::api::{CreateTopicCall, TopicCreation};
use staunch_core::{ApiError, ErrorCode};
use staunch_protocol::kafka_protocol::messages::CreateTopicsRequest;
use staunch_protocol::kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use staunch_protocol::kafka_protocol::protocol::StrBytes;

use crate::Client;
use crate::cluster::cluster_error;
use crate::routing::topic_name;

/// Kafka's `NOT_CONTROLLER`: a ZooKeeper-mode broker that is not the controller refuses admin
/// requests with it.
const NOT_CONTROLLER: i16 = 41;

impl Client {
    /// [`BrokerApi::create_topic`](staunch_core::BrokerApi::create_topic) over the network: a
    /// CreateTopics request for one topic to the controller named by metadata (or any broker
    /// when none is named), waiting up to the request timeout for the creation. A
    /// `NOT_CONTROLLER` answer makes the next call fetch metadata to find the controller again.
    pub(crate) async fn create(&self, call: CreateTopicCall) -> Result<TopicCreation, ApiError> {
        if self.controller().is_none() {
            // Learn the controller (a brokers-only metadata request); failing that, any
            // broker will do.
            let _ = self.metadata(&[], false).await;
        }
        let connection = match self.controller() {
            Some(node) => self.connection(node).await?,
            None => self.any_connection().await?,
        };
        let version = connection
            .version_for::<CreateTopicsRequest>()
            .map_err(|e| cluster_error(&e))?;
        let timeout_ms =
            i32::try_from(self.config().request_timeout.as_millis()).unwrap_or(i32::MAX);
        let topic = CreatableTopic::default()
            .with_name(topic_name(&call.name))
            .with_num_partitions(call.partitions.unwrap_or(-1))
            .with_replication_factor(call.replication_factor.unwrap_or(-1))
            .with_configs(
                call.configs
                    .iter()
                    .map(|(name, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(name.clone()))
                            .with_value(Some(StrBytes::from_string(value.clone())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(timeout_ms)
            .with_validate_only(false);
        let response = connection
            .request(version, &request)
            .await
            .map_err(|e| cluster_error(&e))?;
        let answer = response
            .topics
            .iter()
            .find(|t| t.name.0.as_str() == call.name)
            .ok_or_else(|| {
                ApiError::Protocol(format!(
                    "the CreateTopics answer does not name topic {}",
                    call.name
                ))
            })?;
        // Whatever happened, the next produce or fetch on the topic asks for fresh metadata.
        self.invalidate([call.name.as_str()]);
        if answer.error_code == NOT_CONTROLLER {
            self.forget_controller();
        }
        match ErrorCode::from_code(answer.error_code) {
            ErrorCode::None => Ok(TopicCreation::Created),
            ErrorCode::TopicAlreadyExists => Ok(TopicCreation::AlreadyExists),
            code => Err(ApiError::Broker {
                code,
                message: answer.error_message.as_ref().map(|m| m.as_str().to_owned()),
            }),
        }
    }
}
