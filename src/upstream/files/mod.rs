//! A static upstream (`static = DIR`): another kind of pool, whose answers
//! come from files instead of servers. GET and HEAD only (405 with `Allow`
//! otherwise); a directory answers with its `index` file, a path with no
//! file with the `fallback` (single-page apps) or 404; `ETag` and
//! `Last-Modified` with 304/412 for the conditional headers; one byte
//! range (206/416; several ranges get the whole file); `Content-Type` from
//! the extension; a precompressed sibling (`NAME.br`, `.zst`, `.gz`) when
//! the client accepts it, with `Vary: Accept-Encoding`; `Cache-Control`
//! from the first `cache_control` rule matching the served file's path.
//!
//! The file-system work of one request (resolving, opening, the headers,
//! and the body too when it is small) runs on the worker thread, as nginx
//! does without `aio`; a larger body streams in [`CHUNK`]-sized reads
//! ([`stream`]), so memory stays flat whatever the file's size. Handing
//! each request to tokio's blocking pool instead cost more than the file
//! work itself (benches/README.md, `static-1k`). Answers are ordinary responses: the route's response
//! middleware (compression, security headers) applies as to a proxied one.

mod beneath;
mod conditional;
mod lookup;
mod mime;
mod stream;

use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;

use super::body::ResponseBody;
use crate::config::StaticSpec;
use conditional::{Conditions, Decision, Validators};
use lookup::{Coding, Lookup};

/// Bodies up to this size are read with the lookup, in the same blocking
/// task; larger ones stream in reads of this size.
const CHUNK: usize = 64 * 1024;

/// One static upstream, compiled from its spec.
#[derive(Debug)]
pub struct StaticSite {
    spec: Arc<StaticSpec>,
}

/// The parts of a request a static answer depends on.
pub struct FileRequest<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The normalised path inside the site (after `strip_prefix`).
    pub site_path: &'a str,
    /// The client's own path and query, for the `Location` of a redirect.
    pub client_path: &'a str,
    pub query: Option<&'a str>,
}

impl StaticSite {
    pub fn new(spec: StaticSpec) -> Self {
        StaticSite { spec: Arc::new(spec) }
    }

    pub fn spec(&self) -> &StaticSpec {
        &self.spec
    }

    pub async fn serve(&self, req: FileRequest<'_>) -> Response<ResponseBody> {
        let get = req.method == Method::GET;
        if !get && req.method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let Ok(segs) = lookup::segments(req.site_path, self.spec.allow_dotfiles) else {
            return text(StatusCode::NOT_FOUND);
        };
        let codings = if self.spec.precompressed { accepted(req.headers.get(header::ACCEPT_ENCODING)) } else { vec![] };
        let job = Job {
            spec: Arc::clone(&self.spec),
            segs,
            site_path: req.site_path.to_string(),
            codings,
            conditions: Conditions::from_headers(get, req.headers),
        };
        let answer = match job.run() {
            Ok(answer) => answer,
            Err(e) => return io_error(&self.spec, req.site_path, &e),
        };
        match answer {
            Answer::NotFound => text(StatusCode::NOT_FOUND),
            Answer::AddSlash => add_slash(req.client_path, req.query),
            Answer::File { head, body } => {
                let body = match body {
                    Body::Empty => ResponseBody::empty(),
                    Body::Bytes(b) => ResponseBody::full(b),
                    Body::Stream { file, len } => {
                        ResponseBody::Boxed { body: UnsyncBoxBody::new(stream::FileBody::new(file, len)) }
                    }
                };
                let (parts, ()) = head.into_parts();
                Response::from_parts(parts, body)
            }
        }
    }
}

/// The file-system part of one request.
struct Job {
    spec: Arc<StaticSpec>,
    segs: Vec<OsString>,
    site_path: String,
    codings: Vec<Coding>,
    conditions: Conditions,
}

enum Answer {
    NotFound,
    AddSlash,
    File { head: Response<()>, body: Body },
}

enum Body {
    Empty,
    Bytes(Bytes),
    /// The file, positioned at the first byte to send.
    Stream {
        file: std::fs::File,
        len: u64,
    },
}

