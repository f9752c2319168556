//! HTTP/1 request framing the proxy refuses before anything goes upstream,
//! beyond what hyper's parser already refuses (obs-fold, whitespace before
//! a colon, bad chunk sizes, `Transfer-Encoding` in HTTP/1.0, unequal
//! `Content-Length`s). Each is a way for the proxy and a backend to read
//! where a request ends differently (request smuggling), so each answer
//! also closes the connection (`ProxyError::closes`).
//!
//! HTTP/2 frames its own messages; none of this applies there.

use http::header::{self, HeaderMap, HeaderValue};
use http::Version;

use super::error::ProxyError;

/// Check the framing headers of an HTTP/1 request (RFC 9112 6.1, 6.3):
/// `Content-Length` and `Transfer-Encoding` together, two `Content-Length`
/// lines (even equal ones) or two `Transfer-Encoding` lines are 400; a
/// transfer coding other than exactly `chunked` is 501.
pub fn check(version: Version, headers: &HeaderMap) -> Result<(), ProxyError> {
    if version > Version::HTTP_11 {
        return Ok(());
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(ProxyError::BadFraming);
    }
    if length.is_some_and(|v| v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit)) {
        return Err(ProxyError::BadFraming);
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(coding) = codings.next() else { return Ok(()) };
    if codings.next().is_some() || length.is_some() {
        return Err(ProxyError::BadFraming);
    }
    if !coding.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
        return Err(ProxyError::UnsupportedTransferCoding);
    }
    Ok(())
}

/// `Expect: 100-continue` is the proxy's to answer (hyper sends the client
/// its `100 Continue` when the body is first read) and is removed, so the
/// upstream always expects the body the framing announces and can never
/// take it for the next request; any other expectation is 417.
pub fn take_expectation(headers: &mut HeaderMap) -> Result<(), ProxyError> {
    let Some(expect) = headers.get(header::EXPECT) else { return Ok(()) };
    if !is_100_continue(expect) || headers.get_all(header::EXPECT).iter().count() > 1 {
        return Err(ProxyError::ExpectationFailed);
    }
    headers.remove(header::EXPECT);
    Ok(())
}

fn is_100_continue(v: &HeaderValue) -> bool {
    v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"100-continue")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let v11 = Version::HTTP_11;
        assert_eq!(check(v11, &headers(&[("content-length", "5")])), Ok(()));
        assert_eq!(check(v11, &headers(&[("transfer-encoding", "Chunked ")])), Ok(()));
        for bad in [
            &[("content-length", "5"), ("content-length", "5")][..],
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
            &[("content-length", "+5")],
            &[("content-length", "5, 5")],
        ] {
            assert_eq!(check(v11, &headers(bad)), Err(ProxyError::BadFraming), "{bad:?}");
        }
        for bad in ["gzip, chunked", "chunked, chunked", "identity", "chunked;q=1"] {
            let h = headers(&[("transfer-encoding", bad)]);
            assert_eq!(check(v11, &h), Err(ProxyError::UnsupportedTransferCoding), "{bad}");
        }
        assert_eq!(check(Version::HTTP_2, &headers(&[("content-length", "1"), ("content-length", "1")])), Ok(()));
    }

    #[test]
    fn only_100_continue_is_expected() {
        let mut h = headers(&[("expect", "100-Continue")]);
        assert_eq!(take_expectation(&mut h), Ok(()));
        assert!(h.get(header::EXPECT).is_none());
        let mut h = headers(&[("expect", "something-else")]);
        assert_eq!(take_expectation(&mut h), Err(ProxyError::ExpectationFailed));
    }
}
