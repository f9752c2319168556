//! The `exec` provider, lego's protocol: `COMMAND present FQDN VALUE` to
//! publish and `COMMAND cleanup FQDN VALUE` to remove, FQDN with its
//! trailing dot (`_acme-challenge.example.com.`), VALUE the TXT text. Exit
//! 0 is success. The hook runs at most `timeout` (then it is killed); every
//! line it writes to stderr (and stdout) goes to the log.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{DnsError, DnsProvider};

pub struct Exec {
    command: PathBuf,
    timeout: Duration,
}

impl Exec {
    pub fn new(command: PathBuf, timeout: Duration) -> Exec {
        Exec { command, timeout }
    }

    async fn run(&self, action: &'static str, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let command = self.command.display().to_string();
        let fail =
            |message: String| DnsError::Hook { command: command.clone(), action, fqdn: fqdn.to_string(), message };
        let mut child = tokio::process::Command::new(&self.command)
            .args([action, fqdn, value])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot start: {e}")))?;
        let log = |stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>, which: &'static str| {
            let command = command.clone();
            async move {
                let Some(s) = stream else { return };
                let mut lines = BufReader::new(s).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(hook = %command, action, stream = which, "{line}");
                }
            }
        };
        let stdout = log(child.stdout.take().map(|s| Box::new(s) as _), "stdout");
        let stderr = log(child.stderr.take().map(|s| Box::new(s) as _), "stderr");
        let run = async {
            let (_, _, status) = tokio::join!(stdout, stderr, child.wait());
            status
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(status)) if status.success() => {
                tracing::info!(hook = %command, action, %fqdn, "DNS hook done");
                Ok(())
            }
            Ok(Ok(status)) => Err(fail(format!("exited with {status}"))),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Err(_) => Err(fail(format!("still running after {} s; killed", self.timeout.as_secs()))),
        }
    }
}

#[async_trait::async_trait]
impl DnsProvider for Exec {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.run("present", fqdn, value).await
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.run("cleanup", fqdn, value).await
    }
}
