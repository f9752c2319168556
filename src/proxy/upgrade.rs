//! Protocol upgrades (WebSocket over HTTP/1.1). Only once the upstream has
//! answered 101 are bytes copied both ways; until then hyper holds back
//! anything the client sent after its request head. The copying runs in
//! the client connection's own task once hyper has let go of the
//! connection ([`super::ConnInfo::take_tunnel`]), not in a task of its own:
//! it keeps the connection's place under `max_connections`, and the drain
//! ends it.

use http::header::{self, HeaderValue};
use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::Tunnel;
use crate::body::ResponseBody;
use crate::upstream::{InFlightGuard, UpstreamBody};

/// Answer the client's upgrade with the upstream's 101, and the tunnel
/// that joins the two upgraded connections, to run once the 101 is out.
pub fn splice(
    upstream_resp: Response<UpstreamBody>,
    client_side: OnUpgrade,
    proto: HeaderValue,
    guard: InFlightGuard,
) -> (Response<ResponseBody>, Option<Tunnel>) {
    let (mut parts, body) = upstream_resp.into_parts();
    let Some((mut upstream, early_bytes, _)) = body.into_upgraded() else {
        return (crate::proxy::error::ProxyError::Broken.response(), None);
    };
    crate::proxy::headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(header::UPGRADE, proto);
    let tunnel = Box::pin(async move {
        // The server stays "busy" for least_conn while the tunnel is open.
        let _guard = guard;
        let mut client = match client_side.await {
            Ok(c) => TokioIo::new(c),
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        // What the upstream sent right behind its 101 (already read).
        if !early_bytes.is_empty() && client.write_all(&early_bytes).await.is_err() {
            return;
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
    (Response::from_parts(parts, ResponseBody::empty()), Some(tunnel))
}
