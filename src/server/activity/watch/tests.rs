use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::server::activity::Activity;

const HEADER_TIMEOUT: Duration = Duration::from_millis(500);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Poll `watch` for `limit` while nothing happens on the connection;
/// returns how often the watcher's task was woken to look.
async fn watcher_wakeups(activity: &Arc<Activity>, park: bool, limit: Duration) -> usize {
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_clock = stop.clone().drop_guard();
    tokio::spawn(Arc::clone(&activity.clock).run(stop));
    let mut watcher = std::pin::pin!(activity.watch(park, HEADER_TIMEOUT, IDLE_TIMEOUT, None));
    let mut polls = 0;
    let counted = std::future::poll_fn(|cx| {
        polls += 1;
        watcher.as_mut().poll(cx)
    });
    tokio::select! {
        // The sleep first: its own wake-up must not count as the watcher's.
        biased;
        _ = tokio::time::sleep(limit) => {}
        w = counted => panic!("the watcher resolved: {w:?}"),
    }
    polls
}

#[tokio::test(start_paused = true)]
async fn a_connection_busy_with_one_long_request_is_not_woken_while_nothing_is_due() {
    // A long poll or a slow upstream: no deadline applies until the answer
    // ends or a write blocks, so the watcher looks once, when it starts.
    let activity = Arc::new(Activity::default());
    let _request = activity.begin();
    assert_eq!(watcher_wakeups(&activity, true, 2 * IDLE_TIMEOUT).await, 1);
}
