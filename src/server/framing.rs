//! The request framing guard: what an HTTP/1 client sends, followed
//! message by message below hyper, so that two framings hyper's parser
//! would quietly settle are refused instead.
//!
//! hyper settles `Content-Length` together with `Transfer-Encoding` (in
//! either order: the length is dropped and the body read as chunked) and
//! two equal `Content-Length` lines (one is kept) inside its parser, so
//! the request the proxy's service gets carries one framing and the
//! service's own check (`proxy::framing`) cannot see that the client sent
//! two. A backend, or another proxy on the way, that reads the other
//! framing would disagree about where the request ends: request smuggling.
//! RFC 9112 6.3 lets a server refuse both; we do, with 400 and the
//! connection closed, and nothing of the request reaches an upstream.
//!
//! [`RequestFraming`] is a pure state machine over the bytes the client
//! sends, in the order hyper reads them: a request head (up to its empty
//! line, `\r\n` or a bare `\n`, across reads, leading empty lines skipped
//! as hyper does), then the body its framing announces (`Content-Length`
//! bytes counted down, or chunked framing followed as hyper's decoder
//! reads it: size, extensions, data, CRLF, last chunk, trailers), then the
//! next head. In a head it looks only at lines named `Content-Length`,
//! `Transfer-Encoding` and `Upgrade` (a first-byte test, then the name;
//! other lines are skipped with `memchr`), and keeps no bytes: a head of
//! any length costs a few counters, and hyper's `max_header_bytes` still
//! refuses a long one.
//!
//! How a head is refused: the guard overwrites the byte that ends it (the
//! last `\n` of the empty line, always in the read being judged) with a
//! NUL, hands hyper nothing of what followed, then [`REFUSAL_TAIL`] (an
//! empty line: hyper looks for the end of a head before it parses one that
//! came in several reads), then nothing at all. hyper's parser finds the
//! NUL where an empty line or a header name must be, a parse error (also
//! with hyper's `ignore_invalid_headers`), so hyper answers the head, as
//! any malformed one, with 400 and closes the connection. This is exact
//! with pipelining: the refusal sits in the byte stream at the refused
//! head, so the requests before it are served and nothing after it is
//! read. (The alternative, telling the service "the Nth request is
//! refused", would depend on counting requests the same way on both
//! sides.)
//!
//! It stops judging (passes everything through for the rest of the
//! connection) after a head that may turn the connection into something
//! else (`CONNECT`, an `Upgrade` line: the bytes after it may be a
//! tunnel's), after the HTTP/2 preface (hyper-util's auto builder serves
//! it), and at framing hyper refuses itself (a bad length or chunk size, a
//! transfer coding other than chunked), where hyper closes the connection
//! anyway. After an upgrade request that gets no 101, the service closes
//! the connection behind its answer (`service.rs`), so nothing unjudged is
//! read; after a framing hyper refuses, hyper closes it.
//!
//! HTTP/2 frames its own messages and is not guarded; TLS connections are,
//! on the decrypted bytes. `head.rs` reads heads, `chunked.rs` follows
//! chunked bodies, `io.rs` wraps the stream hyper reads
//! (`lifecycle.rs` puts it under every HTTP/1 connection, and carries the
//! guard across the hyper connections a parked one goes through).

mod chunked;
mod head;
pub(super) mod io;

use chunked::Chunk;
use head::{Head, Line};

/// Where the guard is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a request head, or before one.
    Head,
    /// In a body of known length: this many bytes to go.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Not judging any more (see the module doc).
    PassThrough,
    /// A head (or a chunked body's trailer section, `chunked.rs`) was
    /// refused: only the rest of [`REFUSAL_TAIL`] (from this offset) is
    /// handed on.
    Refused(u8),
}

/// What hyper is handed after a refused head's altered last byte.
pub const REFUSAL_TAIL: &[u8] = b"\r\n\r\n";

/// The request framing guard of one HTTP/1 client connection (see the
/// module doc).
#[derive(Debug, Clone)]
pub struct RequestFraming {
    state: State,
    head: Head,
    line: Line,
    /// Chunk extension bytes in the current body.
    extensions: u64,
    /// Bytes of the head in progress seen so far.
    head_bytes: usize,
    /// `max_header_bytes`: see [`Self::read_limit`].
    max_head: usize,
}

