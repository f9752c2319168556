use super::*;
use crate::body::file_sending::StaticBody;
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use std::io::Write;
use tokio::io::AsyncReadExt;

/// Pseudo-random bytes (xorshift), so a shifted or repeated range shows.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A server-side socket as the accept loop makes it, and its client, whose
/// receive buffer is small when `small` (a slow reader: many partial sends).
async fn pair(small: bool) -> (ClientSocket, tokio::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if small {
        client.set_recv_buffer_size(4096).unwrap();
    }
    client.connect(&listener.local_addr().unwrap().into()).unwrap();
    client.set_nonblocking(true).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    (ClientSocket::plain(server), tokio::net::TcpStream::from_std(client.into()).unwrap())
}

/// What hyper does with its queued buffers: write them vectored, advance
/// them by what each write reported, until none is left.
async fn flush<I: AsyncWrite + SendsFiles + Unpin>(io: &mut SendfileIo<I>, mut bufs: Vec<Bytes>) -> io::Result<()> {
    while bufs.iter().any(|b| !b.is_empty()) {
        let n = std::future::poll_fn(|cx| {
            let iovs: Vec<IoSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).map(|b| IoSlice::new(b)).collect();
            Pin::new(&mut *io).poll_write_vectored(cx, &iovs)
        })
        .await?;
        assert!(n > 0);
        let mut left = n;
        for b in bufs.iter_mut() {
            let k = left.min(b.len());
            b.advance(k);
            left -= k;
        }
    }
    Ok(())
}

/// The placeholders of `len` bytes of `file` from `offset`, registered in `queue`.
async fn placeholders(file: &Arc<File>, offset: u64, len: u64, queue: &Arc<SendQueue>) -> Vec<Bytes> {
    let mut body = StaticBody::file(Arc::clone(file), offset, len);
    assert!(body.send_through(queue));
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(frame.unwrap().into_data().unwrap());
    }
    frames
}

fn temp_file(data: &[u8]) -> Arc<File> {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    Arc::new(f)
}

#[tokio::test]
async fn heads_and_file_ranges_reach_a_slow_client_exactly() {
    let data = noise(3 * 1024 * 1024 + 17);
    let file = temp_file(&data);
    let (server, mut client) = pair(true).await;
    let queue = Arc::new(SendQueue::default());
    let mut io = SendfileIo::new(server, Some(Arc::clone(&queue)));
    let before = crate::metrics::static_sendfile_bytes().get();
    // Two answers back to back (keep-alive, pipelined): a head, a range, a
    // head, another range.
    let mut bufs = vec![Bytes::from_static(b"HEAD-ONE\r\n")];
    bufs.extend(placeholders(&file, 0, data.len() as u64, &queue).await);
    bufs.push(Bytes::from_static(b"HEAD-TWO\r\n"));
    bufs.extend(placeholders(&file, 5, 1000, &queue).await);
    let total = 10 + data.len() + 10 + 1000;
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(total);
        let mut buf = [0; 1500];
        while got.len() < total {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early at {}", got.len());
            got.extend_from_slice(&buf[..n]);
            if got.len() % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        got
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), flush(&mut io, bufs)).await.unwrap().unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), reader).await.unwrap().unwrap();
    let mut want = b"HEAD-ONE\r\n".to_vec();
    want.extend_from_slice(&data);
    want.extend_from_slice(b"HEAD-TWO\r\n");
    want.extend_from_slice(&data[5..1005]);
    assert!(got == want, "bytes differ");
    assert!(queue.is_empty());
    assert!(io.into_inner().unwrap().is_polled(), "a slow client makes the sends wait for the poller");
    assert!(crate::metrics::static_sendfile_bytes().get() - before >= (data.len() + 1000) as u64);
}

#[tokio::test]
async fn a_placeholder_out_of_step_fails_and_sends_nothing() {
    let file = temp_file(&noise(4096));
    let (server, mut client) = pair(false).await;
    let queue = Arc::new(SendQueue::default());
    let mut io = SendfileIo::new(server, Some(Arc::clone(&queue)));
    let first = placeholders(&file, 0, 100, &queue).await;
    let second = placeholders(&file, 100, 200, &queue).await;
    // The second before the first: refused before any byte is written.
    let e = flush(&mut io, second).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    // A placeholder with nothing registered, on a connection without a queue.
    let (other, _client) = pair(false).await;
    let mut bare = SendfileIo::new(other, None);
    assert!(flush(&mut bare, first.clone()).await.is_err());
    // A flat write while ranges are pending (hyper copying bodies).
    let flat = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"x")).await;
    assert_eq!(flat.unwrap_err().kind(), io::ErrorKind::InvalidData);
    assert!(io.into_inner().is_none(), "ranges left unsent close the connection");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "bytes were written: {rest:?}");
}

#[tokio::test]
async fn a_file_that_shrank_fails_the_answer() {
    let file = temp_file(&noise(1000));
    let (server, _client) = pair(false).await;
    let queue = Arc::new(SendQueue::default());
    let mut io = SendfileIo::new(server, Some(Arc::clone(&queue)));
    let bufs = placeholders(&file, 0, 2000, &queue).await;
    let e = flush(&mut io, bufs).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}
