use super::*;
use tokio::time::Instant;

/// The most a watcher's verdict may come after its time: the rest after
/// `PARK_AFTER` (25 ms) plus a tick of the clock (10 ms in these tests).
const TICK: Duration = Duration::from_millis(25);
const HEADER_TIMEOUT: Duration = Duration::from_millis(500);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// What `ActivityIo` records when bytes of a request arrive.
fn bytes_arrive(activity: &Arc<Activity>) {
    activity.bytes_read();
}

/// Run `watch` while `client` acts every 10 ms; returns what it
/// resolved with and when, or `None` if it did not within `limit`.
async fn watch_while(
    activity: &Arc<Activity>,
    park: bool,
    limit: Duration,
    client: impl FnMut(&Arc<Activity>),
) -> Option<(Watched, Duration)> {
    watch_first_head_while(activity, park, None, limit, client).await
}

/// The same on a new connection whose first head is due at `first_head_by`.
async fn watch_first_head_while(
    activity: &Arc<Activity>,
    park: bool,
    first_head_by: Option<Instant>,
    limit: Duration,
    mut client: impl FnMut(&Arc<Activity>),
) -> Option<(Watched, Duration)> {
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_clock = stop.clone().drop_guard();
    tokio::spawn(Arc::clone(&activity.clock).run(stop));
    let start = Instant::now();
    let watcher = activity.watch(park, HEADER_TIMEOUT, IDLE_TIMEOUT, first_head_by);
    tokio::pin!(watcher);
    while start.elapsed() < limit {
        tokio::select! {
            w = &mut watcher => return Some((w, start.elapsed())),
            _ = tokio::time::sleep(Duration::from_millis(10)) => client(activity),
        }
    }
    None
}

#[tokio::test(start_paused = true)]
async fn a_head_trickling_in_is_cut_off_after_the_header_timeout_not_before() {
    let activity = Arc::new(Activity::default());
    let (watched, after) = watch_while(&activity, true, Duration::from_secs(10), bytes_arrive).await.unwrap();
    assert_eq!(watched, Watched::HeaderTimeout);
    assert!(after >= HEADER_TIMEOUT && after <= HEADER_TIMEOUT + 3 * TICK, "cut off after {after:?}");
}

#[tokio::test(start_paused = true)]
async fn requests_that_keep_completing_are_never_cut_off() {
    let activity = Arc::new(Activity::default());
    let mut n = 0;
    let busy = watch_while(&activity, false, Duration::from_secs(5), |a| {
        // A head arrives, the request runs, its answer ends: every 30 ms.
        match n % 3 {
            0 => bytes_arrive(a),
            1 => std::mem::forget(a.begin()),
            _ => {
                a.requests.fetch_sub(1, Ordering::Relaxed);
                a.read_since_response.store(false, Ordering::Relaxed);
            }
        }
        n += 1;
    })
    .await;
    assert_eq!(busy, None);
}

