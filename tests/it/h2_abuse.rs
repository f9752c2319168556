//! HTTP/2 abuse driven with raw frames: rapid reset, CONTINUATION floods,
//! SETTINGS and PING floods, zero-window stalls and oversized header
//! lists. Each is answered with GOAWAY, a stream reset (431 where the
//! protocol allows) or a closed connection, while a bystander client on
//! its own connection keeps being served throughout.

use std::time::Duration;

use http::Response;
use tokio_util::sync::CancellationToken;

use crate::chaos_util::{alive_without_panics, fd_count, fd_list};
use crate::h2_raw::*;
use crate::util::*;

const ENHANCE_YOUR_CALM: u32 = 0xb;
const CANCEL: u32 = 0x8;

/// A proxy in front of an upstream that answers `/` with "ok" and `/big`
/// with 1 MiB; idle and send-stall timeouts of 1 s, a 16 KiB header limit.
async fn setup() -> (Upstream, Proxy) {
    let up = Upstream::start(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/big" {
            Response::new(full(vec![b'x'; 1 << 20]))
        } else {
            Response::new(full("ok"))
        }
    })
    .await;
    let p = Proxy::start(&format!(
        "[server]\nidle_timeout = \"1s\"\nmax_header_bytes = 16384\n\
         [upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nupstream = \"app\"\n",
        up.addr
    ));
    (up, p)
}

/// Requests `/` over its own HTTP/2 connection until `stop`; returns how
/// many were answered 200 and what went wrong otherwise.
fn bystander(addr: std::net::SocketAddr, stop: CancellationToken) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let c = h2c_client();
        let (mut ok, mut failed) = (0, Vec::new());
        while !stop.is_cancelled() {
            let req = http::Request::get(format!("http://{addr}/")).header("host", "x").body(full("")).unwrap();
            match tokio::time::timeout(Duration::from_secs(10), c.request(req)).await {
                Ok(Ok(r)) if r.status() == 200 => {
                    let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                    ok += 1;
                }
                Ok(Ok(r)) => failed.push(format!("status {}", r.status())),
                Ok(Err(e)) => failed.push(format!("{e:?}")),
                Err(_) => failed.push("no answer in 10 s".into()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    })
}

/// Run `attack` with a bystander alongside; the bystander must have been
/// served, every time, during it.
async fn while_served<F: std::future::Future<Output = ()>>(p: &mut Proxy, attack: F) {
    let stop = CancellationToken::new();
    let by = bystander(p.http, stop.clone());
    attack.await;
    stop.cancel();
    let (ok, failed) = by.await.unwrap();
    assert!(ok > 0 && failed.is_empty(), "bystander: {ok} served, failures: {failed:?}");
    alive_without_panics(p).unwrap();
}

#[tokio::test]
async fn rapid_reset_is_answered_with_goaway() {
    let (_up, mut p) = setup().await;
    let c = RawH2::connect(p.http, &[], true).await;
    while_served(&mut p, async {
        // CVE-2023-44487: open a stream and cancel it at once, endlessly.
        let mut burst = Vec::new();
        for i in 0..20_000u32 {
            let id = 1 + 2 * i;
            burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &get_block("/")));
            burst.extend(rst_stream(id, CANCEL));
            if burst.len() > 64 * 1024 {
                c.send(std::mem::take(&mut burst));
            }
        }
        c.send(burst);
        assert!(c.wait_closed(Duration::from_secs(30)).await, "rapid reset never ended the connection");
    })
    .await;
    let goaway = c.frames_of(GOAWAY);
    assert!(
        goaway.iter().any(|f| f.error_code() == Some(ENHANCE_YOUR_CALM)),
        "closed without GOAWAY(ENHANCE_YOUR_CALM): {goaway:?}"
    );
}

#[tokio::test]
async fn a_continuation_flood_is_answered_with_goaway() {
    let (_up, mut p) = setup().await;
    // Headers that never end: 8 KB header lines, and empty frames.
    for payload in [literal("x-flood", &"a".repeat(8000)), Vec::new()] {
        let c = RawH2::connect(p.http, &[], true).await;
        let flood = payload.clone();
        while_served(&mut p, async {
            c.send(frame(HEADERS, 0, 1, &get_block("/")));
            let mut burst = Vec::new();
            for _ in 0..100_000 {
                burst.extend(frame(CONTINUATION, 0, 1, &flood));
                if burst.len() > 64 * 1024 {
                    c.send(std::mem::take(&mut burst));
                    if c.is_closed() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            assert!(c.wait_closed(Duration::from_secs(30)).await, "a CONTINUATION flood kept its connection");
        })
        .await;
        let answered = c.frames_of(GOAWAY).len() + c.frames_of(RST_STREAM).len();
        assert!(answered > 0, "closed without GOAWAY or RST_STREAM ({} bytes of frames)", payload.len());
    }
}

/// A client that floods control frames and never reads the answers: the
/// proxy stops reading it once the acknowledgements back up, and closes it
/// after idle_timeout of writes that cannot go out. Memory stays bounded.
async fn control_flood(one: Vec<u8>) {
    let (_up, mut p) = setup().await;
    let rss_before = p.rss_kib();
    let c = RawH2::connect(p.http, &[], false).await;
    while_served(&mut p, async {
        let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4096).collect();
        for _ in 0..200 {
            c.send(burst.clone());
        }
        assert!(
            c.wait_closed(Duration::from_secs(30)).await,
            "a client flooding and never reading kept its connection"
        );
    })
    .await;
    let grown = p.rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "the proxy grew by {grown} KiB");
}

