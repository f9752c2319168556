//! Why a request could not be proxied, and the one place that maps each
//! reason to a status code and a short plain-text answer.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{plain_response, ResponseBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("missing or invalid Host header")]
    BadHost,
    #[error("invalid request path")]
    BadPath,
    #[error("ambiguous request framing (Content-Length / Transfer-Encoding)")]
    BadFraming,
    #[error("transfer coding other than chunked")]
    UnsupportedTransferCoding,
    #[error("CONNECT is not proxied: a reverse proxy opens no tunnels")]
    Tunnel,
    #[error("unsupported expectation")]
    ExpectationFailed,
    #[error("no route for this host and path")]
    NoRoute,
    #[error("no upstream server available")]
    NoServer,
    #[error("upstream connection failed")]
    Connect,
    #[error("upstream connection broke before a response")]
    Broken,
    #[error("upstream sent an invalid response")]
    BadResponse,
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("request body over the limit")]
    BodyTooLarge,
    #[error("the request body stopped arriving")]
    ClientTimeout,
    #[error("invalid request body")]
    BadBody,
    /// The client left before its request was done. It never sees the
    /// answer; the status is for the access log and metrics (nginx's 499).
    #[error("client closed the request")]
    ClientClosed,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadHost | ProxyError::BadPath | ProxyError::BadFraming | ProxyError::Tunnel => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoServer => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect | ProxyError::Broken | ProxyError::BadResponse => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BadBody => StatusCode::BAD_REQUEST,
            ProxyError::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    /// Whether the connection must close after the answer: the request's
    /// end, or its host, cannot be trusted, so neither can what follows it.
    pub fn closes(self) -> bool {
        matches!(self, ProxyError::BadHost | ProxyError::BadFraming | ProxyError::UnsupportedTransferCoding)
    }

    pub fn response(self) -> Response<ResponseBody> {
        let status = self.status();
        let mut r = plain_response(
            status,
            &format!("{} {}: {self}\n", status.as_u16(), status.canonical_reason().unwrap_or("Client Closed Request")),
        );
        if self == ProxyError::NoServer {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.closes() {
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}
