//! `cargo test --all-targets` runs these: the client against a server on
//! loopback, in the same runtime.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{run, Args, Report};

/// A server that answers every request with `200 ok`, after `delay`.
async fn server(delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut filled = 0;
                loop {
                    let Ok(n) = stream.read(&mut buf[filled..]).await else { return };
                    if n == 0 {
                        return;
                    }
                    filled += n;
                    // One request at a time: the client does not pipeline.
                    if buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
                        filled = 0;
                        tokio::time::sleep(delay).await;
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn run_against(addr: SocketAddr, args: &[&str]) -> Report {
    let addr = addr.to_string();
    let mut argv = vec!["paced", "--addr", &addr];
    argv.extend_from_slice(args);
    let args = Args::parse_from(argv);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, run(args)).unwrap()
}

fn with_server(delay: Duration, args: &[&str]) -> Report {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let addr = runtime.block_on(server(delay));
    run_against(addr, args)
}

#[test]
fn it_sends_the_offered_rate_and_counts_every_answer() {
    let report =
        with_server(Duration::ZERO, &["--rate", "400", "--warmup", "250ms", "--duration", "1s", "--connections", "8"]);
    // 400 requests fall due in the measured second, whatever the answers do.
    assert!((399..=401).contains(&report.issued), "issued {}", report.issued);
    assert_eq!(report.completed as u64, report.issued);
    assert_eq!(report.errors, 0);
    assert!(report.p50_us.is_some() && report.p99_us >= report.p50_us);
}

#[test]
fn a_stalled_server_is_charged_from_when_requests_fell_due() {
    // Two connections at 100 ms per answer carry 20 requests a second;
    // 100 fall due. The rest wait in the backlog, and the wait counts:
    // timed from the write instead, every answer would take ~100 ms.
    let report = with_server(
        Duration::from_millis(100),
        &["--rate", "100", "--warmup", "0s", "--duration", "1s", "--connections", "2"],
    );
    assert!(report.backlogged > 50, "backlogged {}", report.backlogged);
    assert!(report.p99_us.is_some_and(|p99| p99 >= 1_000_000), "p99 {:?}", report.p99_us);
    assert_eq!(report.completed as u64, report.issued, "the drain waits for the backlog");
}

#[test]
fn a_closed_loop_keeps_every_connection_busy_and_times_from_the_connect() {
    // Four connections, each a new one per request, at 20 ms per answer:
    // at most 4 x 50 = 200 answers in the measured second, each taking at
    // least the 20 ms the server waits.
    let report = with_server(
        Duration::from_millis(20),
        &["--closed", "--close", "--warmup", "100ms", "--duration", "1s", "--connections", "4"],
    );
    assert_eq!(report.offered_rps, None);
    assert!((20..=204).contains(&report.completed), "completed {}", report.completed);
    assert_eq!(report.completed as u64, report.issued);
    assert_eq!((report.errors, report.backlogged), (0, 0));
    assert_eq!(report.connections_used, 4);
    assert!(report.p50_us.is_some_and(|p50| p50 >= 20_000), "p50 {:?}", report.p50_us);
}

#[test]
fn rate_and_closed_do_not_mix() {
    assert!(Args::try_parse_from(["paced", "--addr", "127.0.0.1:1", "--rate", "10", "--closed"]).is_err());
    assert!(Args::try_parse_from(["paced", "--addr", "127.0.0.1:1"]).is_err());
}
