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
//! ([`stream`]), so memory stays flat whatever the file's size. Files up to
//! [`memo::MAX_FILE`] are kept in memory with their headers ([`memo`]), so
//! a repeated request costs one `statx`. Handing
//! each request to tokio's blocking pool instead cost more than the file
//! work itself (benches/README.md, `static-1k`). Answers are ordinary responses: the route's response
//! middleware (compression, security headers) applies as to a proxied one.

mod beneath;
mod codings;
pub(super) mod conditional;
mod lookup;
mod memo;
mod mime;
pub mod sendfile;
mod stream;

use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::body::ResponseBody;
use crate::config::StaticSpec;
use bytes::Bytes;
use codings::{accepted, Codings};
use conditional::{Conditions, Decision, Validators};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use lookup::{Coding, Lookup};
use sendfile::{Sendable, StaticBody};

/// Bodies up to this size are read with the lookup, in the same blocking
/// task; larger ones stream in reads of this size.
const CHUNK: usize = 64 * 1024;

/// One static upstream, compiled from its spec.
#[derive(Debug)]
pub struct StaticSite {
    spec: Arc<StaticSpec>,
    memo: memo::Memo,
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
        let memo = memo::Memo::new(spec.recheck_after);
        StaticSite { spec: Arc::new(spec), memo }
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
        // The site's root without its slash (`/w` on a route `/w/` with
        // `strip_prefix`): as any directory, 301 to the slash, or the
        // page's relative links would resolve outside it.
        if req.site_path == "/" && !req.client_path.ends_with('/') {
            return add_slash(req.client_path, req.query);
        }
        let codings = if self.spec.precompressed { accepted(req.headers) } else { Codings::new() };
        let codings_key = Coding::key(&codings);
        let conditions = Conditions::from_headers(get, req.headers);
        // Only paths that passed every check below were ever stored.
        let answer = match self.memo.usable(req.site_path, codings_key) {
            Some(hit) => Ok(from_memory(&hit, &conditions)),
            None => {
                let Ok(segs) = lookup::segments(req.site_path, self.spec.allow_dotfiles) else {
                    return text(StatusCode::NOT_FOUND);
                };
                let job = Job { site: self, segs, site_path: req.site_path, codings, codings_key, conditions };
                job.run()
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => return io_error(&self.spec, req.site_path, &e),
        };
        match answer {
            Answer::NotFound => text(StatusCode::NOT_FOUND),
            Answer::AddSlash => add_slash(req.client_path, req.query),
            Answer::File { head, body } => {
                let body = match body {
                    Body::Empty => ResponseBody::empty(),
                    Body::Bytes(b, None) => ResponseBody::full(b),
                    Body::Bytes(b, sendable) => ResponseBody::File { body: StaticBody::memory(b, sendable) },
                    Body::Stream { file, offset, len } => {
                        ResponseBody::File { body: StaticBody::file(file, offset, len) }
                    }
                };
                let (parts, ()) = head.into_parts();
                Response::from_parts(parts, body)
            }
        }
    }
}

/// What a file answers with, whatever the request's conditions: made
/// once per version of the file and kept in the [`memo`].
pub struct Representation {
    validators: Validators,
    /// Every header of the whole file's 200 (a request without
    /// conditions gets a copy: cheaper than inserting each).
    whole: HeaderMap,
    len: u64,
}

impl Representation {
    fn of(spec: &StaticSpec, found: &lookup::Found) -> io::Result<Self> {
        let len = found.meta.len();
        let validators = Validators::new(found.meta.modified()?, len, found.coding.map(Coding::token));
        let mut h = HeaderMap::with_capacity(8);
        h.insert(header::ETAG, header_value(&validators.etag));
        h.insert(header::LAST_MODIFIED, header_value(&validators.last_modified()));
        if let Some(rule) = spec.cache_control.iter().find(|r| r.pattern.matches(&found.site_path)) {
            h.insert(header::CACHE_CONTROL, rule.value.clone());
        }
        if spec.precompressed {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime::content_type(&found.site_path)));
        if let Some(c) = found.coding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c.token()));
        }
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        Ok(Representation { validators, whole: h, len })
    }

    /// The head of the answer to `conditions`, and the bytes it sends
    /// (offset, count) if any.
    fn head(&self, conditions: &Conditions) -> (Response<()>, Option<(u64, u64)>) {
        let len = self.len;
        let mut head = Response::new(());
        let decision =
            if conditions.any() { conditional::decide(conditions, &self.validators, len) } else { Decision::Full };
        let (status, range) = match decision {
            Decision::NotModified => (StatusCode::NOT_MODIFIED, None),
            Decision::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, None),
            Decision::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, None),
            Decision::Full => (StatusCode::OK, Some((0, len))),
            Decision::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, Some((start, end - start + 1))),
        };
        *head.status_mut() = status;
        *head.headers_mut() = match range {
            Some(_) => self.whole.clone(),
            // Without a body: the validators and caching headers only; a
            // 412 or 416 answers this request, not the file, so it takes no
            // `cache_control` rule (nginx's `expires` skips them too) that a
            // cache or browser would keep it by.
            None => {
                let caching = status == StatusCode::NOT_MODIFIED;
                [header::ETAG, header::LAST_MODIFIED, header::CACHE_CONTROL, header::VARY]
                    .into_iter()
                    .filter(|name| caching || *name != header::CACHE_CONTROL)
                    .filter_map(|name| Some((name.clone(), self.whole.get(&name)?.clone())))
                    .collect()
            }
        };
        let h = head.headers_mut();
        match decision {
            Decision::Unsatisfiable => {
                h.insert(header::CONTENT_RANGE, header_value(&format!("bytes */{len}")));
            }
            Decision::Partial { start, end } => {
                h.insert(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{end}/{len}")));
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            }
            _ => {}
        }
        let sends = conditions.get && range.is_some_and(|(_, count)| count > 0);
        (head, range.filter(|_| sends))
    }
}

