//! The HTTP client the ACME account talks to the CA with: the one
//! instant-acme builds for itself (hyper over rustls, HTTPS only, the
//! platform's roots or `ca_cert`), with every request, body included,
//! bounded by [`CA_REQUEST_TIMEOUT`]. Without the bound, a CA that accepts
//! the connection and never answers held an order (and every order after
//! it) until the whole order's timeout.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// How long one request to the CA may take, its answer's body included.
/// A CA's slowest calls (finalize, certificate download) take seconds.
pub const CA_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct CaClient(Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl CaClient {
    /// Trusting `ca_cert` only when given, else the platform's roots.
    pub fn new(ca_cert: Option<&Path>) -> Result<CaClient, String> {
        let builder = match ca_cert {
            Some(path) => {
                let ca = |e: &dyn std::fmt::Display| format!("ca_cert {}: {e}", path.display());
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca(&e))? {
                    roots.add(cert.map_err(|e| ca(&e))?).map_err(|e| ca(&e))?;
                }
                if roots.is_empty() {
                    return Err(ca(&"no PEM certificate in the file"));
                }
                let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
                HttpsConnectorBuilder::new().with_tls_config(config)
            }
            None => HttpsConnectorBuilder::new().try_with_platform_verifier().map_err(|e| e.to_string())?,
        };
        let connector = builder.https_only().enable_http1().enable_http2().build();
        Ok(CaClient(Client::builder(TokioExecutor::new()).build(connector)))
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = self.0.request(req);
        Box::pin(async move {
            let whole = async {
                let resp = sent.await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
                let (parts, body) = resp.into_parts();
                let body = body.collect().await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?.to_bytes();
                Ok(BytesResponse::from(http::Response::from_parts(parts, Full::new(body))))
            };
            match tokio::time::timeout(CA_REQUEST_TIMEOUT, whole).await {
                Ok(result) => result,
                Err(_) => Err(instant_acme::Error::Str("the CA did not answer within 30s")),
            }
        })
    }
}
