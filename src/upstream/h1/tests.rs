use super::chunked::MAX_CHUNK_LINE;
use super::*;

fn parse(raw: &str, method: Method) -> Result<Option<ResponseHead>, ProtocolError> {
    parse_response_head(&mut BytesMut::from(raw), &method)
}

#[test]
fn request_head_carries_headers_and_the_framing() {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("example.com"));
    h.append("x-a", HeaderValue::from_static("1"));
    h.append("x-a", HeaderValue::from_static("2"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    let mut out = Vec::new();
    let extra: &[(&str, &[u8])] = &[("x-real-ip", b"10.0.0.1")];
    encode_request_head(&Method::POST, "/p?q=1", &h, extra, RequestFraming::Length(12), &mut out);
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "POST /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\nx-a: 2\r\nx-real-ip: 10.0.0.1\r\n\
         content-length: 12\r\n\r\n"
    );
    encode_request_head(&Method::GET, "/", &HeaderMap::new(), &[], RequestFraming::Chunked, &mut out);
    assert_eq!(out, b"GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
    encode_request_head(
        &Method::POST,
        "/",
        &HeaderMap::new(),
        &[],
        RequestFraming::Empty { content_length_zero: true },
        &mut out,
    );
    assert_eq!(out, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    let mut n = Vec::new();
    push_decimal(&mut n, 0);
    push_decimal(&mut n, u64::MAX);
    assert_eq!(n, b"018446744073709551615");
}

#[test]
fn response_heads_and_their_framing() {
    let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", Method::GET).unwrap().unwrap();
    assert_eq!((h.status, h.framing, h.keep_alive), (StatusCode::OK, ResponseFraming::Length(5), true));
    assert_eq!(h.headers["x-a"], "b");

    let h = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", Method::GET).unwrap().unwrap();
    assert_eq!((h.framing, h.keep_alive), (ResponseFraming::Chunked, true));
    let h = parse("HTTP/1.1 200 OK\r\n\r\n", Method::GET).unwrap().unwrap();
    assert_eq!((h.framing, h.keep_alive), (ResponseFraming::UntilClose, false));
    let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD).unwrap().unwrap();
    assert_eq!((h.framing, h.keep_alive), (ResponseFraming::Empty, true));
    let h = parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", Method::GET).unwrap().unwrap();
    assert_eq!(h.framing, ResponseFraming::Empty);
    let h = parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", Method::GET).unwrap().unwrap();
    assert_eq!((h.framing, h.keep_alive), (ResponseFraming::Empty, false));
}

#[test]
fn transfer_codings_other_than_one_chunked_are_refused() {
    // The body would reach the client still encoded, its header removed.
    for te in ["gzip", "gzip, chunked", "chunked, chunked", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked"] {
        let line = if te.contains(':') { te.to_string() } else { format!("Transfer-Encoding: {te}") };
        let head = format!("HTTP/1.1 200 OK\r\n{line}\r\n\r\n");
        assert!(matches!(parse(&head, Method::GET), Err(ProtocolError::UnsupportedTransferCoding)), "{te:?}");
    }
    // Without a body, the framing does not matter.
    let h = parse("HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n", Method::GET).unwrap().unwrap();
    assert_eq!(h.framing, ResponseFraming::Empty);
}

#[test]
fn common_names_are_the_names_the_general_parse_gives() {
    let spellings = [
        "Date",
        "ETag",
        "Vary",
        "Server",
        "Expires",
        "Location",
        "Connection",
        "Set-Cookie",
        "Content-Type",
        "Last-Modified",
        "Accept-Ranges",
        "Cache-Control",
        "Content-Length",
        "Content-Encoding",
        "Transfer-Encoding",
    ];
    for spelled in spellings {
        for name in [spelled.to_string(), spelled.to_ascii_lowercase()] {
            let general = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(common_response_name(name.as_bytes()), Some(general), "{name}");
        }
    }
    // Other spellings, and other names of the same lengths, take the general path.
    for other in ["DATE", "Etag", "content-Type", "X-Ab", "X-Cache", "Set-Cookie2", "X-Request-Id", "", "A"] {
        assert_eq!(common_response_name(other.as_bytes()), None, "{other}");
    }
    let h =
        parse("HTTP/1.1 200 OK\r\nCONTENT-TYPE: a\r\nEtag: \"e\"\r\nDate: d\r\nContent-Length: 0\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
    assert_eq!(h.headers[header::CONTENT_TYPE], "a");
    assert_eq!(h.headers[header::ETAG], "\"e\"");
    assert_eq!(h.headers[header::DATE], "d");
    assert_eq!(h.framing, ResponseFraming::Length(0));
}

#[test]
fn every_byte_httparse_accepts_in_a_value_is_valid_in_a_header_value() {
    // The premise of `checked_value`: a byte either fails the parse or is
    // one `HeaderValue` allows. Each byte alone, and inside a longer value
    // (httparse checks 32 and 8 bytes at a time there).
    let mut accepted_inside = 0;
    for b in 0..=255u8 {
        for (inside, value) in [(false, vec![b]), (true, [b"a".repeat(20), vec![b], b"z".repeat(40)].concat())] {
            let mut raw = b"HTTP/1.1 200 OK\r\nX-V: ".to_vec();
            raw.extend_from_slice(&value);
            raw.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            if let Ok(Some(h)) = parse_response_head(&mut BytesMut::from(&raw[..]), &Method::GET) {
                let values: Vec<_> = h.headers.get_all("x-v").iter().collect();
                assert_eq!(values.len(), 1, "byte {b:#04x}");
                assert!(HeaderValue::from_bytes(values[0].as_bytes()).is_ok(), "byte {b:#04x} passed as {values:?}");
                // httparse trims the spaces and tabs around a value.
                assert_eq!(values[0].as_bytes(), value.trim_ascii(), "byte {b:#04x}");
                accepted_inside += usize::from(inside);
            }
        }
    }
    // HTAB, 0x20-0x7E and 0x80-0xFF: the parse does refuse the others.
    assert_eq!(accepted_inside, 1 + 95 + 128);
    // A folded line (obs-fold) would carry CR LF inside a value: refused.
    assert!(parse("HTTP/1.1 200 OK\r\nX-V: a\r\n b\r\nContent-Length: 0\r\n\r\n", Method::GET).is_err());
}

#[test]
fn mutated_heads_parse_to_valid_headers_or_fail() {
    // Random bytes written over a real answer's head (xorshift, fixed seed):
    // whatever parses must hold the names and values http's own checked
    // constructors make of httparse's headers (debug builds also check the
    // unchecked values as they are made).
    let head = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 04:00:00 GMT\r\n\
        Content-Type: text/html\r\nContent-Length: 5\r\nETag: \"6564-5\"\r\nX-Tag: a\tb\r\n\r\nhello";
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut raw = head.to_vec();
        for _ in 0..1 + next() % 3 {
            let at = (next() % raw.len() as u64) as usize;
            raw[at] = next() as u8;
        }
        if let Ok(Some(h)) = parse_response_head(&mut BytesMut::from(&raw[..]), &Method::GET) {
            parsed += 1;
            let mut slots = [httparse::EMPTY_HEADER; 16];
            let mut reference = httparse::Response::new(&mut slots);
            assert!(reference.parse(&raw).is_ok_and(|s| s.is_complete()), "{raw:?}");
            let reference: Vec<(HeaderName, HeaderValue)> = reference
                .headers
                .iter()
                .map(|h| {
                    (HeaderName::from_bytes(h.name.as_bytes()).unwrap(), HeaderValue::from_bytes(h.value).unwrap())
                })
                .collect();
            for (name, value) in &h.headers {
                assert!(reference.contains(&(name.clone(), value.clone())), "{name}: {value:?} in {raw:?}");
            }
        }
    }
    assert!(parsed > 1_000, "the mutations should leave many heads parseable ({parsed})");
}

#[test]
fn connection_reuse_follows_version_and_connection_header() {
    let h = parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", Method::GET).unwrap();
    assert!(!h.unwrap().keep_alive);
    let h = parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET).unwrap();
    assert!(!h.unwrap().keep_alive);
    let h = parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", Method::GET).unwrap();
    assert!(h.unwrap().keep_alive);
}

