//! The HTTPS accept loop: the same connection limit, drain tracker and
//! hyper serving as the plain listener, with a TLS handshake (bounded by the
//! client header timeout) in front. Counts `rampart_tls_handshakes_total`
//! and never hands an `acme-tls/1` connection to HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::resolver::ACME_TLS_ALPN;
use super::TlsState;
use crate::metrics::ResultLabels;
use crate::proxy::ConnInfo;
use crate::server::conn::Protocol;
use crate::server::Serving;

/// Accept TLS connections on `listener` and serve the proxy on them.
pub fn spawn_https(serving: &Serving, listener: TcpListener, tls: Arc<TlsState>) {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.server_config));
    let handshake_timeout = serving.app.state.load().config.server.client_header_timeout;
    serving.spawn_accept_loop(listener, "https", move |this, stream, peer, slot| {
        let acceptor = acceptor.clone();
        async move {
            serve_tls(&this, &acceptor, stream, peer, handshake_timeout).await;
            drop(slot);
        }
    });
}

async fn serve_tls(
    serving: &Serving,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    handshake_timeout: Duration,
) {
    let count = |result: &'static str| {
        serving.app.metrics.tls_handshakes.get_or_create(&ResultLabels { result }).inc();
    };
    let accepted = tokio::select! {
        _ = serving.shutdown.cancelled() => return,
        r = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => r,
    };
    let tls_stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            count("failure");
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            count("timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    if tls_stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
        // The TLS-ALPN-01 validation needs only the handshake.
        count("acme_challenge");
        return;
    }
    count("success");
    let protocol = Protocol::from_alpn(tls_stream.get_ref().1.alpn_protocol());
    // TLS connections rest in their task (`Parkable::LEAVES_TASK` is false).
    let _ = serving.serve_io(tls_stream, protocol, bytes::Bytes::new(), Arc::new(ConnInfo::new(peer, true))).await;
}
