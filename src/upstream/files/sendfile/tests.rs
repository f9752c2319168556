use super::*;
use http_body_util::BodyExt;
use std::io::Write;

/// A temporary file of `len` bytes.
fn file(len: usize) -> Arc<File> {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&vec![7; len]).unwrap();
    Arc::new(f)
}

/// The frames of a body sent through `queue`, and what it registered.
async fn placeholders(len: u64) -> (Vec<Bytes>, Arc<SendQueue>) {
    let queue = Arc::new(SendQueue::default());
    let mut body = StaticBody::file(file(len as usize), 10, len - 10);
    assert!(body.send_through(&queue));
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(frame.unwrap().into_data().unwrap());
    }
    assert!(body.is_end_stream());
    (frames, queue)
}

#[tokio::test]
async fn a_body_sent_through_a_queue_gives_registered_placeholders_only() {
    let len = PLACEHOLDER_MAX as u64 * 2 + 110;
    let (frames, queue) = placeholders(len).await;
    let sizes: Vec<usize> = frames.iter().map(|f| f.len()).collect();
    assert_eq!(sizes, vec![PLACEHOLDER_MAX, PLACEHOLDER_MAX, 100]);
    assert!(frames.iter().all(|f| is_placeholder(f)));
    let pieces = queue.pieces();
    let ranges: Vec<(u64, usize)> = pieces.iter().map(|p| (p.offset, p.len)).collect();
    let max = PLACEHOLDER_MAX as u64;
    assert_eq!(ranges, vec![(10, PLACEHOLDER_MAX), (10 + max, PLACEHOLDER_MAX), (10 + 2 * max, 100)]);
}

#[tokio::test]
async fn a_body_not_sent_through_a_queue_gives_its_bytes() {
    let body = StaticBody::memory(Bytes::from_static(b"hello"), Some(Sendable { file: file(5), offset: 0, len: 5 }));
    let got = body.collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], b"hello");
    let body = StaticBody::file(file(100), 90, 10);
    let got = body.collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], &[7; 10]);
}

#[tokio::test]
async fn only_an_untouched_body_with_its_file_range_is_sent_through() {
    let queue = Arc::new(SendQueue::default());
    let mut no_file = StaticBody::memory(Bytes::from_static(b"hello"), None);
    assert!(!no_file.send_through(&queue));
    let mut begun = StaticBody::file(file(100), 0, 100);
    assert!(begun.frame().await.is_some());
    assert!(!begun.send_through(&queue));
    assert!(queue.is_empty());
}

#[test]
fn a_write_is_planned_against_the_next_registered_range() {
    let head = IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n");
    let queue = SendQueue::default();
    assert!(matches!(queue.plan(&[head]), Plan::Pass));
    let ph = &ZERO[..100];
    // A placeholder nothing registered.
    assert!(matches!(queue.plan(&[IoSlice::new(ph)]), Plan::Refuse(_)));
    queue.push(Piece { file: file(200), offset: 50, len: 100, done: 0 });
    assert!(matches!(queue.plan(&[head, IoSlice::new(ph)]), Plan::Prefix { count: 1 }));
    assert!(matches!(queue.plan(&[IoSlice::new(ph)]), Plan::Send { offset: 50, len: 100, .. }));
    // Trimmed (hyper's `Limited`) or too long: refused.
    assert!(matches!(queue.plan(&[IoSlice::new(&ZERO[..99])]), Plan::Refuse(_)));
    assert!(matches!(queue.plan(&[IoSlice::new(&ZERO[..101])]), Plan::Refuse(_)));
}

#[test]
fn partial_sends_advance_the_range_as_hyper_advances_its_buffer() {
    let queue = SendQueue::default();
    queue.push(Piece { file: file(300), offset: 0, len: 100, done: 0 });
    queue.push(Piece { file: file(300), offset: 100, len: 30, done: 0 });
    queue.sent(40);
    // hyper advanced the placeholder by 40: the rest is what is planned.
    assert!(matches!(queue.plan(&[IoSlice::new(&ZERO[40..100])]), Plan::Send { offset: 40, len: 60, .. }));
    // The slice as it was before the 40 were reported: out of step.
    assert!(matches!(queue.plan(&[IoSlice::new(&ZERO[..100])]), Plan::Refuse(_)));
    queue.sent(60);
    assert!(matches!(queue.plan(&[IoSlice::new(&ZERO[..30])]), Plan::Send { offset: 100, len: 30, .. }));
    queue.sent(30);
    assert!(queue.is_empty());
    assert!(matches!(queue.plan(&[IoSlice::new(&ZERO[..30])]), Plan::Refuse(_)));
}

#[test]
fn only_slices_of_the_zero_buffer_are_placeholders() {
    let zeros = vec![0u8; 64];
    assert!(!is_placeholder(&zeros));
    assert!(!is_placeholder(&ZERO[..0]));
    assert!(is_placeholder(&ZERO[PLACEHOLDER_MAX - 1..]));
    assert!(!is_placeholder(b"\0\0\0"));
}
