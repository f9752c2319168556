//! `compress`: gzip, br or zstd (async-compression), chosen from the
//! client's `Accept-Encoding` q-values with the server's preference
//! (br, zstd, gzip) on ties. The body is compressed as it streams; nothing
//! is buffered whole. A HEAD answer gets the headers its GET would (RFC
//! 9110 9.3.2), without a body; a 304 the `ETag` and `Vary` of the 200 it
//! stands for (15.4.5). Skipped for 1xx/204/206, ranged requests (whose
//! answers, a 206 too, still say `Vary`), bodies already encoded or smaller
//! than `min_size` (by `Content-Length`, or the body's own length for the
//! proxy's answers), `no-transform`, server-sent events, and types that are
//! compressed already (images but
//! SVG, audio, video, archives, woff fonts). Compressed answers drop
//! `Content-Length` and `Accept-Ranges`, weaken a strong `ETag`, and every
//! answer that could have been compressed says `Vary: Accept-Encoding`.

use std::sync::Arc;

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::Level;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use tokio_util::io::{ReaderStream, StreamReader};

use super::{Ctx, DefinitionError, Env, Flow, Middleware, State, Step};
use crate::body::{BoxError, RequestBody, ResponseBody};
use crate::config::{MiddlewareSpec, RawMiddleware};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Br,
    Zstd,
    Gzip,
}

impl Algo {
    fn token(self) -> &'static str {
        match self {
            Algo::Br => "br",
            Algo::Zstd => "zstd",
            Algo::Gzip => "gzip",
        }
    }
}

#[derive(Debug)]
pub struct Compress {
    min_size: u64,
    /// Server preference order.
    algorithms: Vec<Algo>,
    level: Level,
}

/// The `[middleware.NAME]` definition of `type = "compress"`.
pub(super) fn compile(spec: &MiddlewareSpec, _: &Env<'_>) -> Result<Arc<dyn Middleware>, DefinitionError> {
    let RawMiddleware::Compress { min_size, algorithms, level } = &spec.kind else {
        return Err(super::not_mine("compress").into());
    };
    Ok(Arc::new(Compress::new(min_size.map(|b| b.0), algorithms.as_deref(), *level)?))
}

