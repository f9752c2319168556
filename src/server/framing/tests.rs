use super::RequestFraming;

/// Feed `input` in pieces cut at `cuts` (offsets), as reads; what the
/// guard hands on, concatenated, and the guard.
fn feed_cut(input: &[u8], cuts: &[usize]) -> (Vec<u8>, RequestFraming) {
    let mut g = RequestFraming::default();
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&input.len())) {
        let mut read = input[from..to].to_vec();
        let keep = g.feed(&mut read);
        out.extend_from_slice(&read[..keep]);
        out.extend_from_slice(g.take_tail(usize::MAX));
        from = to;
    }
    (out, g)
}

fn feed(input: &[u8]) -> (Vec<u8>, RequestFraming) {
    feed_cut(input, &[])
}

/// The same verdict however the input is cut: whole, in two at every
/// byte, and a byte per read.
fn same_in_any_pieces(input: &[u8]) -> (Vec<u8>, RequestFraming) {
    let (whole, g) = feed(input);
    for cut in 0..=input.len() {
        let (out, h) = feed_cut(input, &[cut]);
        assert_eq!(out, whole, "cut at {cut}: {:?}", String::from_utf8_lossy(input));
        assert_eq!((h.refused(), h.passing_through()), (g.refused(), g.passing_through()), "cut at {cut}");
        assert_eq!(h.between_requests(), g.between_requests(), "cut at {cut}");
    }
    let bytes: Vec<usize> = (1..input.len()).collect();
    let (out, h) = feed_cut(input, &bytes);
    assert_eq!(out, whole, "a byte per read");
    assert_eq!((h.refused(), h.passing_through()), (g.refused(), g.passing_through()));
    (whole, g)
}

/// Refused: handed on up to the head's end, whose last byte is now NUL,
/// then the refusal's tail.
fn assert_refused(input: &[u8], head_end: usize) {
    let (out, g) = same_in_any_pieces(input);
    assert!(g.refused(), "{:?}", String::from_utf8_lossy(input));
    let wanted = [&input[..head_end - 1], b"\0", super::REFUSAL_TAIL].concat();
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&wanted));
    // Nothing more, ever.
    let mut g = g;
    assert_eq!(g.feed(&mut b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".to_vec()), 0);
    assert_eq!(g.take_tail(usize::MAX), b"");
}

#[test]
fn the_refusal_tail_is_handed_in_the_room_there_is() {
    let mut g = RequestFraming::default();
    let mut read = b"GET / HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n".to_vec();
    assert_eq!(g.feed(&mut read), read.len());
    assert_eq!(g.take_tail(1), b"\r");
    assert_eq!(g.take_tail(0), b"");
    assert_eq!(g.take_tail(9), b"\n\r\n");
    assert_eq!(g.take_tail(9), b"");
    assert!(g.refused());
}

/// Passed on whole, and back between requests at the end.
fn assert_followed(input: &[u8]) {
    let (out, g) = same_in_any_pieces(input);
    assert_eq!(out, input);
    assert!(g.between_requests() && !g.refused() && !g.passing_through(), "{g:?}");
}

fn head_end(input: &[u8]) -> usize {
    input.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| i + 4)
}

#[test]
fn content_length_with_transfer_encoding_is_refused_in_either_order() {
    for req in [
        &b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\nCONTENT-LENGTH:5\r\nhost: a\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: x\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        assert_refused(req, head_end(req));
    }
}

#[test]
fn two_content_lengths_are_refused_equal_or_not() {
    for req in [
        &b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello"[..],
        b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nhost: a\r\ncontent-LENGTH:  5 \r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    ] {
        assert_refused(req, head_end(req));
    }
    // Bare LF line ends, which hyper accepts too.
    let req = b"POST /x HTTP/1.1\nhost: a\ncontent-length: 5\ncontent-length: 5\n\nhello";
    assert_refused(req, req.len() - 5);
}

#[test]
fn a_refused_head_behind_good_ones_cuts_the_stream_there() {
    let good = b"GET /a HTTP/1.1\r\nhost: a\r\n\r\nPOST /b HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc";
    let bad = b"POST /x HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
    let input = [&good[..], bad, b"0\r\n\r\nGET /admin/ HTTP/1.1\r\n\r\n"].concat();
    assert_refused(&input, good.len() + bad.len());
}

