//! The HTTPS accept loop: the same connection limit, drain tracker and
//! hyper serving as the plain listener, with a TLS handshake (bounded by the
//! client header timeout) in front. Counts `rampart_tls_handshakes_total`
//! and never hands an `acme-tls/1` connection to HTTP. With on-demand TLS,
//! the ClientHello is read ahead (peeked, left in the socket) and a name
//! no certificate covers waits for its issuance before the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::resolver::ACME_TLS_ALPN;
use super::TlsState;
use crate::metrics::ResultLabels;
use crate::server::client_socket::ClientSocket;
use crate::server::conn::Protocol;
use crate::server::{ConnSlot, Listener, Serving};

/// For `http://` sent to the HTTPS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
content-length: 55\r\nconnection: close\r\n\r\n400 Bad Request: plain HTTP request sent to HTTPS port\n";

/// Whether a handshake failed on a first record whose type byte is no TLS
/// content type: an ASCII letter, the first of an HTTP method, that is.
fn is_plain_http(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType))
    )
}

/// Accept TLS connections on `listener` and serve the proxy on them.
pub fn spawn_https(serving: &Serving, listener: Listener, tls: Arc<TlsState>) {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.server_config));
    let handshake_timeout = serving.proxy.state.load().config.server.client_header_timeout;
    serving.spawn_accept_loop(listener, "https", move |this, stream, peer, slot| {
        let acceptor = acceptor.clone();
        let tls = Arc::clone(&tls);
        async move { serve_tls(&this, &acceptor, &tls, stream, peer, slot, handshake_timeout).await }
    });
}

/// The SNI name of the ClientHello waiting in `stream`, read without
/// consuming it; `None` for none, for an `acme-tls/1` handshake, or when
/// no complete ClientHello arrives before `deadline`.
async fn peek_sni(stream: &TcpStream, deadline: tokio::time::Instant) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        let mut acceptor = rustls::server::Acceptor::default();
        let mut bytes = &buf[..n];
        while !bytes.is_empty() {
            if acceptor.read_tls(&mut bytes).is_err() {
                return None;
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                if hello.alpn().is_some_and(|mut a| a.next() == Some(ACME_TLS_ALPN)) {
                    return None;
                }
                return hello.server_name().map(str::to_owned);
            }
            Ok(None) if n < buf.len() => {
                // Part of the ClientHello so far: look again shortly.
                tokio::time::sleep(Duration::from_millis(10)).await;
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

async fn serve_tls(
    serving: &Serving,
    acceptor: &TlsAcceptor,
    tls: &TlsState,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: ConnSlot,
    handshake_timeout: Duration,
) {
    // Registered at once: a handshake always waits for its client (see
    // `ClientSocket` for why TLS sockets do not register lazily).
    let stream = match TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cannot register a connection");
            return;
        }
    };
    if let Some(hook) = tls.on_demand.get() {
        let hello_by = tokio::time::Instant::now() + handshake_timeout;
        if let Some(name) = peek_sni(&stream, hello_by).await {
            if !tls.live.load().covers(&name) {
                tokio::select! {
                    _ = serving.shutdown.cancelled() => return,
                    _ = hook.ensure(&name) => {}
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + handshake_timeout;
    let count = |result: &'static str| {
        serving.proxy.metrics.tls_handshakes.get_or_create(&ResultLabels { result }).inc();
    };
    // Boxed: the handshake's state is large and would size the task.
    let handshake =
        Box::pin(tokio::time::timeout_at(deadline, acceptor.accept(ClientSocket::handshaking(stream)).into_fallible()));
    let accepted = tokio::select! {
        _ = serving.shutdown.cancelled() => return,
        r = handshake => r,
    };
    let mut tls_stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err((e, mut socket))) => {
            count("failure");
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            // The alert that says why is held, like the rest of the
            // handshake; a client that spoke plain HTTP gets an answer it
            // can read instead, as nginx gives.
            if is_plain_http(&e) {
                socket.hold_instead(PLAIN_HTTP_ANSWER);
            }
            let _ = socket.send_held(deadline, &serving.shutdown).await;
            return;
        }
        Err(_) => {
            count("timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // A TLS 1.3 server's last words, its session tickets, wait for the
    // first answer; a TLS 1.2 client waits for the server's final flight.
    let (socket, session) = tls_stream.get_mut();
    socket.end_handshake();
    if session.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3)
        && !socket.send_held(deadline, &serving.shutdown).await
    {
        count("failure");
        tracing::debug!(%peer, "TLS 1.2 handshake: the final flight could not be sent");
        return;
    }
    if tls_stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
        // The TLS-ALPN-01 validation needs only the handshake.
        count("acme_challenge");
        return;
    }
    count("success");
    let protocol = Protocol::from_alpn(tls_stream.get_ref().1.alpn_protocol());
    serving.serve_tls_session(tls_stream, protocol, peer, slot).await;
}