#[tokio::test(start_paused = true)]
async fn a_slow_request_body_is_not_a_slow_head() {
    // Once the head is complete, the request is in progress: its body
    // may take as long as the idle timeout allows.
    let activity = Arc::new(Activity::default());
    let _request = activity.begin();
    assert_eq!(watch_while(&activity, true, Duration::from_secs(5), bytes_arrive).await, None);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_connection_rests_and_is_not_a_slow_head() {
    let activity = Arc::new(Activity::default());
    let (watched, after) = watch_while(&activity, true, Duration::from_secs(10), |_| {}).await.unwrap();
    assert_eq!(watched, Watched::Rested);
    assert!(after >= TICK && after <= 2 * TICK, "rested after {after:?}");
    // Without parking, a quiet connection is left to the idle timeout.
    let (watched, after) = watch_while(&activity, false, Duration::from_secs(10), |_| {}).await.unwrap();
    assert_eq!(watched, Watched::Idle);
    assert!(after >= IDLE_TIMEOUT && after <= IDLE_TIMEOUT + 2 * TICK, "idle after {after:?}");
}

#[tokio::test(start_paused = true)]
async fn bytes_without_requests_do_not_keep_a_connection_from_idling() {
    // HTTP/2 PINGs and their answers, every 200 ms, on a connection with no
    // request: idle after the timeout all the same.
    let activity = Arc::new(Activity::default());
    let start = Instant::now();
    let idle = activity.idle_for(IDLE_TIMEOUT);
    tokio::pin!(idle);
    let ended = loop {
        tokio::select! {
            _ = &mut idle => break Some(start.elapsed()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if start.elapsed() > 4 * IDLE_TIMEOUT {
                    break None;
                }
                activity.touch();
            }
        }
    };
    let ended = ended.expect("PINGs kept an idle connection open");
    assert!(ended >= IDLE_TIMEOUT && ended <= IDLE_TIMEOUT + IDLE_TIMEOUT / 2, "idle after {ended:?}");
}

#[tokio::test(start_paused = true)]
async fn a_request_begun_starts_the_idle_time_over() {
    let activity = Arc::new(Activity::default());
    let start = Instant::now();
    let idle = activity.idle_for(IDLE_TIMEOUT);
    tokio::pin!(idle);
    // A request that begins and ends at 2 s: idle from then on.
    tokio::select! {
        _ = &mut idle => panic!("idle before the request"),
        _ = tokio::time::sleep(Duration::from_secs(2)) => drop(activity.begin()),
    }
    idle.await;
    assert!(start.elapsed() >= Duration::from_secs(2) + IDLE_TIMEOUT, "idle after {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_mid_answer_is_cut_off_after_the_idle_timeout() {
    // A request in progress whose answer cannot be written: no tick ever
    // counted towards idle, so only the send stall ends it.
    let activity = Arc::new(Activity::default());
    std::mem::forget(activity.begin());
    activity.write_blocked.store(true, Ordering::Relaxed);
    let (watched, after) = watch_while(&activity, false, Duration::from_secs(20), |_| {}).await.unwrap();
    assert_eq!(watched, Watched::SendStalled);
    assert!(after >= IDLE_TIMEOUT && after <= IDLE_TIMEOUT + 3 * TICK, "cut off after {after:?}");

    // The same for HTTP/2's watcher, and for a connection shutting down.
    assert_eq!(activity.idle_for(IDLE_TIMEOUT).await, Watched::SendStalled);
    let start = Instant::now();
    activity.send_stalled_for(IDLE_TIMEOUT).await;
    assert!(start.elapsed() >= IDLE_TIMEOUT, "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_not_a_stalled_one() {
    // Blocked writes that keep completing, bit by bit: never cut off.
    let activity = Arc::new(Activity::default());
    std::mem::forget(activity.begin());
    activity.write_blocked.store(true, Ordering::Relaxed);
    let slow = watch_while(&activity, false, 3 * IDLE_TIMEOUT, bytes_written).await;
    assert_eq!(slow, None);
    let stalled = activity.send_stalled_for(IDLE_TIMEOUT);
    tokio::pin!(stalled);
    for _ in 0..100 {
        tokio::select! {
            _ = &mut stalled => panic!("a moving write counted as stalled"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => bytes_written(&activity),
        }
    }
}

/// What `ActivityIo` records when a write to the client moves bytes.
fn bytes_written(activity: &Arc<Activity>) {
    activity.bytes_written();
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_but_never_reads_is_still_stalled() {
    // HTTP/2 frames keep arriving (WINDOW_UPDATE, PRIORITY) while every
    // write stays blocked: reads must not count as progress.
    let activity = Arc::new(Activity::default());
    std::mem::forget(activity.begin());
    activity.write_blocked.store(true, Ordering::Relaxed);
    let (watched, _) = watch_while(&activity, false, Duration::from_secs(20), |a| {
        a.touch();
    })
    .await
    .unwrap();
    assert_eq!(watched, Watched::SendStalled);
    let idle = activity.idle_for(IDLE_TIMEOUT);
    tokio::pin!(idle);
    let ended = loop {
        tokio::select! {
            w = &mut idle => break w,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                activity.touch();
            }
        }
    };
    assert_eq!(ended, Watched::SendStalled);
}

#[tokio::test(start_paused = true)]
async fn a_new_connections_first_head_is_due_from_its_first_bytes() {
    // Its first bytes came 400 ms before the watcher started: the head has
    // 100 ms left of the 500, not a fresh 500.
    let activity = Arc::new(Activity::default());
    let due = Instant::now() + Duration::from_millis(100);
    let (watched, after) =
        watch_first_head_while(&activity, true, Some(due), Duration::from_secs(10), bytes_arrive).await.unwrap();
    assert_eq!(watched, Watched::HeaderTimeout);
    assert!(after >= Duration::from_millis(100) && after < HEADER_TIMEOUT, "cut off after {after:?}");
}
