//! Protocol upgrades (WebSocket over HTTP/1.1). Only once the upstream has
//! answered 101 are bytes copied both ways; until then hyper holds back
//! anything the client sent after its request head.

use http::header::{self, HeaderValue};
use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::ResponseBody;
use crate::upstream::InFlightGuard;

/// Answer the client's upgrade with the upstream's 101 and join the two
/// upgraded connections in a background task.
pub fn splice(
    mut upstream_resp: Response<hyper::body::Incoming>,
    client_side: OnUpgrade,
    proto: HeaderValue,
    guard: InFlightGuard,
) -> Response<ResponseBody> {
    let upstream_side = hyper::upgrade::on(&mut upstream_resp);
    let (mut parts, _) = upstream_resp.into_parts();
    crate::proxy::headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, proto);
    tokio::spawn(async move {
        // The server stays "busy" for least_conn while the tunnel is open.
        let _guard = guard;
        let (client, upstream) = match tokio::try_join!(client_side, upstream_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
    Response::from_parts(parts, ResponseBody::empty())
}
