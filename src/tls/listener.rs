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
use crate::metrics::{ListenerLabels, ResultLabels};
use crate::proxy::ConnInfo;
use crate::server::conn::Protocol;
use crate::server::Serving;

/// Accept TLS connections on `listener` and serve the proxy on them.
pub fn spawn_https(serving: &Serving, listener: TcpListener, tls: Arc<TlsState>) {
    let this = serving.clone();
    serving.tracker.spawn(async move { accept_loop(this, listener, tls).await });
}

async fn accept_loop(serving: Serving, listener: TcpListener, tls: Arc<TlsState>) {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.server_config));
    let handshake_timeout = serving.app.state.load().config.server.client_header_timeout;
    let gauge = serving.app.metrics.connections_active.get_or_create(&ListenerLabels { listener: "https" }).clone();
    loop {
        let permit = tokio::select! {
            _ = serving.shutdown.cancelled() => return,
            p = Arc::clone(&serving.permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = serving.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(listener = "https", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let this = serving.clone();
        let gauge = gauge.clone();
        let acceptor = acceptor.clone();
        serving.tracker.spawn(async move {
            gauge.inc();
            serve_tls(&this, &acceptor, stream, peer, handshake_timeout).await;
            gauge.dec();
            drop(permit);
        });
    }
}

async fn serve_tls(
    serving: &Serving,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    handshake_timeout: Duration,
) {
    let _ = stream.set_nodelay(true);
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
    serving.serve_io(tls_stream, protocol, ConnInfo::new(peer, true)).await;
}
