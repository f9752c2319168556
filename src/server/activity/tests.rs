use super::watch::Watching;
use super::*;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

use crate::server::conn::Parkable;
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

/// A client stream that counts the reads that reach it, with bytes
/// always waiting, in the poller or not.
struct CountingIo {
    polled: bool,
    reads: usize,
}

impl AsyncRead for CountingIo {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().reads += 1;
        buf.put_slice(b"x");
        Poll::Ready(Ok(()))
    }
}

impl Parkable for CountingIo {
    const PARKS: bool = true;
    const LEAVES_TASK: bool = true;
    fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn cork(&self) {}
    fn is_polled(&self) -> bool {
        self.polled
    }
}

/// A waker that records that it was woken.
struct Flag(AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One read through `ActivityIo`: whether it was ready.
fn read(io: &mut ActivityIo<CountingIo>, waker: &std::task::Waker) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    Pin::new(io).poll_read(&mut Context::from_waker(waker), &mut buf).is_ready()
}

fn unpolled_io(activity: &Arc<Activity>, polled: bool) -> ActivityIo<CountingIo> {
    ActivityIo::new(CountingIo { polled, reads: 0 }, Arc::clone(activity), Bytes::new())
}

#[test]
fn a_read_request_defers_the_check_for_a_departed_client_until_it_is_due() {
    let activity = Arc::new(Activity::default());
    let mut io = unpolled_io(&activity, false);
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = std::task::Waker::from(Arc::clone(&flag));
    let _ticks = Watching::start(&activity);
    let _request = activity.begin();
    activity.request_read();
    assert!(!read(&mut io, &waker), "the check went to the socket before it was due");
    assert!(!read(&mut io, &waker), "a second poll went to the socket before it was due");
    assert_eq!(io.inner.reads, 0);
    assert!(!flag.0.load(Ordering::SeqCst));
    activity.eof_check_due();
    assert!(flag.0.load(Ordering::SeqCst), "the check coming due did not wake the waiting read");
    assert!(read(&mut io, &waker));
    assert_eq!(io.inner.reads, 1);
}

#[test]
fn the_end_of_the_answer_sends_a_waiting_read_to_the_socket_at_once() {
    // hyper's read for the next request head can start before it drops
    // the answer's body: waiting for a tick would stall that request.
    let activity = Arc::new(Activity::default());
    let mut io = unpolled_io(&activity, false);
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = std::task::Waker::from(Arc::clone(&flag));
    let _ticks = Watching::start(&activity);
    let request = activity.begin();
    activity.request_read();
    assert!(!read(&mut io, &waker));
    drop(request);
    assert!(flag.0.load(Ordering::SeqCst), "the waiting read was not woken when the answer ended");
    assert!(read(&mut io, &waker));
    assert_eq!(io.inner.reads, 1);
}

#[test]
fn a_watcher_that_stops_sends_a_waiting_read_to_the_socket() {
    // On drain the watcher stops and no tick comes: the check must not
    // wait for the answer's end (a long poll would hide a departed
    // client until then).
    let activity = Arc::new(Activity::default());
    let mut io = unpolled_io(&activity, false);
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = std::task::Waker::from(Arc::clone(&flag));
    let ticks = Watching::start(&activity);
    let _request = activity.begin();
    activity.request_read();
    assert!(!read(&mut io, &waker));
    drop(ticks);
    assert!(flag.0.load(Ordering::SeqCst), "the waiting read was not woken when the watcher stopped");
    assert!(read(&mut io, &waker));
    assert_eq!(io.inner.reads, 1);
    // Nor does a later read wait, unwatched.
    assert!(read(&mut io, &waker));
    assert_eq!(io.inner.reads, 2);
}

#[test]
fn other_reads_go_to_the_socket_at_once() {
    let waker = std::task::Waker::from(Arc::new(Flag(AtomicBool::new(false))));
    // A socket in the poller: hyper's check costs nothing more there.
    let activity = Arc::new(Activity::default());
    let mut io = unpolled_io(&activity, true);
    let _ticks = Watching::start(&activity);
    let _request = activity.begin();
    activity.request_read();
    assert!(read(&mut io, &waker));
    // No watcher to tick (hyper-util's builder, a drain).
    let activity = Arc::new(Activity::default());
    let mut io = unpolled_io(&activity, false);
    let _request = activity.begin();
    activity.request_read();
    assert!(read(&mut io, &waker));
    // A request whose body is still to come, and no request at all.
    for begun in [true, false] {
        let activity = Arc::new(Activity::default());
        let mut io = unpolled_io(&activity, false);
        let _ticks = Watching::start(&activity);
        let _request = begun.then(|| activity.begin());
        assert!(read(&mut io, &waker));
        assert_eq!(io.inner.reads, 1);
    }
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

#[tokio::test(start_paused = true)]
async fn a_deferred_check_for_a_departed_client_comes_due_on_its_own() {
    let activity = Arc::new(Activity::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_clock = stop.clone().drop_guard();
    tokio::spawn(Arc::clone(&activity.clock).run(stop));
    let watcher = activity.watch(true, HEADER_TIMEOUT, IDLE_TIMEOUT, None);
    tokio::pin!(watcher);
    let _request = activity.begin();
    activity.request_read();
    let mut io = unpolled_io(&activity, false);
    let start = Instant::now();
    let check = std::future::poll_fn(|cx| {
        let mut byte = [0u8; 1];
        Pin::new(&mut io).poll_read(cx, &mut ReadBuf::new(&mut byte))
    });
    tokio::select! {
        // The watcher first: the read is held back only while one runs.
        biased;
        w = &mut watcher => panic!("the watcher resolved: {w:?}"),
        r = check => r.unwrap(),
    }
    let after = start.elapsed();
    assert!(after >= Duration::from_millis(20) && after <= Duration::from_millis(40), "checked after {after:?}");
}
