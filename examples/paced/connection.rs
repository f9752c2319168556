//! Connections to the server: opening them (plain or TLS), and one request
//! and its answer on one, with its latency recorded in [`Shared`].

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{Job, Shared, Slot};

// The integration tests' verifier: takes any certificate, checks signatures.
#[path = "../../tests/it/any_certificate.rs"]
mod any_certificate;
use any_certificate::AnyCertificate;

/// A connection, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// Opens connections to the server.
pub struct Dialer {
    addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// TLS handshakes done, and how many of them resumed a session.
    pub handshakes: Cell<u64>,
    pub resumed: Cell<u64>,
}

impl Dialer {
    /// `server_name` set: speak TLS. One connector for every connection, so
    /// they share its session cache and resume.
    pub fn new(addr: SocketAddr, server_name: Option<&str>) -> anyhow::Result<Dialer> {
        let tls = match server_name {
            None => None,
            Some(name) => {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_safe_default_protocol_versions()?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = ServerName::try_from(name.to_string()).context("--host is not a TLS server name")?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Dialer { addr, tls, handshakes: Cell::new(0), resumed: Cell::new(0) })
    }

    pub async fn open(&self) -> io::Result<Box<dyn Io>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), stream).await?;
                self.handshakes.set(self.handshakes.get() + 1);
                if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    self.resumed.set(self.resumed.get() + 1);
                }
                Ok(Box::new(tls))
            }
        }
    }
}

pub struct Connection {
    pub id: usize,
    pub dialer: Rc<Dialer>,
    /// A new connection per request.
    pub close: bool,
    pub request: Rc<[u8]>,
    pub shared: Rc<Shared>,
    pub slot: Rc<Slot>,
}

impl Connection {
    /// Take jobs until told to stop: each one, then whatever backlog there
    /// is, then back to the idle list.
    pub async fn serve(self, mut stream: Option<Box<dyn Io>>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.slot.wake.notified().await;
            if self.shared.stopping.get() {
                return;
            }
            let Some(mut job) = self.slot.job.take() else { continue };
            self.shared.used.borrow_mut()[self.id] = true;
            loop {
                if !self.exchange(&mut stream, job, &mut buf).await {
                    self.shared.errors.set(self.shared.errors.get() + 1);
                    stream = None; // The next request reconnects.
                }
                let next = self.shared.backlog.borrow_mut().pop_front();
                match next {
                    Some(due) => job = Job { due, from_due: true },
                    None => match self.shared.next_closed_job() {
                        Some(next) => job = next,
                        None => break,
                    },
                }
            }
            self.shared.idle.borrow_mut().push(self.id);
        }
    }

    /// One request and its whole answer, on `stream` or on a new connection
    /// when there is none or `close` is set; records the latency of a 200.
    async fn exchange(&self, stream: &mut Option<Box<dyn Io>>, job: Job, buf: &mut [u8]) -> bool {
        let since = if job.from_due { job.due } else { Instant::now() };
        let answer = async {
            let io = match stream {
                Some(io) if !self.close => io,
                _ => stream.insert(self.dialer.open().await?),
            };
            let answer = round_trip(io, &self.request, buf).await?;
            let took = since.elapsed();
            if self.close || !answer.keep_alive {
                let _ = io.shutdown().await;
                *stream = None;
            }
            io::Result::Ok((answer.status, took))
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok((200, took))) => {
                if self.shared.measure_from.get().is_some_and(|from| job.due < from) {
                    return true;
                }
                if let (Some(slow), Some(start)) = (self.shared.slow.get(), self.shared.measure_from.get()) {
                    if took > slow {
                        let at = job.due.duration_since(start).as_secs_f64() * 1e3;
                        eprintln!("slow: due {at:.3} ms, took {} us, conn {}", took.as_micros(), self.id);
                    }
                }
                let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
                self.shared.latencies_us.borrow_mut().push(us);
                true
            }
            Ok(_) | Err(_) => false,
        }
    }
}

/// Longer than any answer in the harness takes; a connection that waits
/// this long counts an error and reconnects.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`round_trip`] read.
struct Answer {
    status: u16,
    /// The server did not say `Connection: close`.
    keep_alive: bool,
}

/// Write `request`, read one answer with a Content-Length body, and return
/// its status. Anything else (chunked, garbage) is an error: the harness
/// only sends this at fixed-size files.
async fn round_trip(stream: &mut Box<dyn Io>, request: &[u8], buf: &mut [u8]) -> io::Result<Answer> {
    stream.write_all(request).await?;
    let mut filled = 0;
    let (answer, head_len, body_len) = loop {
        if filled == buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too long"));
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?;
                let closes = response.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                });
                let answer = Answer { status: response.code.unwrap_or(0), keep_alive: !closes };
                break (answer, head_len, length);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    };
    let mut have = filled - head_len;
    while have < body_len {
        let n = stream.read(buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
    }
    if have > body_len {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bytes after the answer"));
    }
    Ok(answer)
}