impl Job {
    fn run(self) -> io::Result<Answer> {
        let found = match lookup::find(&self.spec, &self.segs, &self.site_path, &self.codings)? {
            Lookup::Found(f) => f,
            Lookup::NotFound => return Ok(Answer::NotFound),
            Lookup::AddSlash => return Ok(Answer::AddSlash),
        };
        let mut file = found.file;
        let len = found.meta.len();
        let v = Validators::new(found.meta.modified()?, len, found.coding.map(Coding::token));
        let decision = conditional::decide(&self.conditions, &v, len);

        let mut head = Response::new(());
        let h = head.headers_mut();
        let mut set = |name: header::HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        set(header::ETAG, &v.etag);
        set(header::LAST_MODIFIED, &v.last_modified());
        if let Some(rule) = self.spec.cache_control.iter().find(|r| r.pattern.matches(&found.site_path)) {
            h.insert(header::CACHE_CONTROL, rule.value.clone());
        }
        if self.spec.precompressed {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        let (status, start, count) = match decision {
            Decision::NotModified => (StatusCode::NOT_MODIFIED, 0, None),
            Decision::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, 0, None),
            Decision::Unsatisfiable => {
                h.insert(header::CONTENT_RANGE, header_value(&format!("bytes */{len}")));
                (StatusCode::RANGE_NOT_SATISFIABLE, 0, None)
            }
            Decision::Full => (StatusCode::OK, 0, Some(len)),
            Decision::Partial { start, end } => {
                h.insert(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{end}/{len}")));
                (StatusCode::PARTIAL_CONTENT, start, Some(end - start + 1))
            }
        };
        *head.status_mut() = status;
        let Some(count) = count else {
            return Ok(Answer::File { head, body: Body::Empty });
        };
        let h = head.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime::content_type(&found.site_path)));
        if let Some(c) = found.coding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c.token()));
        }
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
        if !self.conditions.get || count == 0 {
            return Ok(Answer::File { head, body: Body::Empty });
        }
        if start > 0 {
            file.seek(SeekFrom::Start(start))?;
        }
        if count <= CHUNK as u64 {
            let mut buf = Vec::with_capacity(count as usize);
            file.take(count).read_to_end(&mut buf)?;
            if buf.len() as u64 != count {
                // The file shrank under us: an answer shorter than its
                // Content-Length would hang the client.
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while read"));
            }
            return Ok(Answer::File { head, body: Body::Bytes(Bytes::from(buf)) });
        }
        Ok(Answer::File { head, body: Body::Stream { file, len: count } })
    }
}

/// The codings with a sibling the client accepts, best first: by q-value,
/// ties in the server's order (br, zstd, gzip).
fn accepted(accept: Option<&HeaderValue>) -> Vec<Coding> {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else { return Vec::new() };
    let mut out: Vec<(Coding, f32)> =
        Coding::ALL.iter().map(|&c| (c, q_value(accept, c.token()))).filter(|&(_, q)| q > 0.0).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.into_iter().map(|(c, _)| c).collect()
}

/// The q-value `accept` gives `coding` (or `*`); 0 when absent.
fn q_value(accept: &str, coding: &str) -> f32 {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| {
                let p = p.trim();
                p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
            })
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(coding) || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip")) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0.0)
}

/// 301 to the same path with a slash, as nginx answers for a directory.
fn add_slash(client_path: &str, query: Option<&str>) -> Response<ResponseBody> {
    let location = match query {
        Some(q) => format!("{client_path}/?{q}"),
        None => format!("{client_path}/"),
    };
    let mut r = text(StatusCode::MOVED_PERMANENTLY);
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => text(StatusCode::NOT_FOUND),
    }
}

fn io_error(spec: &StaticSpec, path: &str, e: &io::Error) -> Response<ResponseBody> {
    match e.kind() {
        io::ErrorKind::NotFound => {
            tracing::warn!(dir = %spec.root.display(), error = %e, "static directory is missing");
            text(StatusCode::NOT_FOUND)
        }
        io::ErrorKind::PermissionDenied => text(StatusCode::FORBIDDEN),
        _ => {
            tracing::warn!(dir = %spec.root.display(), path, error = %e, "static file could not be read");
            text(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A short text/plain answer: `404 Not Found`.
fn text(status: StatusCode) -> Response<ResponseBody> {
    let body = format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings_by_q_value_then_server_order() {
        let v = |s: &str| accepted(Some(&HeaderValue::from_str(s).unwrap()));
        assert_eq!(v("gzip, deflate, br, zstd"), vec![Coding::Br, Coding::Zstd, Coding::Gzip]);
        assert_eq!(v("gzip;q=1, br;q=0.5"), vec![Coding::Gzip, Coding::Br]);
        assert_eq!(v("br;q=0, gzip"), vec![Coding::Gzip]);
        assert_eq!(v("*"), vec![Coding::Br, Coding::Zstd, Coding::Gzip]);
        assert_eq!(v("identity"), vec![]);
        assert_eq!(accepted(None), vec![]);
    }
}