#[test]
fn pipelined_requests_are_followed() {
    assert_followed(
        b"GET / HTTP/1.1\r\nhost: a\r\nuser-agent: t\r\naccept: */*\r\n\r\n\
          POST /form HTTP/1.1\r\nhost: a\r\nContent-Length: 11\r\ncontent-type: text/plain\r\n\r\nhello world\
          GET /b HTTP/1.1\r\nhost: a\r\nconnection: keep-alive\r\n\r\n\
          PUT /c HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          GET /d HTTP/1.0\r\n\r\n",
    );
}

#[test]
fn bodies_are_not_read_as_heads() {
    // What looks like a refused head inside a body is data.
    let smuggled = b"\r\n\r\nGET / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n";
    let sized =
        [format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", smuggled.len()).as_bytes(), smuggled].concat();
    assert_followed(&sized);
    let chunked = [
        &b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        format!("{:x}\r\n", smuggled.len()).as_bytes(),
        smuggled,
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    assert_followed(&chunked);
}

#[test]
fn chunked_bodies_with_extensions_and_trailers_are_followed() {
    assert_followed(
        b"POST /up HTTP/1.1\r\nhost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n\
          5;name=value;x=\"q;uoted\"\r\nhello\r\n\
          A \t;ext\r\n0123456789\r\n\
          1a\r\nabcdefghijklmnopqrstuvwxyz\r\n\
          0;last=1\r\nx-checksum: abc\r\nx-other: content-length: 5\r\n\r\n\
          GET /next HTTP/1.1\r\nhost: a\r\n\r\n",
    );
    // The last coding decides, as hyper reads it.
    assert_followed(b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
}

#[test]
fn leading_empty_lines_and_a_bodiless_head_with_no_headers() {
    assert_followed(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n\nGET / HTTP/1.1\n\n");
}

#[test]
fn upgrades_connect_and_the_http2_preface_end_judging() {
    for req in [
        &b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"[..],
        b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let tunnel = b"\r\n\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n";
        let input = [req, &tunnel[..]].concat();
        let (out, g) = same_in_any_pieces(&input);
        assert_eq!(out, input);
        assert!(g.passing_through(), "{:?}", String::from_utf8_lossy(req));
    }
    // Only these: a method that starts like CONNECT is a request.
    assert_followed(b"CONNECTX / HTTP/1.1\r\n\r\nPRI * HTTP/1.1\r\n\r\n");
}

/// A bare LF after the last chunk, or in a trailer line, would have
/// hyper read the next request as trailers (nginx ends the body there):
/// refused, the LF handed on as a CR, which hyper's decoder refuses with
/// the tail behind it.
#[test]
fn a_bare_lf_in_the_trailer_section_is_refused() {
    let body = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n";
    for (trailer, next) in [
        (&b"\n"[..], &b"GET /swallowed HTTP/1.1\r\nHost: a\r\n\r\n"[..]),
        (b"X-T: 1\n", b"\r\nGET /swallowed HTTP/1.1\r\nHost: a\r\n\r\n"),
    ] {
        let input = [&body[..], trailer, next].concat();
        let (out, g) = same_in_any_pieces(&input);
        assert!(g.refused(), "{:?}", String::from_utf8_lossy(&input));
        let upto = body.len() + trailer.len() - 1;
        let wanted = [&input[..upto], b"\r", super::REFUSAL_TAIL].concat();
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&wanted));
    }
    // CRLF trailers are still followed.
    assert_followed(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
}

#[test]
fn framing_hyper_refuses_itself_ends_judging() {
    for req in [
        &b"POST / HTTP/1.1\r\ncontent-length: 5x\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX",
    ] {
        let (out, g) = same_in_any_pieces(req);
        assert_eq!(out, req);
        assert!(g.passing_through(), "{:?}", String::from_utf8_lossy(req));
    }
}

#[test]
fn names_are_matched_whole_and_values_only_of_those() {
    // Lookalike names and framing words in other headers are not framing.
    assert_followed(
        b"GET / HTTP/1.1\r\ncontent-length-x: 5\r\nx-content-length: 5\r\ncontent-type: a\r\n\
          transfer-encodingx: chunked\r\ncookie: content-length: 5\r\nupgrade-insecure-requests: 1\r\n\r\n",
    );
}

#[test]
fn a_long_body_is_counted_across_reads() {
    let mut input = b"POST / HTTP/1.1\r\ncontent-length: 100000\r\n\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'\n', 100_000));
    input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let cuts: Vec<usize> = (1..input.len()).step_by(4096).collect();
    let (out, g) = feed_cut(&input, &cuts);
    assert_eq!(out, input);
    assert!(g.between_requests());
}

/// The test's stream has no client that could leave.
impl crate::server::activity::Departure for tokio::io::DuplexStream {
    fn departed(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Option<std::io::Error> {
        None
    }
}

/// hyper behind [`super::io::FramingIo`], the head cut in two reads at
/// `cut`: what the client gets back, and how many requests hyper's
/// service saw.
async fn through_hyper(request: &[u8], cut: usize, auto: bool) -> (String, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let io = hyper_util::rt::TokioIo::new(super::io::FramingIo::new(server, RequestFraming::default(), 0));
    let served = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&served);
    let svc = hyper::service::service_fn(move |_req| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("ok"))) }
    });
    let conn = tokio::spawn(async move {
        if auto {
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder.serve_connection_with_upgrades(io, svc).await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
        }
    });
    client.write_all(&request[..cut]).await.unwrap();
    // Let hyper read the first part on its own.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    // hyper may have refused and closed already.
    let _ = client.write_all(&request[cut..]).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), client.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "hyper kept the connection open (cut at {cut}, auto {auto})");
    conn.abort();
    (String::from_utf8_lossy(&answer).into_owned(), served.load(Ordering::SeqCst))
}

