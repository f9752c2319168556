//! SNI -> certificate. [`CertMap`] indexes the served certificates by the
//! DNS names in their SANs (exact and `*.` wildcard); [`Resolver`] is the
//! rustls hook that answers each ClientHello from the live map, answers an
//! `acme-tls/1` handshake with the pending challenge certificate, and falls
//! back to the self-signed certificate or refuses, as configured.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::certs::{Loaded, Source};
use super::challenges::Challenges;
use crate::config::UnknownSni;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Certificates by name. Several certificates may cover a name (an RSA and
/// an ECDSA one): the first whose key the client can use wins.
#[derive(Debug, Default, Clone)]
pub struct CertMap {
    exact: HashMap<String, Vec<Arc<Loaded>>>,
    /// Keyed by the parent domain: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Vec<Arc<Loaded>>>,
}

impl CertMap {
    pub fn insert(&mut self, cert: Arc<Loaded>) {
        for name in &cert.info.names {
            let (table, key) = match name.strip_prefix("*.") {
                Some(parent) => (&mut self.wildcard, parent.to_string()),
                None => (&mut self.exact, name.clone()),
            };
            table.entry(key).or_default().push(Arc::clone(&cert));
        }
    }

    /// Replace every certificate from the same source covering exactly
    /// the same set of names (a renewal).
    pub fn replace(&mut self, cert: Arc<Loaded>) {
        let mut names = cert.info.names.clone();
        names.sort();
        let same = |c: &Arc<Loaded>| {
            let mut n = c.info.names.clone();
            n.sort();
            n == names && c.info.source == cert.info.source
        };
        for table in [&mut self.exact, &mut self.wildcard] {
            for list in table.values_mut() {
                list.retain(|c| !same(c));
            }
            table.retain(|_, l| !l.is_empty());
        }
        // Appended: a static certificate for the same name stays preferred.
        self.insert(cert);
    }

    /// This map with its static certificates replaced by `statics` (as read
    /// again from `certs_dir`): they come first, so they stay preferred over
    /// ACME-managed ones for the same name, which are kept.
    pub fn with_static(&self, statics: &[Arc<Loaded>]) -> CertMap {
        let mut next = CertMap::default();
        for cert in statics {
            next.insert(Arc::clone(cert));
        }
        for cert in self.all() {
            if cert.info.source != Source::Static {
                next.insert(cert);
            }
        }
        next
    }

    /// Every certificate covering `name` (exact first, then wildcard).
    pub fn lookup(&self, name: &str) -> impl Iterator<Item = &Arc<Loaded>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let exact = self.exact.get(&name).into_iter().flatten();
        let wild = name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)).into_iter().flatten();
        exact.chain(wild).collect::<Vec<_>>().into_iter()
    }

    pub fn covers(&self, name: &str) -> bool {
        self.lookup(name).next().is_some()
    }

    /// Every distinct certificate, for status output and metrics.
    pub fn all(&self) -> Vec<Arc<Loaded>> {
        // By identity: one certificate is listed under each of its names.
        // A set, since thousands of ACME hosts made a linear scan quadratic.
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<Arc<Loaded>> = Vec::new();
        for c in self.exact.values().chain(self.wildcard.values()).flatten() {
            if seen.insert(Arc::as_ptr(c)) {
                out.push(Arc::clone(c));
            }
        }
        out.sort_by(|a, b| a.info.names.cmp(&b.info.names));
        out
    }

    /// The first certificate for `name` whose key the client can use and
    /// that has not expired (an expired static certificate left in
    /// `certs_dir` must not shadow a valid ACME one); failing that, the
    /// first the client can use; failing that, the first.
    fn pick(&self, name: &str, schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let now = super::certs::unix_now();
        let (mut usable, mut first) = (None, None);
        for c in self.lookup(name) {
            let fits = c.key.key.choose_scheme(schemes).is_some();
            if fits && c.info.not_after > now {
                return Some(Arc::clone(&c.key));
            }
            if fits {
                usable.get_or_insert_with(|| Arc::clone(&c.key));
            }
            first.get_or_insert_with(|| Arc::clone(&c.key));
        }
        usable.or(first)
    }

    /// The certificate served for a certificate name (`*.example.com`
    /// included) by [`CertMap::pick`]'s rule: the first unexpired, else the
    /// first. What `rampart_certificate_expiry_timestamp_seconds` reports.
    pub fn served_for(&self, name: &str) -> Option<&Arc<Loaded>> {
        let list = match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.get(parent),
            None => self.exact.get(name),
        }?;
        let now = super::certs::unix_now();
        list.iter().find(|c| c.info.not_after > now).or_else(|| list.first())
    }
}

