//! `body_limit`: 413 for a request body over `max` bytes, whether declared
//! up front (`Content-Length`) or found while streaming. The streamed case
//! is `http_body_util::Limited`'s: it fails the frame that goes over, which
//! cuts the upload off mid-way; the proxy answers that failure (its
//! `LengthLimitError` in the send error's chain) with 413 instead of the
//! 502 a broken upload would otherwise cause.

use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use super::{Ctx, DefinitionError, Env, Flow, Middleware, State, Step};
use crate::body::plain_response;
use crate::body::{RequestBody, ResponseBody};
use crate::config::{MiddlewareSpec, RawMiddleware};

#[derive(Debug)]
pub struct BodyLimit {
    max: u64,
}

pub fn too_large() -> Response<ResponseBody> {
    plain_response(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large: request body over the limit\n")
}

/// The `[middleware.NAME]` definition of `type = "body_limit"`.
pub(super) fn compile(spec: &MiddlewareSpec, _: &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError> {
    let RawMiddleware::BodyLimit { max } = &spec.kind else {
        return Err(super::not_mine("body_limit").into());
    };
    Ok(Arc::new(BodyLimit::new(max.0)))
}

impl BodyLimit {
    pub fn new(max: u64) -> Self {
        BodyLimit { max }
    }
}

impl Middleware for BodyLimit {
    fn on_request<'a>(&'a self, req: &'a mut Request<RequestBody>, _: &'a Ctx<'_>) -> Step<'a> {
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max) {
            return Flow::Answer(too_large()).into();
        }
        if !req.body().is_end_stream() {
            let body = std::mem::replace(req.body_mut(), RequestBody::empty());
            let max = usize::try_from(self.max).unwrap_or(usize::MAX);
            *req.body_mut() = RequestBody::Boxed { body: Limited::new(body, max).boxed_unsync() };
        }
        Flow::Continue(State::Skip).into()
    }
}
