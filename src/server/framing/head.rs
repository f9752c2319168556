//! The guard's reading of a request head: the request line (`CONNECT`,
//! the HTTP/2 preface) and the `Content-Length`, `Transfer-Encoding` and
//! `Upgrade` lines, a line at a time across reads; other lines are
//! skipped with `memchr`.

use memchr::memchr;

use super::{RequestFraming, State};

/// What the head so far said about its framing.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Head {
    /// The request line has begun (empty lines before it are skipped).
    pub(super) started: bool,
    /// `Content-Length` lines, and the last one's value if it is one.
    pub(super) lengths: u8,
    pub(super) length: Option<u64>,
    /// `Transfer-Encoding` lines, and whether the last one ends in chunked
    /// (as hyper reads it).
    pub(super) codings: u8,
    pub(super) chunked: bool,
    /// `CONNECT`, or an `Upgrade` line.
    pub(super) upgrade: bool,
}

/// The header lines the guard reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Length,
    Coding,
    Upgrade,
}

impl Field {
    fn name(self) -> &'static [u8] {
        match self {
            Field::Length => b"content-length",
            Field::Coding => b"transfer-encoding",
            Field::Upgrade => b"upgrade",
        }
    }
}

/// Where the guard is in the current line of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// At its first byte.
    Start,
    /// It began with CR (an empty line, if LF follows).
    Cr,
    /// Nothing more to learn from it: on to its end.
    Skip,
    /// The request line: this many bytes matched `CONNECT ` and/or the
    /// HTTP/2 preface.
    Method { at: u8, connect: bool, preface: bool },
    /// A header name that may be `field`'s: `at` bytes matched.
    Name { field: Field, at: u8 },
    /// A `Content-Length` value.
    Length { value: u64, digits: bool, after: bool, bad: bool },
    /// A `Transfer-Encoding` value: how its last coding matches `chunked`.
    Coding { last: Coding, bad: bool },
}

/// The last coding of a `Transfer-Encoding` value against `chunked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    /// Before it (at the start, or after a comma and spaces).
    Before,
    /// This many bytes of `chunked` matched.
    At(u8),
    /// `chunked`, then spaces.
    After,
    /// Something else.
    Other,
}

const CONNECT: &[u8] = b"CONNECT ";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r";
const CHUNKED: &[u8] = b"chunked";

impl RequestFraming {
    /// Bytes of a head, from `pos`, up to its end or the buffer's. `Ok`
    /// with where it stopped; `Err` with how many bytes to hand on when
    /// the head is refused.
    pub(super) fn head(&mut self, buf: &mut [u8], mut pos: usize) -> Result<usize, usize> {
        // The line's state stays local while the loop runs (the hot path:
        // a whole head in one read, most lines skipped).
        let mut line = self.line;
        while pos < buf.len() {
            if let Line::Skip = line {
                let Some(i) = memchr(b'\n', &buf[pos..]) else {
                    self.line = line;
                    return Ok(buf.len());
                };
                pos += i + 1;
                line = Line::Start;
                continue;
            }
            let b = buf[pos];
            pos += 1;
            if b == b'\n' {
                self.end_line(line);
                let empty = matches!(line, Line::Start | Line::Cr);
                line = Line::Start;
                if empty && self.head.started {
                    self.line = line;
                    return self.end_head(buf, pos - 1).map(|()| pos);
                }
                continue;
            }
            line = match line {
                Line::Start if b == b'\r' => Line::Cr,
                Line::Start if !self.head.started => {
                    self.head.started = true;
                    self.method(0, true, true, b)
                }
                Line::Start => match b | 0x20 {
                    b'c' => Line::Name { field: Field::Length, at: 1 },
                    b't' => Line::Name { field: Field::Coding, at: 1 },
                    b'u' => Line::Name { field: Field::Upgrade, at: 1 },
                    _ => Line::Skip,
                },
                Line::Cr => {
                    // Not an empty line: hyper refuses it.
                    self.head.started = true;
                    Line::Skip
                }
                Line::Method { at, connect, preface } => self.method(at, connect, preface, b),
                Line::Name { field, at } => {
                    let name = field.name();
                    match name.get(usize::from(at)) {
                        Some(&c) if b.to_ascii_lowercase() == c => Line::Name { field, at: at + 1 },
                        None if b == b':' => match field {
                            Field::Length => Line::Length { value: 0, digits: false, after: false, bad: false },
                            Field::Coding => Line::Coding { last: Coding::Before, bad: false },
                            Field::Upgrade => {
                                self.head.upgrade = true;
                                Line::Skip
                            }
                        },
                        _ => Line::Skip,
                    }
                }
                Line::Length { value, digits, after, bad } => length_byte(value, digits, after, bad, b),
                Line::Coding { last, bad } => Line::Coding {
                    last: coding_byte(last, b),
                    // hyper reads a value with other bytes as no coding at all.
                    bad: bad || !(b == b'\t' || b == b'\r' || (0x20..0x7f).contains(&b)),
                },
                Line::Skip => Line::Skip,
            };
            if matches!(self.state, State::PassThrough) {
                self.line = line;
                return Ok(pos);
            }
        }
        self.line = line;
        Ok(pos)
    }

