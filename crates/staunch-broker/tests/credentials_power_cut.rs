//! SCRAM credentials under power cuts: a credential change the broker reported done is there
//! after the power is cut at any operation of the next changes, and the file is never found
//! damaged (the broker always reopens).

use std::sync::Arc;

use staunch_broker::{Broker, BrokerConfig, CredentialChange, Storage, StoredCredential};
use staunch_core::{ManualClock, SaslMechanism};
use staunch_testkit::{CrashMode, FaultyIo};

fn open(disk: &FaultyIo) -> Result<Broker, String> {
    let config = BrokerConfig {
        data_dir: "/sim".into(),
        ..BrokerConfig::default()
    };
    let clock = Arc::new(ManualClock::new(1_750_000_000_000));
    Broker::open_with(config, Storage::new(Arc::new(disk.clone()), clock))
        .map_err(|e| e.to_string())
}

fn credential(n: u8) -> StoredCredential {
    StoredCredential {
        salt: vec![n; 16],
        iterations: 4096,
        stored_key: vec![n; 64],
        server_key: vec![n.wrapping_add(1); 64],
    }
}

fn upsert(user: &str, n: u8) -> CredentialChange {
    CredentialChange::Upsert {
        user: user.to_owned(),
        mechanism: SaslMechanism::ScramSha512,
        credential: credential(n),
    }
}

#[test]
fn acknowledged_credential_changes_survive_power_cuts() {
    for mode in [CrashMode::DropUnsynced, CrashMode::TornTail { seed: 7 }] {
        // Cut at every operation of three changes in a row (each change is a handful).
        for cut_at in 1..40u64 {
            let disk = FaultyIo::new();
            let broker = open(&disk).expect("open a fresh broker");
            broker
                .credentials()
                .alter(vec![upsert("admin", 1)])
                .expect("first change, power on");
            disk.cut_power_after(cut_at, mode);
            let mut acknowledged = vec![("admin", Some(1u8))];
            for (user, change) in [
                ("alice", upsert("alice", 2)),
                ("admin", upsert("admin", 3)),
                (
                    "alice",
                    CredentialChange::Delete {
                        user: "alice".to_owned(),
                        mechanism: SaslMechanism::ScramSha512,
                    },
                ),
            ] {
                let value = match &change {
                    CredentialChange::Upsert { credential, .. } => Some(credential.salt[0]),
                    CredentialChange::Delete { .. } => None,
                };
                if broker.credentials().alter(vec![change]).is_ok() {
                    acknowledged.retain(|(u, _)| *u != user);
                    acknowledged.push((user, value));
                } else {
                    break;
                }
            }
            disk.cut_power_now(mode);
            let after = disk.after_power_cut().expect("power was cut");
            let reopened = open(&after)
                .unwrap_or_else(|e| panic!("cut at {cut_at} ({mode:?}): reopen failed: {e}"));
            for (user, value) in acknowledged {
                let found = reopened
                    .credentials()
                    .get(user, SaslMechanism::ScramSha512)
                    .map(|c| c.salt[0]);
                assert_eq!(
                    found, value,
                    "cut at {cut_at} ({mode:?}): acknowledged credential of {user} lost"
                );
            }
        }
    }
}
