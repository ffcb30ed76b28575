//! The users' SCRAM credentials: per user and SCRAM mechanism, the salt, the iteration count,
//! the stored key and the server key (RFC 5802) — never a password. One file,
//! `scram-credentials.toml` in the data directory, replaced atomically and fsynced (file and
//! directory) before a change is reported done, so an acknowledged change survives a power
//! cut. A file that cannot be read back whole and consistent (its checksum covers every
//! record) fails the open with its path, rather than leaving every user locked out in
//! silence.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use staunch_core::SaslMechanism;
use staunch_log::{SegmentIo, read_file, replace_file};

use crate::storage::Storage;

/// The file, in the root of the data directory.
pub const CREDENTIALS_FILE: &str = "scram-credentials.toml";

/// What is kept of one user's password for one SCRAM mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: i32,
    /// RFC 5802's StoredKey.
    pub stored_key: Vec<u8>,
    /// RFC 5802's ServerKey.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// One change of [`CredentialStore::alter`].
#[derive(Debug, Clone)]
pub enum CredentialChange {
    /// Sets (adds or replaces) `user`'s credential for `mechanism`.
    Upsert {
        /// The user.
        user: String,
        /// A SCRAM mechanism.
        mechanism: SaslMechanism,
        /// The credential.
        credential: StoredCredential,
    },
    /// Removes `user`'s credential for `mechanism` (nothing if there is none).
    Delete {
        /// The user.
        user: String,
        /// A SCRAM mechanism.
        mechanism: SaslMechanism,
    },
}

type Users = BTreeMap<String, BTreeMap<&'static str, StoredCredential>>;

/// The credential store of a data directory. Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: Arc<dyn SegmentIo>,
    /// The file's path, for messages.
    path: String,
    users: Mutex<Users>,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    /// CRC-32C over every record's fields, in file order.
    checksum: u32,
    #[serde(default, rename = "credential")]
    credentials: Vec<Record>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    user: String,
    mechanism: String,
    iterations: i32,
    salt: String,
    stored_key: String,
    server_key: String,
}

