//! Upstream HTTP/1.1 response heads (bytes from a server we don't control):
//! parsing never panics; an accepted head's headers are valid header values
//! (no CR/LF can reach the client) and its framing is one we can follow;
//! a chunked body after it decodes or fails cleanly.
#![no_main]
use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use rampart::upstream::h1::{parse_response_head, ChunkedDecoder, Decoded, ResponseFraming};

fuzz_target!(|data: &[u8]| {
    for method in [Method::GET, Method::HEAD] {
        let mut buf = BytesMut::from(data);
        let Ok(Some(head)) = parse_response_head(&mut buf, &method) else { continue };
        // What is left is exactly what followed the head.
        assert!(data.ends_with(&buf));
        for (name, value) in &head.headers {
            assert!(!value.as_bytes().iter().any(|&b| b == b'\r' || b == b'\n' || b == 0), "{name}: {value:?}");
            assert!(http::HeaderValue::from_bytes(value.as_bytes()).is_ok());
        }
        if method == Method::HEAD || head.status.is_informational() {
            assert_eq!(head.framing, ResponseFraming::Empty);
        }
        if head.framing == ResponseFraming::UntilClose {
            assert!(!head.keep_alive, "a body that ends at close cannot leave the connection reusable");
        }
        if head.framing == ResponseFraming::Chunked {
            let mut decoder = ChunkedDecoder::default();
            for _ in 0..buf.len() + 2 {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(d)) => assert!(!d.is_empty()),
                    Ok(Decoded::NeedMore | Decoded::Done) | Err(_) => break,
                }
            }
        }
    }
});
