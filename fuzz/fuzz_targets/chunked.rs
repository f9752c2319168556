//! The chunked decoder, fed the same bytes whole and in pieces (as reads
//! split them): never panics, and the pieces give the same data and the
//! same verdict as the whole (a decoder that depends on where reads split
//! is a smuggling bug waiting to happen).
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rampart::upstream::h1::{ChunkedDecoder, Decoded};

#[derive(Debug, PartialEq)]
enum End {
    Done,
    NeedMore,
    Error,
}

/// Decode `input`, handed over in pieces of the given sizes (the rest in one).
fn decode(input: &[u8], pieces: &[usize]) -> (Vec<u8>, End, usize) {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    let mut sizes = pieces.iter().copied().chain(std::iter::once(usize::MAX));
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty());
                data.extend_from_slice(&d);
            }
            Ok(Decoded::Done) => return (data, End::Done, fed - buf.len()),
            Err(_) => return (data, End::Error, 0),
            Ok(Decoded::NeedMore) => {
                if fed == input.len() {
                    return (data, End::NeedMore, 0);
                }
                let n = sizes.next().unwrap_or(usize::MAX).max(1).min(input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    // The first bytes choose where the reads split; the rest is the body.
    let (splits, body) = input.split_at(input.len().min(8));
    let pieces: Vec<usize> = splits.iter().map(|&b| usize::from(b % 16) + 1).collect();
    let whole = decode(body, &[]);
    let split = decode(body, &pieces);
    let one_by_one = decode(body, &vec![1; body.len()]);
    // Data handed out before an error may differ with the split (an error
    // is found as soon as its bytes arrive); the verdict and, on success,
    // the data and where the body ended may not.
    assert_eq!(whole.1, split.1, "verdict differs with read splits {pieces:?}");
    assert_eq!(whole.1, one_by_one.1, "verdict differs when fed byte by byte");
    if whole.1 == End::Done {
        assert_eq!(whole, split);
        assert_eq!(whole, one_by_one);
    }
});
