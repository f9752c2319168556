//! Pending ACME challenge answers, shared between the order task that sets
//! them and the listeners that serve them: HTTP-01 tokens (port 80) and
//! TLS-ALPN-01 certificates (the `acme-tls/1` handshake on the HTTPS port).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::sign::CertifiedKey;

#[derive(Debug, Default)]
pub struct Challenges {
    /// HTTP-01: token -> key authorization.
    http: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: domain -> challenge certificate.
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.http.read().ok()?.get(token).cloned()
    }

    pub fn alpn_cert(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn.read().ok()?.get(&domain.to_ascii_lowercase()).cloned()
    }

    pub fn set_http(&self, token: &str, key_auth: &str) {
        if let Ok(mut m) = self.http.write() {
            m.insert(token.to_string(), key_auth.to_string());
        }
    }

    pub fn set_alpn(&self, domain: &str, cert: Arc<CertifiedKey>) {
        if let Ok(mut m) = self.alpn.write() {
            m.insert(domain.to_ascii_lowercase(), cert);
        }
    }

    pub fn clear_http(&self, token: &str) {
        if let Ok(mut m) = self.http.write() {
            m.remove(token);
        }
    }

    pub fn clear_alpn(&self, domain: &str) {
        if let Ok(mut m) = self.alpn.write() {
            m.remove(&domain.to_ascii_lowercase());
        }
    }
}
