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
use crate::server::conn::Protocol;
use crate::server::lot::ClientSocket;
use crate::server::{ConnSlot, Serving};

/// Accept TLS connections on `listener` and serve the proxy on them.
pub fn spawn_https(serving: &Serving, listener: TcpListener, tls: Arc<TlsState>) {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.server_config));
    let handshake_timeout = serving.app.state.load().config.server.client_header_timeout;
    serving.spawn_accept_loop(listener, "https", move |this, stream, peer, slot| {
        let acceptor = acceptor.clone();
        async move { serve_tls(&this, &acceptor, stream, peer, slot, handshake_timeout).await }
    });
}

async fn serve_tls(
    serving: &Serving,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnSlot,
    handshake_timeout: Duration,
) {
    let count = |result: &'static str| {
        serving.app.metrics.tls_handshakes.get_or_create(&ResultLabels { result }).inc();
    };
    let accepted = tokio::select! {
        _ = serving.shutdown.cancelled() => return,
        // Boxed: the handshake's state is large and would size the task.
        r = Box::pin(tokio::time::timeout(handshake_timeout, acceptor.accept(ClientSocket::Live(stream)))) => r,
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
    serving.serve_tls_session(tls_stream, protocol, peer, slot).await;
}