    /// The next byte of the request line.
    fn method(&mut self, at: u8, connect: bool, preface: bool, b: u8) -> Line {
        let i = usize::from(at);
        let connect = connect && CONNECT.get(i) == Some(&b);
        let preface = preface && PREFACE.get(i) == Some(&b);
        if connect && i + 1 == CONNECT.len() {
            self.head.upgrade = true;
            return Line::Skip;
        }
        if preface && i + 1 == PREFACE.len() {
            // HTTP/2 with prior knowledge, served by hyper-util's auto builder.
            self.state = State::PassThrough;
            return Line::Skip;
        }
        if connect || preface {
            Line::Method { at: at + 1, connect, preface }
        } else {
            Line::Skip
        }
    }

    /// A line of the head ended: keep what its value said.
    fn end_line(&mut self, line: Line) {
        match line {
            Line::Length { value, digits, bad, .. } => {
                self.head.lengths = self.head.lengths.saturating_add(1);
                self.head.length = (digits && !bad).then_some(value);
            }
            Line::Coding { last, bad } => {
                self.head.codings = self.head.codings.saturating_add(1);
                self.head.chunked = !bad && matches!(last, Coding::At(7) | Coding::After);
            }
            _ => {}
        }
    }
}

/// The next byte of a `Content-Length` value: digits between optional
/// spaces (a CR before the LF is the line's end).
fn length_byte(value: u64, digits: bool, after: bool, bad: bool, b: u8) -> Line {
    match b {
        b' ' | b'\t' | b'\r' => Line::Length { value, digits, after: digits, bad },
        b'0'..=b'9' if !after => match value.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))) {
            Some(value) => Line::Length { value, digits: true, after, bad },
            None => Line::Length { value, digits, after, bad: true },
        },
        _ => Line::Length { value, digits, after, bad: true },
    }
}

/// The next byte of a `Transfer-Encoding` value, for whether its last
/// coding is `chunked` (hyper: the text after the last comma, trimmed).
fn coding_byte(last: Coding, b: u8) -> Coding {
    match (last, b) {
        (_, b',') => Coding::Before,
        (Coding::Before, b' ' | b'\t' | b'\r') => Coding::Before,
        (Coding::At(7) | Coding::After, b' ' | b'\t' | b'\r') => Coding::After,
        (Coding::Before, b) if b.eq_ignore_ascii_case(&b'c') => Coding::At(1),
        (Coding::At(n), b) if CHUNKED.get(usize::from(n)) == Some(&b.to_ascii_lowercase()) => Coding::At(n + 1),
        _ => Coding::Other,
    }
}
