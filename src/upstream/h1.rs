//! HTTP/1.1 towards upstream servers, as bytes: writing a request head,
//! parsing a response head, and cutting a response body out of the read
//! buffer by its framing (Content-Length, chunked in `chunked`, until
//! close). Pure functions over buffers, tested here; the sockets live in
//! `client`.
//!
//! Parsing is httparse's (the parser hyper uses). Header values are slices
//! of the frozen head, so a response head costs one `HeaderMap` and no copy
//! of its bytes.

use std::fmt;
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// The longest response head accepted (nginx's default buffers give 4-8 KiB;
/// below 64 KiB so header offsets fit in a u16).
pub const MAX_HEAD: usize = 64 * 1024 - 1;
/// The most response headers accepted (hyper's default too).
const MAX_HEADERS: usize = 100;

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body. `content_length_zero` says whether to say so explicitly.
    Empty {
        content_length_zero: bool,
    },
    Length(u64),
    Chunked,
}

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// The upstream's reason phrase, kept for a code that has no standard
    /// one (`520 Origin Error`), which hyper would write as `<none>`.
    pub reason: Option<hyper::ext::ReasonPhrase>,
    pub headers: HeaderMap,
    pub framing: ResponseFraming,
    /// The server allows another request on this connection afterwards.
    pub keep_alive: bool,
}

/// The upstream broke HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    Head(httparse::Error),
    HeadTooLarge,
    BadStatus(u16),
    BadContentLength,
    BadChunk,
    /// A transfer coding other than a single `chunked` (`gzip`, `gzip,
    /// chunked`): its body would reach the client still encoded, with the
    /// header that says so removed (it is hop-by-hop). nginx refuses these
    /// too.
    UnsupportedTransferCoding,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Head(e) => write!(f, "invalid response head: {e}"),
            ProtocolError::HeadTooLarge => write!(f, "response head larger than {MAX_HEAD} bytes"),
            ProtocolError::BadStatus(s) => write!(f, "invalid status code {s}"),
            ProtocolError::BadContentLength => f.write_str("invalid or conflicting Content-Length"),
            ProtocolError::BadChunk => f.write_str("invalid chunked encoding"),
            ProtocolError::UnsupportedTransferCoding => f.write_str("transfer coding other than chunked"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Write `METHOD path HTTP/1.1`, the headers, the `extra` lines (name and
/// value, valid as such), and the body framing into `out`. `headers` must
/// already be free of hop-by-hop headers (but may carry `Connection:
/// upgrade` + `Upgrade`); any `Content-Length` or `Transfer-Encoding` in it
/// is replaced by `framing`.
pub fn encode_request_head(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    extra: &[(&str, &[u8])],
    framing: RequestFraming,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Empty { content_length_zero: false } => {}
        RequestFraming::Empty { content_length_zero: true } => out.extend_from_slice(b"content-length: 0\r\n"),
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The size line that starts a chunk of `len` bytes.
pub fn chunk_header(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// Parse a response head from the front of `buf`. `Ok(None)`: not all of
/// it has arrived yet. On success the head's bytes are removed from `buf`;
/// what follows (body, or the next protocol after a 101) stays.
pub fn parse_response_head(buf: &mut BytesMut, request_method: &Method) -> Result<Option<ResponseHead>, ProtocolError> {
    // Uninitialised slots: zeroing 100 of them would cost more than parsing.
    // The default config refuses obs-fold, which `checked_value` relies on.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let head_len =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
            Ok(httparse::Status::Complete(_)) => return Err(ProtocolError::HeadTooLarge),
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(ProtocolError::HeadTooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::HeadTooLarge),
            Err(e) => return Err(ProtocolError::Head(e)),
        };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| ProtocolError::BadStatus(code))?;
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let reason = match (status.canonical_reason(), parsed.reason) {
        (None, Some(reason)) if !reason.is_empty() => hyper::ext::ReasonPhrase::try_from(reason.as_bytes()).ok(),
        _ => None,
    };

    // Where each header sits in the head, so the values can be slices of
    // the frozen head instead of copies. u16 offsets: a head is < 64 KiB.
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
    let n = parsed.headers.len();
    for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
        let name_at = h.name.as_ptr() as usize - base;
        let value_at = h.value.as_ptr() as usize - base;
        *span = (name_at as u16, h.name.len() as u16, value_at as u16, h.value.len() as u16);
    }
    let head = buf.split_to(head_len).freeze();

    let mut headers = HeaderMap::with_capacity(n);
    let mut content_length: Option<u64> = None;
    let mut bad_length = false;
    // Transfer codings named, over all Transfer-Encoding lines, and whether
    // each was `chunked`.
    let mut codings = 0usize;
    let mut chunked = true;
    let mut has_transfer_encoding = false;
    let mut close = version == Version::HTTP_10;
    for &(name_at, name_len, value_at, value_len) in &spans[..n] {
        let (name_at, name_len, value_at, value_len) =
            (name_at as usize, name_len as usize, value_at as usize, value_len as usize);
        let raw_name = &head[name_at..name_at + name_len];
        let name = match common_response_name(raw_name) {
            Some(name) => name,
            None => HeaderName::from_bytes(raw_name).map_err(|_| ProtocolError::Head(httparse::Error::HeaderName))?,
        };
        let value = checked_value(head.slice(value_at..value_at + value_len))?;
        if name == header::CONTENT_LENGTH {
            match (parse_length(value.as_bytes()), content_length) {
                (Some(v), None) => content_length = Some(v),
                (Some(v), Some(prev)) if v == prev => {}
                _ => bad_length = true,
            }
        } else if name == header::TRANSFER_ENCODING {
            has_transfer_encoding = true;
            for coding in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if !coding.is_empty() {
                    codings += 1;
                    chunked &= coding.eq_ignore_ascii_case(b"chunked");
                }
            }
        } else if name == header::CONNECTION {
            let mut only_persistence = true;
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else {
                    only_persistence = false;
                }
            }
            // Said all it had to say to this connection: the proxy would
            // strip it anyway (most upstreams send `Connection: keep-alive`
            // on every answer). One naming headers or an upgrade stays.
            if only_persistence {
                continue;
            }
        }
        headers.append(name, value);
    }

    let bodiless = *request_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        ResponseFraming::Empty
    } else if has_transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112 6.3); such a
        // message may be an attempt at smuggling, so never reuse after it.
        // An HTTP/1.0 message cannot be chunked (RFC 9112 6.1): one that
        // says so is framed as chunked and the connection closed after it.
        if content_length.is_some() || bad_length || version == Version::HTTP_10 {
            close = true;
            headers.remove(header::CONTENT_LENGTH);
        }
        if !chunked || codings != 1 {
            return Err(ProtocolError::UnsupportedTransferCoding);
        }
        ResponseFraming::Chunked
    } else if bad_length {
        return Err(ProtocolError::BadContentLength);
    } else if let Some(n) = content_length {
        ResponseFraming::Length(n)
    } else {
        ResponseFraming::UntilClose
    };
    let keep_alive = !close && framing != ResponseFraming::UntilClose && status != StatusCode::SWITCHING_PROTOCOLS;
    Ok(Some(ResponseHead { status, reason, headers, framing, keep_alive }))
}

