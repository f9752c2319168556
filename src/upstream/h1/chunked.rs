//! `Transfer-Encoding: chunked` responses, decoded from the read buffer:
//! chunk data leaves as slices of it, sizes and trailers are bounded, and
//! the trailers are read and dropped.

use bytes::{Buf, Bytes, BytesMut};

use super::ProtocolError;

/// The longest chunk-size line (size plus extensions) accepted.
pub(super) const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes accepted (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// What the chunked decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer ends mid-way: read more.
    NeedMore,
    /// The last chunk and the trailers are consumed.
    Done,
}

/// Decodes `Transfer-Encoding: chunked` from a read buffer, handing out
/// chunk data as slices of it (no copy).
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else { return Ok(Decoded::NeedMore) };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => match &buf[..] {
                    [b'\r', b'\n', ..] => {
                        buf.advance(2);
                        self.state = ChunkState::Size;
                    }
                    [b'\n', ..] => {
                        buf.advance(1);
                        self.state = ChunkState::Size;
                    }
                    [] | [b'\r'] => return Ok(Decoded::NeedMore),
                    _ => return Err(ProtocolError::BadChunk),
                },
                ChunkState::Trailers => {
                    let Some(line) = take_line(buf, MAX_TRAILERS)? else { return Ok(Decoded::NeedMore) };
                    self.trailer_bytes += line.len();
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(ProtocolError::BadChunk);
                    }
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// Remove one line (without its CRLF or LF) from the front of `buf`.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, ProtocolError> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > max { Err(ProtocolError::BadChunk) } else { Ok(None) };
    };
    if lf > max {
        return Err(ProtocolError::BadChunk);
    }
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf);
    if line.last() == Some(&b'\r') {
        line.truncate(lf - 1);
    }
    Ok(Some(line))
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ProtocolError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ProtocolError::BadChunk);
    }
    // After the size: nothing, or whitespace / extensions (";name=value").
    match line.get(digits) {
        None | Some(b';' | b' ' | b'\t') => {}
        Some(_) => return Err(ProtocolError::BadChunk),
    }
    let mut size = 0u64;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0) as u64;
        size = (size << 4) | v;
    }
    Ok(size)
}
