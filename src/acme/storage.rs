//! Where ACME state lives: the account key and each domain's certificate
//! chain + key. [`CertStorage`] is the seam for a shared backend (several
//! instances, one account); [`FileStorage`] keeps everything under
//! `certs_dir/acme/<directory>/`, written atomically (temp file + rename)
//! with mode 0600.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("storage task failed: {0}")]
    Task(String),
}

/// A certificate as stored: PEM chain (leaf first) and PEM private key.
#[derive(Debug, Clone)]
pub struct StoredCert {
    pub chain_pem: String,
    pub key_pem: String,
}

#[async_trait::async_trait]
pub trait CertStorage: Send + Sync + std::fmt::Debug {
    /// The ACME account key, PKCS#8 PEM.
    async fn load_account_key(&self) -> Result<Option<String>, StorageError>;
    async fn store_account_key(&self, pem: &str) -> Result<(), StorageError>;
    async fn load_cert(&self, domain: &str) -> Result<Option<StoredCert>, StorageError>;
    async fn store_cert(&self, domain: &str, cert: &StoredCert) -> Result<(), StorageError>;
}

/// Files under one directory per ACME directory URL.
#[derive(Debug, Clone)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// `certs_dir/acme/<host_port of the directory URL>/`.
    pub fn new(certs_dir: &Path, directory_url: &str) -> Self {
        let authority =
            directory_url.split("://").nth(1).unwrap_or(directory_url).split('/').next().unwrap_or("default");
        let slug: String = authority
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        FileStorage { dir: certs_dir.join("acme").join(slug) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        tokio::task::spawn_blocking(f).await.map_err(|e| StorageError::Task(e.to_string()))?
    }
}

fn read_opt(path: &Path) -> Result<Option<String>, StorageError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StorageError::Io { path: path.to_path_buf(), source }),
    }
}

/// Write `data` to `path` via a temp file in the same directory and a
/// rename, so a reader sees the old file or the new one, never half.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    let io = |source| StorageError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[async_trait::async_trait]
impl CertStorage for FileStorage {
    async fn load_account_key(&self) -> Result<Option<String>, StorageError> {
        let path = self.dir.join("account.key");
        Self::blocking(move || read_opt(&path)).await
    }

    async fn store_account_key(&self, pem: &str) -> Result<(), StorageError> {
        let path = self.dir.join("account.key");
        let data = pem.as_bytes().to_vec();
        Self::blocking(move || write_atomic(&path, &data)).await
    }

    async fn load_cert(&self, domain: &str) -> Result<Option<StoredCert>, StorageError> {
        let crt = self.dir.join(format!("{domain}.crt"));
        let key = self.dir.join(format!("{domain}.key"));
        Self::blocking(move || {
            Ok(match (read_opt(&crt)?, read_opt(&key)?) {
                (Some(chain_pem), Some(key_pem)) => Some(StoredCert { chain_pem, key_pem }),
                _ => None,
            })
        })
        .await
    }

    async fn store_cert(&self, domain: &str, cert: &StoredCert) -> Result<(), StorageError> {
        let crt = self.dir.join(format!("{domain}.crt"));
        let key = self.dir.join(format!("{domain}.key"));
        let cert = cert.clone();
        // Key first: a crash between the two leaves a new key with the old
        // chain, which fails the key check on load and triggers a new order.
        Self::blocking(move || {
            write_atomic(&key, cert.key_pem.as_bytes())?;
            write_atomic(&crt, cert.chain_pem.as_bytes())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_slug() {
        let s = FileStorage::new(Path::new("/c"), "https://127.0.0.1:14000/dir");
        assert_eq!(s.dir(), Path::new("/c/acme/127.0.0.1_14000"));
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x/y.key");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