/// The names upstreams put on most answers, as they spell them (nginx,
/// Apache and most frameworks capitalise; Node and Go's HTTP/2 bridges
/// write lower case). `HeaderName::from_bytes` lowercases a name into a
/// scratch buffer and then looks it up, about 100 instructions a header;
/// comparing against a spelling of the same length is a few. Anything else
/// takes the general path.
fn common_response_name(name: &[u8]) -> Option<HeaderName> {
    let known = match name.len() {
        4 => match name {
            b"Date" | b"date" => header::DATE,
            b"ETag" | b"etag" => header::ETAG,
            b"Vary" | b"vary" => header::VARY,
            _ => return None,
        },
        6 => match name {
            b"Server" | b"server" => header::SERVER,
            _ => return None,
        },
        7 => match name {
            b"Expires" | b"expires" => header::EXPIRES,
            _ => return None,
        },
        8 => match name {
            b"Location" | b"location" => header::LOCATION,
            _ => return None,
        },
        10 => match name {
            b"Connection" | b"connection" => header::CONNECTION,
            b"Set-Cookie" | b"set-cookie" => header::SET_COOKIE,
            _ => return None,
        },
        12 => match name {
            b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
            _ => return None,
        },
        13 => match name {
            b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
            b"Accept-Ranges" | b"accept-ranges" => header::ACCEPT_RANGES,
            b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
            _ => return None,
        },
        14 => match name {
            b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
            _ => return None,
        },
        16 => match name {
            b"Content-Encoding" | b"content-encoding" => header::CONTENT_ENCODING,
            _ => return None,
        },
        17 => match name {
            b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
            _ => return None,
        },
        _ => return None,
    };
    Some(known)
}

/// A header value httparse has already checked, with a word-at-a-time ASCII
/// scan instead of http's check of each byte (`from_maybe_shared`: about 3
/// instructions a byte, 400 for a typical answer's head). Values with bytes
/// above 0x7F (obs-text) take the checked path.
///
/// Only for a slice httparse returned as a header value, with obs-fold
/// refused (its default, as `parse_response_head` uses it): given other
/// bytes, a CR or LF would pass into the answer written to the client.
#[allow(unsafe_code)]
fn checked_value(value: Bytes) -> Result<HeaderValue, ProtocolError> {
    if value.is_ascii() {
        // SAFETY: the function's contract is valid UTF-8, which ASCII is.
        // Beyond memory safety, the bytes are valid in a header value:
        // httparse, with obs-fold refused, accepts in a value exactly what
        // `HeaderValue` allows (HTAB, 0x20-0x7E, 0x80-0xFF; no CR, LF, DEL
        // or other controls).
        // `every_byte_httparse_accepts_in_a_value_is_valid_in_a_header_value`
        // holds it to that, and debug builds check each value anyway.
        Ok(unsafe { HeaderValue::from_maybe_shared_unchecked(value) })
    } else {
        HeaderValue::from_maybe_shared(value).map_err(|_| ProtocolError::Head(httparse::Error::HeaderValue))
    }
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

mod chunked;
pub use chunked::{ChunkedDecoder, Decoded};

#[cfg(test)]
mod tests;