#[tokio::test]
async fn a_settings_flood_from_a_client_that_never_reads_is_cut_off() {
    control_flood(settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)])).await;
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_is_cut_off() {
    control_flood(frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8])).await;
}

#[tokio::test]
async fn a_zero_window_stall_is_cut_off_and_its_upstream_connections_freed() {
    // Ask for 1 MiB on many streams with a flow-control window of 0 and
    // never open it, while answering PINGs: nothing can be sent, nothing
    // is idle, nothing blocks on the socket.
    let (up, mut p) = setup().await;
    assert_eq!(get(&p.url("/"), "x").await.status, 200);
    let baseline = fd_count(&p);
    let c = RawH2::connect(p.http, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)], true).await;
    while_served(&mut p, async {
        for i in 0..50u32 {
            c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, &get_block("/big")));
        }
        assert!(eventually(Duration::from_secs(10), || up.hits() >= 50).await);
        assert!(c.wait_closed(Duration::from_secs(30)).await, "a zero-window client held its streams");
    })
    .await;
    assert!(!c.frames_of(GOAWAY).is_empty(), "closed without a GOAWAY");
    assert!(
        eventually(Duration::from_secs(10), || fd_count(&p) <= baseline + 1).await,
        "{} descriptors open, {baseline} before: {:?}",
        fd_count(&p),
        fd_list(&p)
    );
}

/// The `:status` of a response HEADERS block as this server encodes it:
/// an indexed static entry, or a literal with the `:status` name (index 8)
/// and a plain or Huffman-coded value of digits.
fn status_of(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    let statics = [(0x88, 200), (0x89, 204), (0x8a, 206), (0x8b, 304), (0x8c, 400), (0x8d, 404), (0x8e, 500)];
    if let Some((_, s)) = statics.iter().find(|(b, _)| *b == first) {
        return Some(*s);
    }
    // Literal with (0x48), without (0x08) or never (0x18) indexing, name 8.
    if ![0x48, 0x08, 0x18].contains(&first) {
        return None;
    }
    let len_byte = *block.get(1)?;
    let (huffman, len) = (len_byte & 0x80 != 0, usize::from(len_byte & 0x7f));
    let value = block.get(2..2 + len)?;
    let digits = if huffman {
        // Digits are 5 bits ('0'-'2') or 6 bits ('3'-'9') in HPACK's code.
        let bits: Vec<u8> = value.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1)).collect();
        let mut out = String::new();
        let mut i = 0;
        while out.len() < 3 && i + 5 <= bits.len() {
            let five = bits[i..i + 5].iter().fold(0u8, |a, b| a << 1 | b);
            if five <= 2 {
                out.push(char::from(b'0' + five));
                i += 5;
            } else {
                let six = bits.get(i..i + 6)?.iter().fold(0u8, |a, b| a << 1 | b);
                out.push(char::from(b'0' + six.checked_sub(0x19)? + 3));
                i += 6;
            }
        }
        out
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    digits.parse().ok()
}

#[tokio::test]
async fn an_oversized_header_list_gets_431_and_the_connection_goes_on() {
    let (_up, mut p) = setup().await;
    let c = RawH2::connect(p.http, &[], true).await;
    while_served(&mut p, async {
        // 40 KB of headers against a 16 KiB limit, over HEADERS and
        // CONTINUATION frames of 16 KiB.
        let mut block = get_block("/");
        block.extend(literal("x-big", &"a".repeat(40_000)));
        let pieces: Vec<&[u8]> = block.chunks(16_384).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let last = if i + 1 == pieces.len() { END_HEADERS } else { 0 };
            let (kind, flags) = if i == 0 { (HEADERS, END_STREAM | last) } else { (CONTINUATION, last) };
            c.send(frame(kind, flags, 1, piece));
        }
        // A normal request on the same connection afterwards.
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 3, &get_block("/")));
        let answered = || c.frames_of(HEADERS).iter().any(|f| f.stream == 3);
        assert!(eventually(Duration::from_secs(10), answered).await, "frames: {:?}", c.frames.lock().unwrap());
    })
    .await;
    let headers = c.frames_of(HEADERS);
    let status = |id: u32| headers.iter().find(|f| f.stream == id).and_then(|f| status_of(&f.payload));
    assert_eq!(status(1), Some(431), "{headers:?}");
    assert_eq!(status(3), Some(200), "{headers:?}");
    assert!(!c.is_closed());
}

#[test]
fn status_of_reads_plain_and_huffman_statuses() {
    assert_eq!(status_of(&[0x88]), Some(200));
    assert_eq!(status_of(&[0x48, 0x03, b'4', b'3', b'1']), Some(431));
    // "431" in HPACK's Huffman code: 011010 011001 00001, padded with ones.
    assert_eq!(status_of(&[0x48, 0x83, 0x69, 0x90, 0xff]), Some(431));
}
