//! The authorizer over an arbitrary `acls.toml`.
//!
//! The input is the file's content, put on an in-memory disk. Checks:
//! - `Authorizer::open` never panics; what it opens holds only valid bindings, and a check
//!   against them never panics;
//! - what it opened survives a change and a power cut: after adding one ACL and removing it
//!   again (each written durably), the reopened authorizer holds exactly the same bindings
//!   (the broker's own encoding reads back what it wrote, whatever the names hold).

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use staunch_broker::acl::{
    AccessControlEntry, AclBinding, AclBindingFilter, AclOperation, AclPermission, PatternType,
    ResourcePattern, ResourceType,
};
use staunch_broker::{Authorizer, Principal};
use staunch_testkit::{CrashMode, FaultyIo};

fuzz_target!(|data: &[u8]| {
    let disk = FaultyIo::new();
    disk.put_file(staunch_broker::acl::ACL_FILE, data);
    let Ok(authorizer) = Authorizer::open(Arc::new(disk.clone()), "acls.toml".into(), &[]) else {
        return;
    };
    let before = authorizer
        .describe(&AclBindingFilter::any())
        .expect("an enabled authorizer describes");
    for b in &before {
        b.validate().expect("only valid bindings are opened");
        let _ = authorizer.authorize(
            &Principal::user("alice"),
            "127.0.0.1",
            AclOperation::Read,
            b.pattern.resource_type,
            &b.pattern.name,
        );
    }
    let marker = AclBinding {
        pattern: ResourcePattern {
            resource_type: ResourceType::Topic,
            name: "fuzz-marker-\u{1F980}\"\n".to_owned(),
            pattern_type: PatternType::Prefixed,
        },
        entry: AccessControlEntry {
            principal: "User:fuzz".to_owned(),
            host: "*".to_owned(),
            operation: AclOperation::All,
            permission: AclPermission::Deny,
        },
    };
    if before.contains(&marker) {
        return;
    }
    assert_eq!(authorizer.create(vec![marker.clone()]), vec![Ok(())]);
    let removed = authorizer.delete(&[AclBindingFilter {
        principal: Some("User:fuzz".to_owned()),
        name: Some(marker.pattern.name.clone()),
        ..AclBindingFilter::any()
    }]);
    assert!(removed[0].as_ref().is_ok_and(|r| r.contains(&marker)));
    drop(authorizer);
    let after_cut = disk.crash(CrashMode::DropUnsynced);
    let reopened = Authorizer::open(Arc::new(after_cut), "acls.toml".into(), &[])
        .expect("the file the broker wrote opens");
    let mut expected = before;
    expected.retain(|b| !(b.entry.principal == "User:fuzz" && b.pattern.name == marker.pattern.name));
    assert_eq!(
        reopened.describe(&AclBindingFilter::any()).expect("describes"),
        expected
    );
});
