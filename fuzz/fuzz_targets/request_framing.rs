//! The request framing guard, fed the same client bytes whole and in
//! pieces (as reads split them): never panics, hands on the same bytes with
//! the same verdict however the reads split, changes nothing it does not
//! refuse, and after a refusal hands on only what came before it, the
//! altered LF that ends it (a refused head's as NUL, a bare LF in a chunked
//! trailer section as CR) and the refusal's tail.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart::server::framing::{RequestFraming, REFUSAL_TAIL};

/// Feed `input` in pieces of the given sizes (the rest in one): what is
/// handed on, and the verdict.
fn feed(input: &[u8], pieces: &[usize]) -> (Vec<u8>, bool, bool) {
    let mut guard = RequestFraming::default();
    let mut out = Vec::new();
    let mut sizes = pieces.iter().copied().chain(std::iter::repeat(usize::MAX));
    let mut at = 0;
    while at < input.len() {
        let n = sizes.next().unwrap_or(usize::MAX).max(1).min(input.len() - at);
        let mut read = input[at..at + n].to_vec();
        let keep = guard.feed(&mut read);
        assert!(keep <= read.len());
        out.extend_from_slice(&read[..keep]);
        out.extend_from_slice(guard.take_tail(usize::MAX));
        at += n;
    }
    (out, guard.refused(), guard.passing_through())
}

fuzz_target!(|input: &[u8]| {
    // The first bytes choose where the reads split; the rest is the stream.
    let (splits, stream) = input.split_at(input.len().min(8));
    let pieces: Vec<usize> = splits.iter().map(|&b| usize::from(b % 32) + 1).collect();
    let whole = feed(stream, &[]);
    assert_eq!(whole, feed(stream, &pieces), "differs with read splits {pieces:?}");
    assert_eq!(whole, feed(stream, &vec![1; stream.len()]), "differs when fed byte by byte");
    let (out, refused, _) = whole;
    if refused {
        let head = out.len() - REFUSAL_TAIL.len() - 1;
        assert!(out.ends_with(REFUSAL_TAIL) && matches!(out[head], 0 | b'\r'));
        assert_eq!(out[..head], stream[..head]);
        assert_eq!(stream[head], b'\n');
    } else {
        assert_eq!(out, stream);
    }
});