/// The answer from a file's bytes in memory (and its descriptor, if kept).
fn from_memory(entry: &memo::Entry, conditions: &Conditions) -> Answer {
    let (head, range) = entry.rep.head(conditions);
    let body = match range {
        Some((start, count)) => {
            let sendable = entry.file.as_ref().map(|f| Sendable { file: Arc::clone(f), offset: start, len: count });
            Body::Bytes(entry.body.slice(start as usize..(start + count) as usize), sendable)
        }
        None => Body::Empty,
    };
    Answer::File { head, body }
}

/// The file-system part of one request.
struct Job<'a> {
    site: &'a StaticSite,
    segs: Vec<OsString>,
    site_path: &'a str,
    codings: Codings,
    codings_key: u8,
    conditions: Conditions,
}

enum Answer {
    NotFound,
    AddSlash,
    File { head: Response<()>, body: Body },
}

enum Body {
    Empty,
    /// The bytes, and the same as a file range when the file is kept open.
    Bytes(Bytes, Option<Sendable>),
    /// The file, whose bytes from `offset` are sent.
    Stream {
        file: Arc<std::fs::File>,
        offset: u64,
        len: u64,
    },
}

impl Job<'_> {
    fn run(self) -> io::Result<Answer> {
        let spec = &self.site.spec;
        let found = match lookup::find(spec, &self.segs, self.site_path, &self.codings)? {
            Lookup::Found(f) => f,
            Lookup::NotFound => return Ok(Answer::NotFound),
            Lookup::AddSlash => return Ok(Answer::AddSlash),
        };
        let identity = memo::Identity::of(&found.meta);
        let memo = &self.site.memo;
        if let Some(known) = memo.get(self.site_path, self.codings_key).filter(|e| e.identity == identity) {
            known.confirmed();
            return Ok(from_memory(&known, &self.conditions));
        }
        let rep = Representation::of(spec, &found)?;
        let found_path = found.path;
        let mut file = found.file;
        if rep.len <= memo::MAX_FILE {
            let body = read_exactly(&mut file, rep.len)?;
            let file = (rep.len >= memo::KEEP_OPEN_FROM).then(|| Arc::new(file));
            let entry = memo::Entry::new(rep, identity, body, file, found_path);
            let answer = from_memory(&entry, &self.conditions);
            memo.insert(self.site_path, self.codings_key, entry);
            return Ok(answer);
        }
        let (head, range) = rep.head(&self.conditions);
        let Some((start, count)) = range else {
            return Ok(Answer::File { head, body: Body::Empty });
        };
        if count <= CHUNK as u64 {
            if start > 0 {
                file.seek(SeekFrom::Start(start))?;
            }
            return Ok(Answer::File { head, body: Body::Bytes(read_exactly(&mut file, count)?, None) });
        }
        Ok(Answer::File { head, body: Body::Stream { file: Arc::new(file), offset: start, len: count } })
    }
}

/// `count` bytes from the file's position, all of them.
fn read_exactly(file: &mut std::fs::File, count: u64) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(count as usize);
    file.take(count).read_to_end(&mut buf)?;
    if buf.len() as u64 != count {
        // The file shrank under us: an answer shorter than its
        // Content-Length would hang the client.
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while read"));
    }
    Ok(Bytes::from(buf))
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
        // The directory was replaced by a file: as missing (nginx: 404).
        io::ErrorKind::NotADirectory => {
            tracing::warn!(dir = %spec.root.display(), error = %e, "static directory is not a directory");
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
