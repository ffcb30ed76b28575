//! Which requests Staunch answers, at which versions.
//!
//! The ranges are what librdkafka 2.0 – 2.16, kafka-python 2.x / 3.x and the Java 3.x / 4.x
//! clients negotiate down to, capped where a newer version would change semantics Staunch does
//! not implement yet (Fetch 13+ and Produce 13 address topics by id only; OffsetCommit 9+ is the
//! KIP-848 consumer protocol; ListOffsets 8+ adds tiered-storage specs). Everything is
//! intersected with what the `kafka-protocol` crate can decode, so an advertised version is
//! always one this crate can parse.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;

/// The API keys Staunch implements and the version range of each, before intersecting with the
/// codec's own range.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeAcls, 0, 3),
    (ApiKey::CreateAcls, 0, 3),
    (ApiKey::DeleteAcls, 0, 3),
];

/// The versions of `key` Staunch answers, or `None` if it does not implement the API at all.
pub fn supported_range(key: ApiKey) -> Option<VersionRange> {
    let &(_, min, max) = SUPPORTED_APIS.iter().find(|(k, _, _)| *k == key)?;
    let codec = key.valid_versions();
    let range = VersionRange {
        min: min.max(codec.min),
        max: max.min(codec.max),
    };
    (range.min <= range.max).then_some(range)
}

/// The body of an `ApiVersions` answer listing every supported API, with `error_code`.
///
/// Optional tagged fields (supported features, finalized features) are left at their defaults
/// so they are not written at all: librdkafka before 2.2 mis-parses them.
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .filter_map(|&(key, _, _)| {
            let range = supported_range(key)?;
            Some(
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(range.min)
                    .with_max_version(range.max),
            )
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_api_has_a_nonempty_range_the_codec_decodes() {
        for &(key, _, _) in SUPPORTED_APIS {
            let range = supported_range(key).unwrap_or_else(|| panic!("{key:?} has no range"));
            let codec = key.valid_versions();
            assert!(codec.min <= range.min && range.max <= codec.max, "{key:?}");
        }
        assert_eq!(supported_range(ApiKey::ElectLeaders), None);
        assert_eq!(
            api_versions_response(0).api_keys.len(),
            SUPPORTED_APIS.len()
        );
    }
}
