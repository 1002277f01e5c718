//! Which files an adapter version is served from, and whether they are the ones registered.
//!
//! Decided here, once, for every caller: the server's swap, the trainer (a parent's weights) and
//! the deliberate acts that mark an adapter `failed` (only for a fault of the adapter itself).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Adapter, AdapterStatus};

/// A PEFT adapter directory's config file.
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// A PEFT adapter directory's weights file.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Why an adapter version cannot be served, judged from the adapter and its files alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterFault {
    /// Its status forbids loading it (`training`, `failed`).
    #[error("adapter {version} is {status}; only ready, active or retired adapters can be served")]
    NotServable { version: i64, status: AdapterStatus },
    /// Registered without a directory.
    #[error("adapter {0} has no files")]
    NoFiles(i64),
    /// A file is missing or unreadable here.
    #[error("adapter {version}: cannot read {path}: {cause}")]
    Unreadable {
        version: i64,
        path: PathBuf,
        cause: String,
    },
    /// The files are not the ones registered.
    #[error(
        "adapter {version}: its files hash to {actual}, not to the sha256 {expected} recorded \
         when it was registered"
    )]
    Altered {
        version: i64,
        expected: String,
        actual: String,
    },
}

impl Adapter {
    /// Whether this version may be served at all (by status).
    pub fn is_servable(&self) -> bool {
        !matches!(self.status, AdapterStatus::Training | AdapterStatus::Failed)
    }

    /// The PEFT directory to load for this version: `None` for the base model (version 0). Looks
    /// at the record only, not at the files.
    ///
    /// # Errors
    /// [`AdapterFault::NotServable`] or [`AdapterFault::NoFiles`].
    pub fn directory(&self) -> Result<Option<PathBuf>, AdapterFault> {
        if self.version == 0 {
            return Ok(None);
        }
        if !self.is_servable() {
            return Err(AdapterFault::NotServable {
                version: self.version,
                status: self.status,
            });
        }
        match &self.path {
            Some(path) => Ok(Some(PathBuf::from(path))),
            None => Err(AdapterFault::NoFiles(self.version)),
        }
    }

    /// [`Adapter::directory`], after checking that both PEFT files are readable there and, when a
    /// sha256 was recorded, that they hash to it (config bytes, then weights bytes).
    ///
    /// # Errors
    /// Any [`AdapterFault`].
    pub fn verified_directory(&self) -> Result<Option<PathBuf>, AdapterFault> {
        let Some(dir) = self.directory()? else {
            return Ok(None);
        };
        let actual = files_sha256(&dir).map_err(|(path, cause)| AdapterFault::Unreadable {
            version: self.version,
            path,
            cause,
        })?;
        match &self.sha256 {
            Some(expected) if !expected.eq_ignore_ascii_case(&actual) => {
                Err(AdapterFault::Altered {
                    version: self.version,
                    expected: expected.clone(),
                    actual,
                })
            }
            _ => Ok(Some(dir)),
        }
    }
}

/// The sha256 of a PEFT directory's config bytes followed by its weights bytes, as the trainer
/// records it; streamed, so large weights are not held in memory.
pub fn files_sha256(dir: &Path) -> Result<String, (PathBuf, String)> {
    let mut sha = Sha256::new();
    for name in [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE] {
        let path = dir.join(name);
        let fail = |e: std::io::Error| (path.clone(), e.to_string());
        let mut file = std::fs::File::open(&path).map_err(fail)?;
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let read = file.read(&mut buffer).map_err(fail)?;
            if read == 0 {
                break;
            }
            sha.update(&buffer[..read]);
        }
    }
    Ok(sha.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn adapter(version: i64, status: AdapterStatus, path: Option<&Path>) -> Adapter {
        Adapter {
            version,
            parent_version: Some(0),
            algorithm: "dpo".into(),
            train_run_id: None,
            path: path.map(|p| p.display().to_string()),
            sha256: None,
            status,
            error: None,
            note: None,
            name: None,
            created_at: Utc::now(),
            activated_at: None,
        }
    }

    fn write_peft(dir: &Path) {
        std::fs::write(dir.join(PEFT_CONFIG_FILE), b"{\"r\": 8}").unwrap();
        std::fs::write(dir.join(PEFT_WEIGHTS_FILE), b"weights").unwrap();
    }

    #[test]
    fn the_base_model_has_no_directory_and_needs_no_files() {
        let base = adapter(0, AdapterStatus::Active, None);
        assert_eq!(base.verified_directory(), Ok(None));
    }

    #[test]
    fn a_training_or_failed_adapter_is_not_servable() {
        for status in [AdapterStatus::Training, AdapterStatus::Failed] {
            let a = adapter(3, status, Some(Path::new("/x")));
            assert!(matches!(
                a.directory(),
                Err(AdapterFault::NotServable { version: 3, .. })
            ));
        }
        let none = adapter(4, AdapterStatus::Ready, None);
        assert_eq!(none.directory(), Err(AdapterFault::NoFiles(4)));
    }

    #[test]
    fn files_are_checked_against_the_recorded_sha256() {
        let dir = tempfile::tempdir().unwrap();
        write_peft(dir.path());
        let mut a = adapter(2, AdapterStatus::Ready, Some(dir.path()));
        let sha = files_sha256(dir.path()).unwrap();
        assert_eq!(sha, crate::hash::sha256_hex(b"{\"r\": 8}weights"));
        a.sha256 = Some(sha);
        assert_eq!(a.verified_directory(), Ok(Some(dir.path().to_path_buf())));

        std::fs::write(dir.path().join(PEFT_WEIGHTS_FILE), b"tampered").unwrap();
        assert!(matches!(
            a.verified_directory(),
            Err(AdapterFault::Altered { version: 2, .. })
        ));
        std::fs::remove_file(dir.path().join(PEFT_CONFIG_FILE)).unwrap();
        assert!(matches!(
            a.verified_directory(),
            Err(AdapterFault::Unreadable { version: 2, .. })
        ));
    }
}
