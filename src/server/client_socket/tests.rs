//! The client socket's tests: lazy registration of a plain socket, the
//! hold buffer of a TLS one, and leaving the poller and coming back.

use std::io;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{ClientSocket, Socket};

/// A server-side socket as the accept loop makes it, and its client.
async fn pair() -> (ClientSocket, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (ClientSocket::plain(server.into_std().unwrap()), client)
}

/// A server-side socket about to carry a TLS handshake, and its client.
async fn tls_pair() -> (ClientSocket, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (ClientSocket::handshaking(server), client)
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).await.unwrap();
    buf
}
#[tokio::test]
async fn a_request_already_there_is_served_without_registering() {
    let (mut server, mut client) = pair().await;
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    // Wait until the bytes are there, as deferred accept does.
    let Socket::Unpolled(socket) = &server.socket else { panic!("registered before any call") };
    while socket.peek(&mut [0; 18]).unwrap() < 18 {
        tokio::task::yield_now().await;
    }
    let mut request = [0; 18];
    server.read_exact(&mut request).await.unwrap();
    assert_eq!(&request, b"GET / HTTP/1.1\r\n\r\n");
    server.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    server.shutdown().await.unwrap();
    assert!(!server.is_polled(), "nothing had to wait, yet the socket was registered");
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
}

#[tokio::test]
async fn a_read_that_must_wait_registers_and_is_woken() {
    let (mut server, mut client) = pair().await;
    let reader = tokio::spawn(async move {
        let mut got = [0; 5];
        server.read_exact(&mut got).await.unwrap();
        (got, server.is_polled())
    });
    // Let the reader find nothing and wait before anything is sent.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    client.write_all(b"hello").await.unwrap();
    let (got, polled) = tokio::time::timeout(std::time::Duration::from_secs(10), reader).await.unwrap().unwrap();
    assert_eq!(&got, b"hello");
    assert!(polled, "a read that waited must have registered the socket");
}

#[tokio::test]
async fn it_leaves_for_the_parking_lot_in_either_state_and_comes_back() {
    let (server, mut client) = pair().await;
    let std = server.into_std().unwrap();
    let mut server = ClientSocket::plain(std);
    let mut waiting = [0; 2];
    let read = tokio::spawn(async move {
        server.read_exact(&mut waiting).await.unwrap();
        server
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    client.write_all(b"hi").await.unwrap();
    let server = read.await.unwrap();
    assert!(server.is_polled());
    let mut again = ClientSocket::plain(server.into_std().unwrap());
    client.write_all(b"yo").await.unwrap();
    let mut got = [0; 2];
    again.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"yo");
}

#[tokio::test]
async fn a_closed_client_reads_as_the_end() {
    let (mut server, client) = pair().await;
    drop(client);
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn handshake_writes_leave_when_a_read_finds_nothing() {
    let (mut server, mut client) = tls_pair().await;
    server.write_all(b"server hello").await.unwrap();
    assert!(server.has_held(), "held until the handshake reads");
    // The client answers only what it was sent; the read that finds
    // nothing sends it.
    let answer = tokio::spawn(async move {
        assert_eq!(read_n(&mut client, 12).await, b"server hello");
        client.write_all(b"finished").await.unwrap();
        client
    });
    assert_eq!(server.read(&mut [0; 8]).await.unwrap(), 8);
    assert!(!server.has_held());
    answer.await.unwrap();
}

#[tokio::test]
async fn bytes_held_at_the_end_of_the_handshake_lead_the_first_write() {
    let (mut server, mut client) = tls_pair().await;
    server.write_all(b"tickets;").await.unwrap();
    server.end_handshake();
    server.flush().await.unwrap();
    assert!(server.has_held(), "a flush does not send them");
    server.write_all(b"response").await.unwrap();
    assert!(!server.has_held());
    assert_eq!(read_n(&mut client, 16).await, b"tickets;response");
    // Later writes go straight through.
    server.write_all(b"next").await.unwrap();
    assert!(!server.has_held());
    assert_eq!(read_n(&mut client, 4).await, b"next");
}

#[tokio::test]
async fn vectored_writes_and_shutdown_send_what_is_held() {
    let (mut server, mut client) = tls_pair().await;
    let parts = [io::IoSlice::new(b"a"), io::IoSlice::new(b"bc")];
    assert_eq!(server.write_vectored(&parts).await.unwrap(), 3);
    server.end_handshake();
    let parts = [io::IoSlice::new(b""), io::IoSlice::new(b"de")];
    assert_eq!(server.write_vectored(&parts).await.unwrap(), 2);
    server.write_all(b"f").await.unwrap();
    assert_eq!(read_n(&mut client, 6).await, b"abcdef");

    let (mut server, mut client) = tls_pair().await;
    server.write_all(b"alert").await.unwrap();
    server.shutdown().await.unwrap();
    let mut all = Vec::new();
    client.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"alert");
}

#[tokio::test]
async fn after_the_handshake_a_read_that_finds_nothing_keeps_them() {
    let (mut server, mut client) = tls_pair().await;
    server.write_all(b"tickets").await.unwrap();
    server.end_handshake();
    client.write_all(b"GET").await.unwrap();
    assert_eq!(server.read(&mut [0; 3]).await.unwrap(), 3);
    let mut more = [0; 1];
    let read = std::future::poll_fn(|cx| {
        let mut buf = ReadBuf::new(&mut more);
        Poll::Ready(Pin::new(&mut server).poll_read(cx, &mut buf))
    })
    .await;
    assert!(read.is_pending());
    assert!(server.has_held(), "kept for the answer");
    // They go before the connection rests; until then it stays.
    assert!(server.leave_poller().is_err());
    assert!(matches!(server.socket, Socket::Polled(_)));
    std::future::poll_fn(|cx| server.poll_send_held(cx)).await.unwrap();
    server.leave_poller().unwrap();
    assert!(server.unpolled_fd().is_some());
    assert_eq!(read_n(&mut client, 7).await, b"tickets");
    server.register().unwrap();
    assert!(matches!(server.socket, Socket::Polled(_)));
}
