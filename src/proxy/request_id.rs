//! Request ids: 32 hex digits, a random per-process prefix and a counter, so
//! making one costs an atomic increment and no system call.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        // RandomState is seeded from the OS once per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
        );
        RequestIds { prefix: h.finish(), counter: AtomicU64::new(0) }
    }
}

impl RequestIds {
    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        hex(self.prefix, &mut buf[..16]);
        // A bijective mix of the counter: still unique, but ids do not read
        // as a sequence (which invites guessing neighbours' ids).
        hex(mix(n ^ self.prefix), &mut buf[16..]);
        // Only hex digits: always a valid header value.
        HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
    }
}

/// SplitMix64's finaliser: a bijection on u64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_hex() {
        let ids = RequestIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_eq!(a[..16], b[..16], "same process prefix");
        assert!(a[16..].bytes().zip(b[16..].bytes()).filter(|(x, y)| x != y).count() > 4, "{a} {b}");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
