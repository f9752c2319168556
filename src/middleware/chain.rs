//! A route's middleware in order, and the response phases a request is
//! owed: each item's request phase runs first to last; every item that
//! returned a state other than `State::Skip` gets it back in its response
//! phase, last to first.

use std::sync::Arc;

use http::{Request, Response};
use smallvec::SmallVec;

use super::{Ctx, Flow, Middleware, State, Step};
use crate::body::{RequestBody, ResponseBody};

/// A route's middleware, in order.
#[derive(Debug, Default, Clone)]
pub struct Chain(pub Vec<Arc<dyn Middleware>>);

/// The response phases a request's middleware still owe it, in request
/// order (run in reverse). Inline up to four, so routes with short chains
/// keep their states without an allocation.
#[derive(Debug, Default)]
pub struct ResponsePhases<'a>(SmallVec<[(&'a dyn Middleware, State); 4]>);

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Run the request phase. Returns the response phases owed, and the
    /// early answer if an item gave one (the items after it never run).
    pub async fn on_request<'a>(
        &'a self,
        req: &mut Request<RequestBody>,
        ctx: &Ctx<'_>,
    ) -> (ResponsePhases<'a>, Option<Response<ResponseBody>>) {
        let mut owed = ResponsePhases::default();
        for m in &self.0 {
            if m.reads_forwarding() {
                ctx.forwarding.apply(req.headers_mut());
            }
            let flow = match m.on_request(req, ctx) {
                Step::Ready(flow) => flow,
                Step::Wait(wait) => wait.await,
            };
            match flow {
                Flow::Continue(State::Skip) => {}
                Flow::Continue(state) => owed.0.push((m.as_ref(), state)),
                Flow::Answer(resp) => return (owed, Some(resp)),
            }
        }
        (owed, None)
    }
}

impl ResponsePhases<'_> {
    /// How many items' response phases are owed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Run the owed response phases, last to first.
    pub fn on_response(self, mut resp: Response<ResponseBody>) -> Response<ResponseBody> {
        for (m, state) in self.0.into_iter().rev() {
            resp = m.on_response(resp, state);
        }
        resp
    }
}
