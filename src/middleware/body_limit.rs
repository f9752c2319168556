//! `body_limit`: 413 for a request body over `max` bytes, whether declared
//! up front (`Content-Length`) or found while streaming. The streamed case
//! cuts the upload off mid-way and flags the exchange, so the proxy answers
//! 413 instead of the 502 the broken upload would otherwise cause.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::RequestFacts;
use crate::body::plain_response;
use crate::body::{BoxError, RequestBody, ResponseBody};

#[derive(Debug)]
pub struct BodyLimit {
    max: u64,
}

pub fn too_large() -> Response<ResponseBody> {
    plain_response(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large: request body over the limit\n")
}

impl BodyLimit {
    pub fn new(max: u64) -> Self {
        BodyLimit { max }
    }

    pub fn on_request(
        &self,
        req: &mut Request<RequestBody>,
        facts: &mut RequestFacts,
    ) -> Option<Response<ResponseBody>> {
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max) {
            return Some(too_large());
        }
        if req.body().is_end_stream() {
            return None;
        }
        let flag = Arc::new(AtomicBool::new(false));
        facts.body_too_large = Some(Arc::clone(&flag));
        let body = std::mem::replace(req.body_mut(), RequestBody::empty());
        let limited = Limited { inner: body, left: self.max, flag };
        *req.body_mut() = RequestBody::Boxed { body: limited.boxed_unsync() };
        None
    }
}

struct Limited {
    inner: RequestBody,
    left: u64,
    flag: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body over the limit")]
struct TooLarge;

impl Body for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if n > this.left {
                    this.flag.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(TooLarge))));
                }
                this.left -= n;
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