fn checksum(records: &[Record]) -> u32 {
    let mut crc = 0;
    for r in records {
        for field in [
            r.user.as_str(),
            &r.mechanism,
            &r.iterations.to_string(),
            &r.salt,
            &r.stored_key,
            &r.server_key,
        ] {
            crc = crc32c::crc32c_append(crc, field.as_bytes());
            crc = crc32c::crc32c_append(crc, &[0]);
        }
    }
    crc
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Key length of a SCRAM mechanism, `None` for PLAIN.
fn key_len(mechanism: SaslMechanism) -> Option<usize> {
    match mechanism {
        SaslMechanism::Plain => None,
        SaslMechanism::ScramSha256 => Some(32),
        SaslMechanism::ScramSha512 => Some(64),
    }
}

/// Whether `credential` is well-formed for `mechanism` (a SCRAM one): keys of its hash's
/// length, a salt, and Kafka's iteration bounds (4096 to 16384).
pub fn check_credential(
    mechanism: SaslMechanism,
    credential: &StoredCredential,
) -> Result<(), String> {
    let len = key_len(mechanism).ok_or_else(|| format!("{mechanism} is not a SCRAM mechanism"))?;
    if !(4096..=16384).contains(&credential.iterations) {
        return Err(format!(
            "iterations must be between 4096 and 16384, not {}",
            credential.iterations
        ));
    }
    if credential.salt.is_empty() {
        return Err("empty salt".to_owned());
    }
    if credential.stored_key.len() != len || credential.server_key.len() != len {
        return Err(format!("{mechanism} keys must be {len} bytes"));
    }
    Ok(())
}

impl CredentialStore {
    /// Opens the store of `storage`'s data directory (empty if the file does not exist yet).
    /// Fails, naming the file, when it cannot be read or is damaged.
    pub fn open(storage: &Storage) -> Result<Self, String> {
        let path = storage.describe(CREDENTIALS_FILE);
        let files = storage
            .files("")
            .map_err(|e| format!("opening {}: {e}", storage.describe("")))?;
        let users = match read_file(&*files, CREDENTIALS_FILE)
            .map_err(|e| format!("reading {path}: {e}"))?
        {
            None => Users::new(),
            Some(bytes) => parse(&bytes).map_err(|e| {
                format!("{path} is damaged: {e}; restore it from a backup or remove it (every SCRAM user is then gone)")
            })?,
        };
        Ok(CredentialStore {
            inner: Arc::new(Inner {
                files,
                path,
                users: Mutex::new(users),
            }),
        })
    }

    fn users(&self) -> MutexGuard<'_, Users> {
        self.inner
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `user`'s credential for `mechanism`, if any.
    pub fn get(&self, user: &str, mechanism: SaslMechanism) -> Option<StoredCredential> {
        self.users().get(user)?.get(mechanism.name()).cloned()
    }

    /// Every user with the mechanisms and iteration counts of their credentials, by name.
    pub fn list(&self) -> Vec<(String, Vec<(SaslMechanism, i32)>)> {
        self.users()
            .iter()
            .map(|(user, creds)| {
                let mechanisms = creds
                    .iter()
                    .filter_map(|(name, c)| Some((name.parse().ok()?, c.iterations)))
                    .collect();
                (user.clone(), mechanisms)
            })
            .collect()
    }

    /// Applies `changes` in order and makes them durable together (file fsynced, renamed over
    /// the old one, directory fsynced) before returning. On failure nothing changes, in memory
    /// or (atomic rename) on disk. Blocks on the disk: call it off the async threads.
    pub fn alter(&self, changes: Vec<CredentialChange>) -> io::Result<()> {
        let mut users = self.users();
        let mut next = users.clone();
        for change in changes {
            match change {
                CredentialChange::Upsert {
                    user,
                    mechanism,
                    credential,
                } => {
                    check_credential(mechanism, &credential)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    next.entry(user)
                        .or_default()
                        .insert(mechanism.name(), credential);
                }
                CredentialChange::Delete { user, mechanism } => {
                    if let Some(creds) = next.get_mut(&user) {
                        creds.remove(mechanism.name());
                        if creds.is_empty() {
                            next.remove(&user);
                        }
                    }
                }
            }
        }
        let text = serialize(&next)?;
        replace_file(&*self.inner.files, CREDENTIALS_FILE, text.as_bytes())
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", self.inner.path)))?;
        *users = next;
        Ok(())
    }
}

fn serialize(users: &Users) -> io::Result<String> {
    let credentials: Vec<Record> = users
        .iter()
        .flat_map(|(user, creds)| {
            creds.iter().map(move |(mechanism, c)| Record {
                user: user.clone(),
                mechanism: (*mechanism).to_owned(),
                iterations: c.iterations,
                salt: hex(&c.salt),
                stored_key: hex(&c.stored_key),
                server_key: hex(&c.server_key),
            })
        })
        .collect();
    let file = File {
        version: 1,
        checksum: checksum(&credentials),
        credentials,
    };
    toml::to_string(&file).map_err(io::Error::other)
}

fn parse(bytes: &[u8]) -> Result<Users, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    if file.version != 1 {
        return Err(format!("unknown version {}", file.version));
    }
    if checksum(&file.credentials) != file.checksum {
        return Err("checksum mismatch".to_owned());
    }
    let mut users = Users::new();
    for r in file.credentials {
        let mechanism: SaslMechanism = r.mechanism.parse()?;
        let bad = |field: &str| format!("user {:?}: {field} is not hex", r.user);
        let credential = StoredCredential {
            salt: unhex(&r.salt).ok_or_else(|| bad("salt"))?,
            iterations: r.iterations,
            stored_key: unhex(&r.stored_key).ok_or_else(|| bad("stored_key"))?,
            server_key: unhex(&r.server_key).ok_or_else(|| bad("server_key"))?,
        };
        check_credential(mechanism, &credential).map_err(|e| format!("user {:?}: {e}", r.user))?;
        if r.user.is_empty() {
            return Err("a credential without a user name".to_owned());
        }
        users
            .entry(r.user)
            .or_default()
            .insert(mechanism.name(), credential);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(n: u8, len: usize) -> StoredCredential {
        StoredCredential {
            salt: vec![n; 16],
            iterations: 4096,
            stored_key: vec![n; len],
            server_key: vec![n + 1; len],
        }
    }

    #[test]
    fn changes_survive_reopening_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::fs(dir.path());
        let store = CredentialStore::open(&storage).unwrap();
        assert!(store.list().is_empty());
        store
            .alter(vec![
                CredentialChange::Upsert {
                    user: "alice".into(),
                    mechanism: SaslMechanism::ScramSha512,
                    credential: credential(1, 64),
                },
                CredentialChange::Upsert {
                    user: "bob".into(),
                    mechanism: SaslMechanism::ScramSha256,
                    credential: credential(2, 32),
                },
            ])
            .unwrap();
        // A bad change refuses the whole batch.
        let bad = CredentialChange::Upsert {
            user: "carol".into(),
            mechanism: SaslMechanism::ScramSha256,
            credential: credential(3, 64),
        };
        assert!(store.alter(vec![bad]).is_err());
        store
            .alter(vec![CredentialChange::Delete {
                user: "bob".into(),
                mechanism: SaslMechanism::ScramSha256,
            }])
            .unwrap();
        let reopened = CredentialStore::open(&storage).unwrap();
        assert_eq!(
            reopened.get("alice", SaslMechanism::ScramSha512),
            Some(credential(1, 64))
        );
        assert_eq!(reopened.get("bob", SaslMechanism::ScramSha256), None);
        assert_eq!(
            reopened.list(),
            vec![("alice".to_owned(), vec![(SaslMechanism::ScramSha512, 4096)])]
        );
        let text = std::fs::read_to_string(dir.path().join(CREDENTIALS_FILE)).unwrap();
        let damaged = text.replacen("0101", "0102", 1);
        assert_ne!(text, damaged);
        std::fs::write(dir.path().join(CREDENTIALS_FILE), damaged).unwrap();
        let error = CredentialStore::open(&storage).unwrap_err();
        assert!(error.contains(CREDENTIALS_FILE), "{error}");
        assert!(error.contains("checksum"), "{error}");
        std::fs::write(dir.path().join(CREDENTIALS_FILE), "version = ").unwrap();
        assert!(CredentialStore::open(&storage).is_err());
    }
}