#[test]
fn a_connection_header_about_persistence_alone_is_consumed() {
    let h = parse("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", Method::GET);
    assert!(!h.unwrap().unwrap().headers.contains_key(header::CONNECTION));
    // Ones naming other headers, or an upgrade, are left for the proxy.
    for kept in ["close, X-Trace", "Upgrade"] {
        let raw = format!("HTTP/1.1 200 OK\r\nConnection: {kept}\r\nContent-Length: 0\r\n\r\n");
        let h = parse(&raw, Method::GET).unwrap().unwrap();
        assert_eq!(h.headers[header::CONNECTION], kept);
    }
}

#[test]
fn smuggling_shapes_are_refused_or_never_reused() {
    let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET);
    let h = h.unwrap().unwrap();
    assert_eq!((h.framing, h.keep_alive), (ResponseFraming::Chunked, false));
    assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
    for bad in ["5, 6", "-1", "", "1e3", "99999999999999999999"] {
        let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(parse(&raw, Method::GET).unwrap_err(), ProtocolError::BadContentLength, "{bad}");
    }
    let same = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Method::GET);
    assert_eq!(same.unwrap().unwrap().framing, ResponseFraming::Length(5));
    // HTTP/1.0 has no chunked coding: read as chunked, never reused.
    let old = parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET);
    let old = old.unwrap().unwrap();
    assert_eq!((old.framing, old.keep_alive), (ResponseFraming::Chunked, false));
}

