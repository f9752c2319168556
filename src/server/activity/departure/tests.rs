use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::super::watch::Watching;
use super::super::{Activity, ActivityIo};
use super::Departure;
use crate::server::conn::Parkable;

/// What a peek at the client's socket finds.
#[derive(Clone, Copy)]
enum Finds {
    Closed,
    Bytes,
    Nothing,
}

/// A client stream that counts the peeks that reach it and answers them
/// with `finds`.
struct PeekingIo {
    finds: Finds,
    peeks: usize,
}

impl Parkable for PeekingIo {
    const PARKS: bool = true;
    const LEAVES_TASK: bool = true;
    fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn cork(&self) {}
    const PEEKS: bool = true;
    fn poll_peek_closed(&mut self, _: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.peeks += 1;
        match self.finds {
            Finds::Closed => Poll::Ready(Ok(true)),
            Finds::Bytes => Poll::Ready(Ok(false)),
            Finds::Nothing => Poll::Pending,
        }
    }
}

/// The same, on a stream that cannot peek (as TLS).
struct SealedIo(PeekingIo);

impl Parkable for SealedIo {
    const PARKS: bool = true;
    const LEAVES_TASK: bool = true;
    fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn cork(&self) {}
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Woken(AtomicUsize);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Woken {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn peeking(activity: &Arc<Activity>, finds: Finds) -> ActivityIo<PeekingIo> {
    ActivityIo::new(PeekingIo { finds, peeks: 0 }, Arc::clone(activity), Bytes::new())
}

/// One flush's check: whether it found the client gone.
fn departed<I: Parkable + Unpin>(io: &mut ActivityIo<I>, waker: &Waker) -> bool {
    Pin::new(io).departed(&mut Context::from_waker(waker)).is_some()
}

#[test]
fn a_request_in_progress_is_checked_once_the_check_is_due() {
    let activity = Arc::new(Activity::default());
    let mut io = peeking(&activity, Finds::Closed);
    let woken = Arc::new(Woken::default());
    let waker = Waker::from(Arc::clone(&woken));
    let _watching = Watching::start(&activity);
    let _request = activity.begin();
    assert!(!departed(&mut io, &waker), "the check was made before it was due");
    assert!(!departed(&mut io, &waker), "a second flush made the check before it was due");
    assert_eq!(io.inner.peeks, 0);
    assert_eq!(woken.count(), 0);
    activity.departure_check_comes_due();
    assert_eq!(woken.count(), 1, "the check coming due did not wake the connection");
    assert!(departed(&mut io, &waker), "the client's end of stream was not seen");
    assert_eq!(io.inner.peeks, 1);
}

#[test]
fn bytes_waiting_put_the_check_off_and_nothing_yet_keeps_it_due() {
    let activity = Arc::new(Activity::default());
    let waker = Waker::from(Arc::new(Woken::default()));
    let _watching = Watching::start(&activity);
    let _request = activity.begin();
    // A pipelined request waits: looked at again later, not at each flush.
    let mut io = peeking(&activity, Finds::Bytes);
    assert!(!departed(&mut io, &waker));
    activity.departure_check_comes_due();
    assert!(!departed(&mut io, &waker));
    assert!(!departed(&mut io, &waker));
    assert_eq!(io.inner.peeks, 1, "bytes waiting did not put the check off");
    activity.departure_check_comes_due();
    assert!(!departed(&mut io, &waker));
    assert_eq!(io.inner.peeks, 2);
    // Nothing to see yet: the peek waits for the socket (the stream wakes
    // the connection), and the next flush looks again.
    io.inner.finds = Finds::Nothing;
    activity.departure_check_comes_due();
    assert!(!departed(&mut io, &waker));
    io.inner.finds = Finds::Closed;
    assert!(departed(&mut io, &waker));
    assert_eq!(io.inner.peeks, 4);
}

#[test]
fn the_end_of_the_answer_ends_the_check() {
    let activity = Arc::new(Activity::default());
    let mut io = peeking(&activity, Finds::Closed);
    let waker = Waker::from(Arc::new(Woken::default()));
    let _watching = Watching::start(&activity);
    let request = activity.begin();
    assert!(!departed(&mut io, &waker));
    drop(request);
    // Its deadline comes, for nothing; between requests hyper reads.
    activity.departure_check_comes_due();
    assert!(!departed(&mut io, &waker));
    assert_eq!(io.inner.peeks, 0);
    // The next request has a check of its own, not yet due.
    let _request = activity.begin();
    assert!(!departed(&mut io, &waker));
    assert_eq!(io.inner.peeks, 0);
}

#[test]
fn a_watcher_that_stops_makes_a_waiting_check_due() {
    // On drain the watcher stops and its deadline goes: the check must
    // not wait for the answer's end (a long poll would hide a departed
    // client until then).
    let activity = Arc::new(Activity::default());
    let mut io = peeking(&activity, Finds::Closed);
    let woken = Arc::new(Woken::default());
    let waker = Waker::from(Arc::clone(&woken));
    let watching = Watching::start(&activity);
    let _request = activity.begin();
    assert!(!departed(&mut io, &waker));
    drop(watching);
    assert_eq!(woken.count(), 1, "the waiting check was not woken when the watcher stopped");
    assert!(departed(&mut io, &waker));
}

#[test]
fn no_check_without_a_watcher_a_request_or_a_socket_that_peeks() {
    let waker = Waker::from(Arc::new(Woken::default()));
    // No watcher (hyper-util's builder, HTTP/2, a drain).
    let activity = Arc::new(Activity::default());
    let mut io = peeking(&activity, Finds::Closed);
    let _request = activity.begin();
    activity.departure_check_comes_due();
    assert!(!departed(&mut io, &waker));
    // No request in progress.
    let activity = Arc::new(Activity::default());
    let mut io = peeking(&activity, Finds::Closed);
    let _watching = Watching::start(&activity);
    assert!(!departed(&mut io, &waker));
    activity.departure_check_comes_due();
    assert!(!departed(&mut io, &waker));
    assert_eq!(io.inner.peeks, 0);
    // A stream that cannot peek: hyper reads it itself.
    let activity = Arc::new(Activity::default());
    let mut io =
        ActivityIo::new(SealedIo(PeekingIo { finds: Finds::Closed, peeks: 0 }), Arc::clone(&activity), Bytes::new());
    let _watching = Watching::start(&activity);
    let _request = activity.begin();
    assert!(!departed(&mut io, &waker));
    activity.departure_check_comes_due();
    assert!(!departed(&mut io, &waker));
    assert_eq!(io.inner.0.peeks, 0);
}

#[tokio::test(start_paused = true)]
async fn the_check_comes_due_on_its_own() {
    let activity = Arc::new(Activity::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_clock = stop.clone().drop_guard();
    tokio::spawn(Arc::clone(&activity.clock).run(stop));
    let watcher = activity.watch(true, Duration::from_millis(500), Duration::from_secs(3), None);
    tokio::pin!(watcher);
    let _request = activity.begin();
    let mut io = peeking(&activity, Finds::Closed);
    let start = Instant::now();
    let check = std::future::poll_fn(|cx| match Pin::new(&mut io).departed(cx) {
        Some(_) => Poll::Ready(()),
        None => Poll::Pending,
    });
    tokio::select! {
        // The watcher first: it is what makes the check due.
        biased;
        w = &mut watcher => panic!("the watcher resolved: {w:?}"),
        () = check => {}
    }
    let after = start.elapsed();
    assert!(after >= Duration::from_millis(20) && after <= Duration::from_millis(40), "checked after {after:?}");
}