/// The rustls certificate resolver over the live map.
#[derive(Debug)]
pub struct Resolver {
    pub live: Arc<ArcSwap<CertMap>>,
    pub challenges: Arc<Challenges>,
    /// The self-signed certificate (for `localhost` and the route hosts),
    /// served to route hosts without a certificate and, with
    /// `unknown_sni = "default"`, to every other name.
    pub fallback: CertMap,
    pub fallback_key: Arc<CertifiedKey>,
    pub unknown_sni: UnknownSni,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_owned);
        if let Some(mut alpn) = hello.alpn() {
            if alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none() {
                // TLS-ALPN-01: only the challenge certificate, never HTTP.
                return sni.and_then(|n| self.challenges.alpn_cert(&n));
            }
        }
        let Some(name) = sni else {
            return match self.unknown_sni {
                UnknownSni::DefaultCert => Some(Arc::clone(&self.fallback_key)),
                UnknownSni::Reject => None,
            };
        };
        if let Some(key) = self.live.load().pick(&name, hello.signature_schemes()) {
            return Some(key);
        }
        if let Some(key) = self.fallback.pick(&name, hello.signature_schemes()) {
            return Some(key);
        }
        if self.unknown_sni == UnknownSni::DefaultCert {
            return Some(Arc::clone(&self.fallback_key));
        }
        tracing::debug!(sni = %name, "no certificate for this name: refusing the handshake");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::selfsigned::self_signed;

    fn cert(name: &str, source: Source) -> Arc<Loaded> {
        let mut c = self_signed(&[name.to_string()]).unwrap();
        c.info.source = source;
        Arc::new(c)
    }

    #[test]
    fn reread_static_certificates_replace_the_old_ones_and_keep_acme_ones_behind_them() {
        let (old_static, acme, other_acme) =
            (cert("a.test", Source::Static), cert("a.test", Source::Acme), cert("c.test", Source::Acme));
        let mut map = CertMap::default();
        for c in [&old_static, &acme, &other_acme] {
            map.insert(Arc::clone(c));
        }
        let new_static = cert("a.test", Source::Static);
        let next = map.with_static(&[Arc::clone(&new_static)]);
        let for_a: Vec<_> = next.lookup("a.test").collect();
        assert_eq!(for_a.len(), 2);
        assert!(Arc::ptr_eq(for_a[0], &new_static), "the static certificate stays preferred");
        assert!(Arc::ptr_eq(for_a[1], &acme));
        assert!(next.lookup("c.test").any(|c| Arc::ptr_eq(c, &other_acme)));
        assert!(!next.all().iter().any(|c| Arc::ptr_eq(c, &old_static)), "the old static certificate is gone");
        // No static certificates any more: only the ACME ones are left.
        assert_eq!(map.with_static(&[]).all().len(), 2);
    }

    /// An expired static certificate does not shadow a valid ACME one for
    /// the same name, for the handshake and for the expiry metric.
    #[test]
    fn an_expired_static_certificate_gives_way_to_a_valid_one() {
        let mut expired = self_signed(&["a.test".to_string()]).unwrap();
        expired.info.source = Source::Static;
        expired.info.not_after = 1_600_000_000;
        let (expired, acme) = (Arc::new(expired), cert("a.test", Source::Acme));
        let mut map = CertMap::default();
        map.insert(Arc::clone(&expired));
        map.insert(Arc::clone(&acme));
        let schemes = [SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::RSA_PSS_SHA256];
        let picked = map.pick("a.test", &schemes).unwrap();
        assert!(Arc::ptr_eq(&picked, &acme.key), "the expired static certificate was served");
        assert!(Arc::ptr_eq(map.served_for("a.test").unwrap(), &acme));
        // Alone, it is still served (as before): nothing better to give.
        let mut alone = CertMap::default();
        alone.insert(Arc::clone(&expired));
        assert!(Arc::ptr_eq(&alone.pick("a.test", &schemes).unwrap(), &expired.key));
    }
}