#[test]
fn partial_heads_wait_and_garbage_or_huge_heads_fail() {
    assert!(parse("HTTP/1.1 200 OK\r\nContent-Le", Method::GET).unwrap().is_none());
    assert!(matches!(parse("garbage\r\n\r\n", Method::GET), Err(ProtocolError::Head(_))));
    assert_eq!(parse("HTTP/1.1 099 Odd\r\n\r\n", Method::GET).unwrap_err(), ProtocolError::BadStatus(99));
    let huge = format!("HTTP/1.1 200 OK\r\nX-Big: {}", "a".repeat(MAX_HEAD));
    assert_eq!(parse(&huge, Method::GET).unwrap_err(), ProtocolError::HeadTooLarge);
    // Complete but too large (it arrived in one read).
    let huge = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(parse(&huge, Method::GET).unwrap_err(), ProtocolError::HeadTooLarge);
}

#[test]
fn the_body_after_the_head_stays_in_the_buffer() {
    let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT");
    parse_response_head(&mut buf, &Method::GET).unwrap().unwrap();
    assert_eq!(&buf[..], b"helloNEXT");
}

fn decode_all(input: &[&str]) -> Result<(String, bool), ProtocolError> {
    let mut d = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = String::new();
    for piece in input {
        buf.extend_from_slice(piece.as_bytes());
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => out.push_str(std::str::from_utf8(&b).unwrap()),
                Decoded::NeedMore => break,
                Decoded::Done => return Ok((out, buf.is_empty())),
            }
        }
    }
    Ok((out, false))
}

#[test]
fn chunked_bodies_decode_however_they_are_split() {
    let whole = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    assert_eq!(decode_all(&[whole]).unwrap(), ("hello world".into(), true));
    // Every split point, one byte at a time.
    let bytes: Vec<String> = whole.chars().map(|c| c.to_string()).collect();
    let pieces: Vec<&str> = bytes.iter().map(String::as_str).collect();
    assert_eq!(decode_all(&pieces).unwrap(), ("hello world".into(), true));
    // Bare LF line ends are tolerated; upper-case hex works.
    assert_eq!(decode_all(&["A\nabcdefghij\n0\n\n"]).unwrap(), ("abcdefghij".into(), true));
    // Not finished yet.
    assert_eq!(decode_all(&["5\r\nhel"]).unwrap(), ("hel".into(), false));
}

#[test]
fn the_whole_chunks_of_one_read_leave_as_one_frame() {
    let mut d = ChunkedDecoder::default();
    let mut buf = BytesMut::from("5\r\nhello\r\n6;ext=1\r\n world\r\n3\r\n!!!\r\n4\r\nmo");
    assert_eq!(d.decode(&mut buf), Ok(Decoded::Data(Bytes::from_static(b"hello world!!!mo"))));
    assert!(buf.is_empty());
    buf.extend_from_slice(b"re\r\n0\r\n\r\n");
    assert_eq!(d.decode(&mut buf), Ok(Decoded::Data(Bytes::from_static(b"re"))));
    assert_eq!(d.decode(&mut buf), Ok(Decoded::Done));
    // A malformed size line after good chunks: their data first, then the error.
    let mut d = ChunkedDecoder::default();
    let mut buf = BytesMut::from("5\r\nhello\r\nzz\r\nmore");
    assert_eq!(d.decode(&mut buf), Ok(Decoded::Data(Bytes::from_static(b"hello"))));
    assert_eq!(d.decode(&mut buf), Err(ProtocolError::BadChunk));
}

#[test]
fn malformed_chunks_are_errors() {
    for bad in ["x\r\n", "5\r\nhelloXX", "11111111111111111\r\n", "5z\r\n"] {
        assert_eq!(decode_all(&[bad]).unwrap_err(), ProtocolError::BadChunk, "{bad:?}");
    }
    let long_line = format!("5;{}", "e".repeat(MAX_CHUNK_LINE + 1));
    assert_eq!(decode_all(&[&long_line]).unwrap_err(), ProtocolError::BadChunk);
}