impl Compress {
    pub fn new(
        min_size: Option<u64>,
        algorithms: Option<&[String]>,
        level: Option<u32>,
    ) -> Result<Self, DefinitionError> {
        let algorithms = match algorithms {
            None => vec![Algo::Br, Algo::Zstd, Algo::Gzip],
            Some(list) => list
                .iter()
                .map(|a| match a.as_str() {
                    "br" => Ok(Algo::Br),
                    "zstd" => Ok(Algo::Zstd),
                    "gzip" => Ok(Algo::Gzip),
                    other => Err(DefinitionError::at(
                        "algorithms",
                        format!("unknown compression algorithm {other:?}; use \"br\", \"zstd\" or \"gzip\""),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if algorithms.is_empty() {
            return Err(DefinitionError::at("algorithms", "algorithms must not be empty"));
        }
        let level = match level {
            // Fast by default, like nginx's gzip_comp_level 1: most of the
            // size win for a fraction of the CPU.
            None => Level::Precise(1),
            Some(n @ 1..=11) => Level::Precise(n as i32),
            Some(n) => return Err(DefinitionError::at("level", format!("level must be between 1 and 11, got {n}"))),
        };
        Ok(Compress { min_size: min_size.unwrap_or(1024), algorithms, level })
    }

    /// The best algorithm the client accepts, if any.
    pub fn choose(&self, accept: Option<&HeaderValue>) -> Option<Algo> {
        let accept = accept?.to_str().ok()?;
        let mut best: Option<(Algo, f32)> = None;
        for &algo in &self.algorithms {
            let q = q_value(accept, algo.token());
            if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
                best = Some((algo, q));
            }
        }
        best.map(|(a, _)| a)
    }

    /// Compress `resp` if it qualifies, for a client that sent `accept`.
    fn compress(&self, mut resp: Response<ResponseBody>, accept: Option<&HeaderValue>) -> Response<ResponseBody> {
        if resp.status() == StatusCode::NOT_MODIFIED {
            return self.not_modified(resp, accept);
        }
        if !self.eligible(&resp) {
            return resp;
        }
        append_vary(resp.headers_mut());
        let Some(algo) = self.choose(accept) else { return resp };
        encoded_headers(resp.headers_mut(), algo);
        let (parts, body) = resp.into_parts();
        Response::from_parts(parts, compress_body(body, algo, self.level))
    }

    /// A 304 carries the `ETag` and `Vary` its 200 would have (RFC 9110
    /// 15.4.5): when it says what the 200's type was (a cache's 304 does)
    /// and that 200 would have been compressed, its `ETag` is weakened and
    /// `Vary: Accept-Encoding` added, as on the 200. (Its length is not
    /// known: `min_size` cannot be judged, the type alone decides.)
    fn not_modified(&self, mut resp: Response<ResponseBody>, accept: Option<&HeaderValue>) -> Response<ResponseBody> {
        let h = resp.headers();
        let typed = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(compressible);
        if !typed || h.contains_key(header::CONTENT_ENCODING) || no_transform(h) {
            return resp;
        }
        append_vary(resp.headers_mut());
        if self.choose(accept).is_some() {
            weaken_etag(resp.headers_mut());
        }
        resp
    }

    /// The answer to a HEAD: the headers the GET's answer would have had
    /// with `algo` (`None`: the client accepts none), no body to compress.
    fn compress_head(&self, mut resp: Response<ResponseBody>, algo: Option<Algo>) -> Response<ResponseBody> {
        if !self.eligible_as(&resp, true) {
            return resp;
        }
        append_vary(resp.headers_mut());
        if let Some(algo) = algo {
            encoded_headers(resp.headers_mut(), algo);
        }
        resp
    }

    fn eligible(&self, resp: &Response<ResponseBody>) -> bool {
        self.eligible_as(resp, false)
    }

    /// `head`: the answer to a HEAD, whose empty body says nothing of the
    /// GET's length: without a `Content-Length` it is judged as a GET's
    /// answer of unknown length (a chunked one) would be.
    fn eligible_as(&self, resp: &Response<ResponseBody>, head: bool) -> bool {
        let s = resp.status();
        if s.is_informational()
            || s == StatusCode::NO_CONTENT
            || s == StatusCode::PARTIAL_CONTENT
            || s == StatusCode::NOT_MODIFIED
        {
            return false;
        }
        let h = resp.headers();
        if h.contains_key(header::CONTENT_ENCODING) || h.contains_key(header::CONTENT_RANGE) {
            return false;
        }
        if no_transform(h) {
            return false;
        }
        // The proxy's own answers (a 429, a 502) have no Content-Length yet:
        // their body knows its length.
        let len = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let len = len.or_else(|| http_body::Body::size_hint(resp.body()).exact().filter(|&n| !head || n > 0));
        if len.is_some_and(|n| n < self.min_size) {
            return false;
        }
        match h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            Some(ct) => compressible(ct),
            None => false,
        }
    }
}

/// A header's lines as the one list they are (RFC 9110 5.3): the line
/// itself when there is one, else the lines joined with `, `.
fn joined_lines(h: &http::HeaderMap, name: &header::HeaderName) -> Option<HeaderValue> {
    let mut lines = h.get_all(name).iter();
    let first = lines.next()?;
    let mut rest = lines.peekable();
    if rest.peek().is_none() {
        return Some(first.clone());
    }
    let mut joined = first.as_bytes().to_vec();
    for line in rest {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(line.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

fn no_transform(h: &http::HeaderMap) -> bool {
    h.get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("no-transform"))
}

/// What a compressed answer's headers say: the coding, no length, no
/// ranges, and a weak `ETag` (the bytes are no longer the validator's).
fn encoded_headers(h: &mut http::HeaderMap, algo: Algo) {
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(algo.token()));
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    weaken_etag(h);
}

fn weaken_etag(h: &mut http::HeaderMap) {
    if let Some(etag) = h.get(header::ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                h.insert(header::ETAG, v);
            }
        }
    }
}

/// A HEAD's state: [`HEAD_NONE`] or 1 + the algorithm's place in `ALGOS`;
/// a ranged request's: [`VARY_ONLY`].
const HEAD_NONE: u64 = 0;
const VARY_ONLY: u64 = u64::MAX;
const ALGOS: [Algo; 3] = [Algo::Br, Algo::Zstd, Algo::Gzip];

impl Middleware for Compress {
    /// Ranged requests are never compressed. A GET's response phase gets
    /// the client's `Accept-Encoding`, if any; a HEAD's the algorithm its
    /// GET would get, chosen now (its answer has no body to wait for).
    fn on_request<'a>(&'a self, req: &'a mut Request<RequestBody>, _: &'a Ctx<'_>) -> Step<'a> {
        let joined = joined_lines(req.headers(), &header::ACCEPT_ENCODING);
        let accept = joined.as_ref();
        let state = if req.headers().contains_key(header::RANGE) {
            // Not compressed, but its answer still varies with
            // Accept-Encoding: a cache after this must not store it as the
            // one answer for every client.
            State::Small(VARY_ONLY)
        } else if req.method() == Method::HEAD {
            let chosen = self.choose(accept).and_then(|a| ALGOS.iter().position(|&b| b == a));
            State::Small(chosen.map_or(HEAD_NONE, |i| i as u64 + 1))
        } else {
            match joined {
                Some(accept) => State::Header(accept),
                None => State::Run,
            }
        };
        Flow::Continue(state).into()
    }

    fn on_response(&self, resp: Response<ResponseBody>, state: State) -> Response<ResponseBody> {
        match state {
            State::Header(accept) => self.compress(resp, Some(&accept)),
            State::Small(VARY_ONLY) => {
                // Its 206 (or 200) says `Vary` when the whole answer would
                // have been compressed: judged by type, the length unknown.
                let mut resp = resp;
                let s = resp.status();
                let h = resp.headers();
                let typed = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(compressible);
                if typed
                    && !s.is_informational()
                    && s != StatusCode::NO_CONTENT
                    && s != StatusCode::NOT_MODIFIED
                    && !h.contains_key(header::CONTENT_ENCODING)
                    && !no_transform(h)
                {
                    append_vary(resp.headers_mut());
                }
                resp
            }
            State::Small(head) => {
                let algo = (head as usize).checked_sub(1).and_then(|i| ALGOS.get(i)).copied();
                self.compress_head(resp, algo)
            }
            _ => self.compress(resp, None),
        }
    }
}

/// Whether a media type is worth compressing.
pub fn compressible(content_type: &str) -> bool {
    let ct = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if ct == "image/svg+xml" {
        return true;
    }
    let (kind, sub) = ct.split_once('/').unwrap_or((&ct, ""));
    if matches!(kind, "image" | "video" | "audio") {
        return false;
    }
    !matches!(
        sub,
        "event-stream"
            | "zip"
            | "gzip"
            | "x-gzip"
            | "x-bzip2"
            | "x-xz"
            | "x-7z-compressed"
            | "x-rar-compressed"
            | "vnd.rar"
            | "zstd"
            | "octet-stream"
            | "pdf"
            | "woff"
            | "woff2"
            | "font-woff"
            | "x-font-woff"
    )
}

/// The q-value `accept` gives `coding` (or `*`); 0 when absent.
fn q_value(accept: &str, coding: &str) -> f32 {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(coding) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0.0)
}

fn append_vary(h: &mut http::HeaderMap) {
    super::add_vary(h, "accept-encoding");
}

fn compress_body(body: ResponseBody, algo: Algo, level: Level) -> ResponseBody {
    let stream = BodyDataStream::new(body).map_err(|e: BoxError| std::io::Error::other(e));
    let reader = StreamReader::new(stream);
    let out = match algo {
        Algo::Gzip => frames(GzipEncoder::with_quality(reader, level)),
        Algo::Br => frames(BrotliEncoder::with_quality(reader, level)),
        Algo::Zstd => frames(ZstdEncoder::with_quality(reader, level)),
    };
    ResponseBody::Boxed { body: out }
}

fn frames<R>(reader: R) -> http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>
where
    R: tokio::io::AsyncRead + Send + 'static,
{
    let stream =
        ReaderStream::with_capacity(reader, 32 * 1024).map_ok(Frame::data).map_err(|e| Box::new(e) as BoxError);
    StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_q_values_then_server_preference() {
        let c = Compress::new(None, None, None).unwrap();
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(c.choose(Some(&v("gzip, deflate, br, zstd"))), Some(Algo::Br));
        assert_eq!(c.choose(Some(&v("gzip;q=1.0, br;q=0.5"))), Some(Algo::Gzip));
        assert_eq!(c.choose(Some(&v("br;q=0, gzip"))), Some(Algo::Gzip));
        assert_eq!(c.choose(Some(&v("identity"))), None);
        assert_eq!(c.choose(Some(&v("*;q=0.1"))), Some(Algo::Br));
        assert_eq!(c.choose(None), None);
    }

    #[test]
    fn types() {
        assert!(compressible("text/html; charset=utf-8"));
        assert!(compressible("application/json"));
        assert!(compressible("image/svg+xml"));
        assert!(!compressible("image/png"));
        assert!(!compressible("font/woff2"));
        assert!(!compressible("application/zip"));
        assert!(!compressible("text/event-stream"));
    }
}
