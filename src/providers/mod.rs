//! Discovery providers: tasks that find servers (and, from Docker labels,
//! routes) outside the config file and hand them to the app, which merges
//! them into the file's config and reloads through its one reload path.
//! Each provider is a cancellable task that never ends on an error: a
//! source that is down is retried with capped backoff, its last good
//! answer stays in use, and its state shows on `/api/status` and as
//! `rampart_provider_up{provider}`.

mod dns;
mod docker;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Start the providers the config asks for (`[providers.docker]`, any
/// `{ dns = ... }` server). Provider settings are read at start only.
pub fn spawn(app: &Arc<App>, stop: &CancellationToken) {
    let config = app.file_config();
    if let Some(settings) = config.providers.docker.clone() {
        tokio::spawn(docker::run(Arc::clone(app), settings, stop.clone()));
    }
    // The DNS task follows the file: it looks up whatever names the
    // current config lists, so it runs even when none are listed yet.
    tokio::spawn(dns::run(Arc::clone(app), config.providers.dns_resolvers.clone(), stop.clone()));
}

/// Doubling waits between attempts at a source that is down, capped.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Backoff { next: Duration::from_millis(500), max }
    }

    /// The wait before the next attempt; each call doubles the one after.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_millis(500);
    }
}

/// Sleep unless stopped first; `false` when stopped.
pub(crate) async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(4));
        let waits: Vec<u64> = (0..6).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 4000, 4000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(500));
    }
}