impl Default for RequestFraming {
    /// A guard that limits no read.
    fn default() -> Self {
        RequestFraming::new(usize::MAX)
    }
}

impl RequestFraming {
    pub fn new(max_head: usize) -> Self {
        RequestFraming {
            state: State::Head,
            head: Head::default(),
            line: Line::Start,
            extensions: 0,
            head_bytes: 0,
            max_head,
        }
    }

    /// How many bytes the next read may bring while a head is read:
    /// `max_header_bytes` less what hyper holds of the head already (at
    /// least one: a read of none would be the end of the stream). hyper
    /// refuses a head (431) only when its buffer has reached `max_buf_size`
    /// without a whole one, and one read may bring a whole head larger than
    /// that (its reads grow to `max_buf_size` each): heads up to twice the
    /// limit went through on a connection's later requests.
    pub fn read_limit(&self) -> Option<usize> {
        (matches!(self.state, State::Head) && self.max_head < usize::MAX)
            .then(|| self.max_head.saturating_sub(self.head_bytes).max(1))
    }

    /// Judge the next bytes the client sent, as read. Returns how many of
    /// them may be handed on: all, unless a head was refused (then its
    /// last byte was overwritten, and only [`Self::take_tail`] may follow).
    pub fn feed(&mut self, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            match self.state {
                State::Head => match self.head(buf, pos) {
                    Ok(next) => {
                        // A head that ended here was taken: its count too.
                        self.head_bytes = if self.head.started { self.head_bytes + (next - pos) } else { 0 };
                        pos = next;
                    }
                    Err(keep) => return keep,
                },
                State::Length(rest) => {
                    let n = rest.min((buf.len() - pos) as u64);
                    pos += n as usize;
                    self.state = if n == rest { State::Head } else { State::Length(rest - n) };
                }
                State::Chunked(chunk) => match self.chunked(chunk, buf, pos) {
                    Ok(next) => pos = next,
                    Err(keep) => return keep,
                },
                State::PassThrough => return buf.len(),
                State::Refused(_) => return 0,
            }
        }
        buf.len()
    }

    /// Whether a head was refused.
    pub fn refused(&self) -> bool {
        matches!(self.state, State::Refused(_))
    }

    /// After a refused head: the next bytes of [`REFUSAL_TAIL`] to hand
    /// on, at most `room`, taken; empty when all are (or none is due).
    pub fn take_tail(&mut self, room: usize) -> &'static [u8] {
        let State::Refused(at) = self.state else { return &[] };
        let from = usize::from(at).min(REFUSAL_TAIL.len());
        let to = from + room.min(REFUSAL_TAIL.len() - from);
        self.state = State::Refused(to as u8);
        &REFUSAL_TAIL[from..to]
    }

    /// Whether the client was in the middle of a request the server did
    /// not read to its end: a body (or a head) begun and not finished, or
    /// a refused head with whatever followed it. Closing such a connection
    /// at once would reset it under the client's writes (`linger.rs`).
    pub fn mid_request(&self) -> bool {
        match self.state {
            State::Head => self.head.started,
            State::Length(_) | State::Chunked(_) | State::Refused(_) | State::PassThrough => true,
        }
    }

    /// Whether the guard stopped judging.
    pub fn passing_through(&self) -> bool {
        matches!(self.state, State::PassThrough)
    }

    /// Between two requests (nothing of the next one seen yet).
    pub fn between_requests(&self) -> bool {
        matches!((self.state, self.line), (State::Head, Line::Start)) && !self.head.started
    }

    /// A head ended at `at` (its last byte): refuse it, or follow its body.
    fn end_head(&mut self, buf: &mut [u8], at: usize) -> Result<(), usize> {
        let head = std::mem::take(&mut self.head);
        if head.lengths > 1 || (head.lengths > 0 && head.codings > 0) {
            buf[at] = 0;
            self.state = State::Refused(0);
            return Err(at + 1);
        }
        self.state = if head.upgrade {
            State::PassThrough
        } else if head.codings > 0 {
            if head.chunked {
                self.extensions = 0;
                State::Chunked(Chunk::Start)
            } else {
                State::PassThrough
            }
        } else if head.lengths > 0 {
            match head.length {
                Some(0) => State::Head,
                // hyper refuses `u64::MAX` as a length.
                Some(n) if n < u64::MAX => State::Length(n),
                _ => State::PassThrough,
            }
        } else {
            State::Head
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
