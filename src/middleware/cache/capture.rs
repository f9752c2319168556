//! Storing a response while it streams to the client: each frame is passed
//! on as it comes and copied aside; when the body ends whole, the copy is
//! stored and the key's waiting requests are told. A body that grows past
//! `max_object_size`, or whose copy would take the copies in progress past
//! `max_size` together (`cache::fills`), stops being copied (the client
//! still gets all of it), and one that fails or is dropped early is not
//! stored.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::HeaderName;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;

use super::{respond, Pending};
use crate::body::{BoxError, ResponseBody};
use crate::cache::flight::Outcome;
use crate::cache::Cache;

/// What storing needs once the body is complete.
struct Job {
    pending: Pending,
    names: Vec<HeaderName>,
    head: http::response::Parts,
    response_time: SystemTime,
}

pin_project! {
    pub struct Capture {
        #[pin]
        inner: ResponseBody,
        buf: BytesMut,
        job: Option<Box<Job>>,
        // Bytes of the cache's fill budget this copy holds.
        held: u64,
        cache: Arc<Cache>,
    }

    impl PinnedDrop for Capture {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.inner.is_end_stream() {
                finish(this.job.take(), this.buf);
            }
            this.cache.fills.give_back(std::mem::take(this.held));
        }
    }
}

/// Stop copying (too big, or no room among the copies in progress): the
/// waiting requests go upstream, and the copy's memory goes back.
fn abandon(job: &mut Option<Box<Job>>, buf: &mut BytesMut, held: &mut u64, cache: &Cache) {
    if let Some(l) = job.take().and_then(|job| job.pending.leader) {
        l.finish(Outcome::NotStored);
    }
    *buf = BytesMut::new();
    cache.fills.give_back(std::mem::take(held));
}

fn finish(job: Option<Box<Job>>, buf: &mut BytesMut) {
    let Some(job) = job else { return };
    let Job { pending: p, names, head, response_time } = *job;
    // A purge came while it was fetched: what it brings is not stored.
    if p.leader.as_ref().is_some_and(|l| l.doomed()) {
        if let Some(l) = p.leader {
            l.finish(Outcome::NotStored);
        }
        return;
    }
    let body: Bytes = std::mem::take(buf).freeze();
    let entry = respond::new_entry(
        &p.host,
        &p.path,
        head.status,
        &head.headers,
        body,
        &p.settings,
        p.request_time,
        response_time,
    );
    p.cache.store.insert(&p.primary, names, &p.req_headers, entry);
    if let Some(l) = p.leader {
        l.finish(Outcome::Stored);
    }
}

/// Wrap `resp`'s body so it is stored when it ends.
/// `status` is this cache's `Cache-Status` member, added after the head
/// to store is taken.
pub fn wrap(
    resp: Response<ResponseBody>,
    pending: Pending,
    names: Vec<HeaderName>,
    status: String,
) -> Response<ResponseBody> {
    let (mut parts, inner) = resp.into_parts();
    let mut head = http::Response::new(());
    *head.status_mut() = parts.status;
    *head.headers_mut() = parts.headers.clone();
    let (head, ()) = head.into_parts();
    // Stored with the entry (its rules are read again from there), never
    // sent on.
    parts.headers.remove(&crate::cache::policy::SURROGATE_CONTROL);
    respond::add_status(&mut parts.headers, status);
    let cache = Arc::clone(&pending.cache);
    let mut job = Some(Box::new(Job { pending, names, head, response_time: SystemTime::now() }));
    let max_object_size = job.as_ref().map_or(0, |j| j.pending.settings.max_object_size);
    // The whole body's room up front when its length is known.
    let mut capacity = inner.size_hint().exact().unwrap_or(0).min(max_object_size);
    if !cache.fills.take(capacity) {
        let mut none = 0;
        abandon(&mut job, &mut BytesMut::new(), &mut none, &cache);
        capacity = 0;
    }
    let capture = Capture { inner, buf: BytesMut::with_capacity(capacity as usize), job, held: capacity, cache };
    Response::from_parts(parts, ResponseBody::Boxed { body: UnsyncBoxBody::new(capture) })
}

impl Body for Capture {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(job)) = (frame.data_ref(), this.job.as_ref()) {
                    let needed = (this.buf.len() + data.len()) as u64;
                    let more = needed.saturating_sub(*this.held);
                    if needed > job.pending.settings.max_object_size || !this.cache.fills.take(more) {
                        abandon(this.job, this.buf, this.held, this.cache);
                    } else {
                        *this.held += more;
                        this.buf.extend_from_slice(data);
                    }
                }
                if this.inner.is_end_stream() {
                    finish(this.job.take(), this.buf);
                }
            }
            Poll::Ready(None) => finish(this.job.take(), this.buf),
            Poll::Ready(Some(Err(_))) => *this.job = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
