//! Following a chunked request body as hyper's decoder reads it (size,
//! extensions, data, CRLF, last chunk, trailers), so the guard knows where
//! the next head starts.

use super::{RequestFraming, State};

/// Where a chunked body is, as hyper's decoder names its states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

/// hyper's limit on the bytes of chunk extensions in one body.
const CHUNK_EXTENSIONS_LIMIT: u64 = 16 * 1024;

impl RequestFraming {
    /// Bytes of a chunked body, from `pos`, as hyper's decoder reads them;
    /// where it stopped. What hyper's decoder refuses ends judging.
    ///
    /// One thing hyper reads and is refused here: a bare LF after the last
    /// chunk or in a trailer line. hyper's decoder ends a trailer line only
    /// at CRLF, so `0\r\n\nGET /x ...\r\n` made the next request a trailer
    /// of this one, where nginx (RFC 9112 2.2 lets a recipient take a bare
    /// LF as a line's end) ends the body and serves that request: two
    /// readings of where a message ends. The LF becomes a CR and the
    /// refusal's tail follows, which hyper's decoder refuses (a CR where
    /// the line's LF must be): the body fails and the connection closes.
    /// `Err`: how many bytes of `buf` may be handed on.
    pub(super) fn chunked(&mut self, mut chunk: Chunk, buf: &mut [u8], mut pos: usize) -> Result<usize, usize> {
        while pos < buf.len() {
            if let Chunk::Data(rest) = chunk {
                let n = rest.min((buf.len() - pos) as u64);
                pos += n as usize;
                chunk = if n == rest { Chunk::DataCr } else { Chunk::Data(rest - n) };
                continue;
            }
            let b = buf[pos];
            pos += 1;
            let next = match (chunk, b) {
                (Chunk::Start, b) => hex(b).map(Chunk::Size),
                (Chunk::Size(n), b) => match hex(b) {
                    Some(d) => n.checked_mul(16).and_then(|n| n.checked_add(d)).map(Chunk::Size),
                    None => size_end(n, b),
                },
                (Chunk::SizeLws(n), b) => size_end(n, b),
                (Chunk::Extension(n), b'\r') => Some(Chunk::SizeLf(n)),
                (Chunk::Extension(_), b'\n') => None,
                (Chunk::Extension(n), _) => {
                    self.extensions += 1;
                    (self.extensions < CHUNK_EXTENSIONS_LIMIT).then_some(Chunk::Extension(n))
                }
                (Chunk::SizeLf(0), b'\n') => Some(Chunk::EndCr),
                (Chunk::SizeLf(n), b'\n') => Some(Chunk::Data(n)),
                (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
                (Chunk::DataLf, b'\n') => Some(Chunk::Start),
                (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
                (Chunk::EndCr | Chunk::Trailer, b'\n') => {
                    buf[pos - 1] = b'\r';
                    self.state = State::Refused(0);
                    return Err(pos);
                }
                (Chunk::EndCr, _) | (Chunk::Trailer, _) if b != b'\r' => Some(Chunk::Trailer),
                (Chunk::Trailer, _) => Some(Chunk::TrailerLf),
                (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
                (Chunk::EndLf, b'\n') => {
                    self.state = State::Head;
                    return Ok(pos);
                }
                _ => None,
            };
            match next {
                Some(next) => chunk = next,
                None => {
                    self.state = State::PassThrough;
                    return Ok(buf.len());
                }
            }
        }
        self.state = State::Chunked(chunk);
        Ok(pos)
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// After a chunk size's digits: spaces, extensions or the line's end.
fn size_end(n: u64, b: u8) -> Option<Chunk> {
    match b {
        b' ' | b'\t' => Some(Chunk::SizeLws(n)),
        b';' => Some(Chunk::Extension(n)),
        b'\r' => Some(Chunk::SizeLf(n)),
        _ => None,
    }
}
