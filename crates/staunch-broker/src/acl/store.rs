//! The bindings on disk: `acls.toml` in the data directory, replaced whole (write, fsync,
//! rename, fsync the directory) on every change, its first line a CRC-32C of the rest so a
//! damaged file is refused at open instead of read as fewer ACLs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use staunch_log::{SegmentIo, read_file, replace_file};

use super::types::{
    AccessControlEntry, AclBinding, AclOperation, AclPermission, PatternType, ResourcePattern,
    ResourceType,
};

/// The file, in the broker's root directory.
pub(crate) const FILE: &str = "acls.toml";

const CHECKSUM_PREFIX: &str = "# crc32c=";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    acl: Vec<StoredAcl>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredAcl {
    resource_type: String,
    name: String,
    pattern_type: String,
    principal: String,
    host: String,
    operation: String,
    permission: String,
}

/// The bytes of the file holding `bindings`.
pub(crate) fn encode(bindings: &BTreeSet<AclBinding>) -> Result<Vec<u8>, String> {
    let file = AclFile {
        acl: bindings
            .iter()
            .map(|b| StoredAcl {
                resource_type: b.pattern.resource_type.name().to_owned(),
                name: b.pattern.name.clone(),
                pattern_type: b.pattern.pattern_type.name().to_owned(),
                principal: b.entry.principal.clone(),
                host: b.entry.host.clone(),
                operation: b.entry.operation.name().to_owned(),
                permission: b.entry.permission.name().to_owned(),
            })
            .collect(),
    };
    let body = toml::to_string(&file).map_err(|e| format!("encoding ACLs: {e}"))?;
    let body = format!(
        "# Staunch ACLs, written by the broker: change them with `staunch acls` \
         (CreateAcls / DeleteAcls), not by hand (the checksum above guards the rest).\n{body}"
    );
    Ok(format!(
        "{CHECKSUM_PREFIX}{:08x}\n{body}",
        crc32c::crc32c(body.as_bytes())
    )
    .into_bytes())
}

/// The bindings in `bytes`, or why they are damaged.
pub(crate) fn decode(bytes: &[u8]) -> Result<BTreeSet<AclBinding>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let (first, body) = text
        .split_once('\n')
        .ok_or_else(|| "no checksum line".to_owned())?;
    let stored = first
        .strip_prefix(CHECKSUM_PREFIX)
        .and_then(|hex| u32::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| format!("the first line {first:?} is not a checksum"))?;
    let actual = crc32c::crc32c(body.as_bytes());
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x}): the file is damaged"
        ));
    }
    let file: AclFile = toml::from_str(body).map_err(|e| format!("not valid TOML: {e}"))?;
    let mut bindings = BTreeSet::new();
    for (i, acl) in file.acl.into_iter().enumerate() {
        let field = |what: &str, value: &str| format!("ACL #{}: unknown {what} {value:?}", i + 1);
        let binding = AclBinding {
            pattern: ResourcePattern {
                resource_type: ResourceType::parse(&acl.resource_type)
                    .ok_or_else(|| field("resource type", &acl.resource_type))?,
                name: acl.name,
                pattern_type: PatternType::parse(&acl.pattern_type)
                    .ok_or_else(|| field("pattern type", &acl.pattern_type))?,
            },
            entry: AccessControlEntry {
                principal: acl.principal,
                host: acl.host,
                operation: AclOperation::parse(&acl.operation)
                    .ok_or_else(|| field("operation", &acl.operation))?,
                permission: AclPermission::parse(&acl.permission)
                    .ok_or_else(|| field("permission", &acl.permission))?,
            },
        };
        binding
            .validate()
            .map_err(|why| format!("ACL #{} ({binding}): {why}", i + 1))?;
        bindings.insert(binding);
    }
    Ok(bindings)
}

/// The stored bindings (none if the file does not exist), or why they cannot be read.
pub(crate) fn load(dir: &dyn SegmentIo) -> Result<BTreeSet<AclBinding>, String> {
    match read_file(dir, FILE) {
        Ok(Some(bytes)) => decode(&bytes),
        Ok(None) => Ok(BTreeSet::new()),
        Err(e) => Err(format!("reading: {e}")),
    }
}

/// Replaces the stored bindings with `bindings`, durably.
pub(crate) fn save(dir: &dyn SegmentIo, bindings: &BTreeSet<AclBinding>) -> Result<(), String> {
    let bytes = encode(bindings)?;
    replace_file(dir, FILE, &bytes).map_err(|e| format!("writing: {e}"))
}