#[tokio::test]
async fn hyper_answers_a_refused_head_400_and_closes_however_it_came() {
    let request = b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
    let head_end = head_end(request);
    for cut in 1..request.len() {
        for auto in [false, true] {
            if auto && cut % 7 != 1 && cut + 2 < head_end {
                continue;
            }
            let (answer, served) = through_hyper(request, cut, auto).await;
            assert!(answer.starts_with("HTTP/1.1 400 "), "cut at {cut}, auto {auto}: {answer:?}");
            assert_eq!(served, 0, "cut at {cut}, auto {auto}");
        }
    }
    let good = b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    let (answer, served) = through_hyper(good, 20, false).await;
    assert!(answer.starts_with("HTTP/1.1 200 ") && served == 1, "{answer:?}");
}

/// Streams made of framing's building blocks at random (a fixed seed):
/// the verdict and the bytes handed on never depend on how reads split
/// them, nothing is changed unless refused, and a refusal hands on
/// exactly the head up to its altered last `\n`, then the tail.
#[test]
fn random_streams_give_one_verdict_however_they_are_read() {
    const PARTS: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"POST /x HTTP/1.1\r\n",
        b"CONNECT a:1 HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n",
        b"content-length: 5\r\n",
        b"Content-Length:0\n",
        b"transfer-encoding: chunked\r\n",
        b"upgrade: x\r\n",
        b"transfer-encoding: gzip, chunked\r\n",
        b"host: a\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"5\r\nhello\r\n",
        b"0\r\n",
        b"a;e=1\r\n",
        b"hello",
        b"\r\n\r\n",
        b"x-t: 1\r\n",
        b" ",
        b"\0",
        b"content-length:",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut refused, mut through) = (0, 0);
    for _ in 0..4000 {
        let len = next() % 24;
        let stream: Vec<u8> = (0..len).flat_map(|_| PARTS[(next() % PARTS.len() as u64) as usize].to_vec()).collect();
        let cuts: Vec<usize> = {
            let mut c: Vec<usize> = (0..next() % 6).map(|_| (next() as usize) % (stream.len() + 1)).collect();
            c.sort_unstable();
            c
        };
        let (out, g) = feed(&stream);
        let (split, h) = feed_cut(&stream, &cuts);
        assert_eq!(out, split, "{:?} cut at {cuts:?}", String::from_utf8_lossy(&stream));
        assert_eq!((g.refused(), g.passing_through()), (h.refused(), h.passing_through()));
        if g.refused() {
            refused += 1;
            // A head's last LF became NUL; a bare LF in a trailer section CR.
            let head = out.len() - super::REFUSAL_TAIL.len() - 1;
            assert!(matches!((out[head], stream[head]), (0 | b'\r', b'\n')), "{:?}", String::from_utf8_lossy(&stream));
            assert_eq!(out[..head], stream[..head]);
        } else {
            through += usize::from(g.passing_through());
            assert_eq!(out, stream);
        }
    }
    // The blocks make both outcomes common enough to be checked.
    assert!(refused > 100 && through > 100, "{refused} refused, {through} passed through");
}
