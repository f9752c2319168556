//! `[acme]` and `[[certificates]]` validated: the challenge type, the DNS-01
//! provider (`[acme.dns]`, its TSIG secret read here so a missing file is a
//! config error at its line), on-demand TLS (`[acme.on_demand]`), and which
//! names get certificates (wildcards only under DNS-01).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_spanned::Spanned;

use super::compile::Compiler;
use super::raw::{RawAcme, RawAcmeDns, RawCertificate, RawOnDemand};
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    TlsAlpn01,
    Http01,
    Dns01,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub email: Option<String>,
    pub directory: String,
    pub challenge: AcmeChallenge,
    /// `None`: 30 days, or a third of the certificate's lifetime if shorter.
    pub renew_before: Option<Duration>,
    pub ca_cert: Option<PathBuf>,
    /// Set exactly when `challenge` is DNS-01.
    pub dns: Option<DnsSettings>,
    pub on_demand: Option<OnDemandSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    pub provider: DnsProviderSpec,
    /// Zero: publish and go on without checking.
    pub propagation_timeout: Duration,
    /// Asked instead of the zone's authoritative servers when not empty.
    pub resolvers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsProviderSpec {
    Rfc2136 { nameserver: SocketAddr, tsig: Option<TsigSpec>, ttl: u32 },
    Exec { command: PathBuf, timeout: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha512,
}

#[derive(Clone, PartialEq, Eq)]
pub struct TsigSpec {
    /// The key's name, as the server knows it (`rampart.`).
    pub key: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigSpec").field("key", &self.key).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDemandSettings {
    /// `http://` URL; `?domain=NAME` (or `&domain=NAME`) is appended.
    pub ask: String,
    pub wait: Duration,
    pub max_per_hour: u32,
}

/// One `[[certificates]]` entry: the names of one certificate, lower-case,
/// as written (the first is its primary name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub names: Vec<String>,
    pub line: usize,
    pub col: usize,
}

/// A host name or, with `allow_wildcard`, `*.name`; lower-case.
pub fn valid_cert_name(s: &str) -> bool {
    let name = s.strip_prefix("*.").unwrap_or(s);
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
        })
}

/// `IP` or `IP:PORT` (port 53 by default).
fn dns_server(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    s.parse::<SocketAddr>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

impl Compiler<'_> {
    pub(super) fn acme(&mut self, a: &Spanned<RawAcme>) -> AcmeSettings {
        let span = a.span();
        let a = a.get_ref();
        let challenge = self.keyword(
            &a.challenge,
            "challenge",
            &[
                ("tls-alpn-01", AcmeChallenge::TlsAlpn01),
                ("http-01", AcmeChallenge::Http01),
                ("dns-01", AcmeChallenge::Dns01),
            ],
        );
        let directory = match a.directory.as_deref() {
            None | Some("production") | Some("letsencrypt") => LETS_ENCRYPT_PRODUCTION.to_string(),
            Some("staging") | Some("letsencrypt-staging") => LETS_ENCRYPT_STAGING.to_string(),
            Some(url) => {
                // The CA is spoken to over HTTPS only (the ACME client
                // refuses anything else); an unparsable URL would fail
                // every order, so it is refused here.
                let https = url
                    .parse::<http::Uri>()
                    .ok()
                    .is_some_and(|u| u.scheme_str() == Some("https") && u.host().is_some());
                if !https {
                    self.err(
                        self.lines.key_span("acme", "directory").or(Some(span.clone())),
                        format!("directory must be an https:// URL (or production, staging), got {url:?}"),
                    );
                }
                url.to_string()
            }
        };
        let dns = match (&a.dns, challenge) {
            (Some(d), AcmeChallenge::Dns01) => self.acme_dns(d),
            (Some(d), _) => {
                self.err(Some(d.span()), "[acme.dns] is used only with challenge = \"dns-01\"");
                None
            }
            (None, AcmeChallenge::Dns01) => {
                let at = a.challenge.as_ref().map(|c| c.span()).unwrap_or(span.clone());
                self.err(
                    Some(at),
                    "challenge = \"dns-01\" needs an [acme.dns] table (provider = \"rfc2136\" or \"exec\")",
                );
                None
            }
            (None, _) => None,
        };
        // The CA refuses the account of a contact that is no address
        // (RFC 8555 7.3: `invalidContact`), and then every order: said here.
        if let Some(email) = a.email.as_deref().filter(|e| !plausible_email(e)) {
            self.err(
                self.lines.key_span("acme", "email").or(Some(span.clone())),
                format!("email must be an address like ops@example.com, got {email:?}"),
            );
        }
        AcmeSettings {
            email: a.email.clone(),
            directory,
            challenge,
            renew_before: a.renew_before.map(|d| d.0),
            ca_cert: a.ca_cert.as_deref().map(|p| self.relative(p)),
            dns,
            on_demand: a.on_demand.as_ref().map(|o| self.on_demand(o)),
        }
    }

    fn acme_dns(&mut self, d: &Spanned<RawAcmeDns>) -> Option<DnsSettings> {
        let span = d.span();
        let span = &span;
        let d = d.get_ref();
        let Some(provider) = &d.provider else {
            self.err(Some(span.clone()), "[acme.dns] needs provider = \"rfc2136\" or \"exec\"");
            return None;
        };
        let mut resolvers = Vec::new();
        for r in &d.resolvers {
            match dns_server(r.get_ref()) {
                Some(a) => resolvers.push(a),
                None => self.err(Some(r.span()), format!("invalid resolver {:?}; expected IP or IP:PORT", r.get_ref())),
            }
        }
        let provider = match provider.get_ref().as_str() {
            "rfc2136" => {
                let nameserver = match &d.nameserver {
                    None => {
                        self.err(Some(span.clone()), "provider = \"rfc2136\" needs nameserver = \"IP:PORT\"");
                        None
                    }
                    Some(n) => dns_server(n.get_ref()).or_else(|| {
                        self.err(
                            Some(n.span()),
                            format!("invalid nameserver {:?}; expected IP or IP:PORT", n.get_ref()),
                        );
                        None
                    }),
                };
                let tsig = self.tsig(d, span.clone());
                let ttl = self.int_in(&d.ttl, "ttl", 1, 86_400, 60u32);
                DnsProviderSpec::Rfc2136 { nameserver: nameserver?, tsig, ttl }
            }
            "exec" => {
                let Some(command) = &d.command else {
                    self.err(Some(span.clone()), "provider = \"exec\" needs command = \"/path/to/hook\"");
                    return None;
                };
                DnsProviderSpec::Exec {
                    command: self.relative(command.get_ref()),
                    timeout: d.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(60)),
                }
            }
            other => {
                self.err(Some(provider.span()), format!("provider must be \"rfc2136\" or \"exec\", got {other:?}"));
                return None;
            }
        };
        Some(DnsSettings {
            provider,
            propagation_timeout: d.propagation_timeout.map(|t| t.0).unwrap_or(Duration::from_secs(120)),
            resolvers,
        })
    }

    /// The TSIG key, its secret inline or read from `tsig_secret_file`.
    fn tsig(&mut self, d: &RawAcmeDns, span: std::ops::Range<usize>) -> Option<TsigSpec> {
        use base64::Engine;
        let key = d.tsig_key.as_ref()?;
        let algorithm = self.keyword(
            &d.tsig_algorithm,
            "tsig_algorithm",
            &[("hmac-sha256", TsigAlgorithm::HmacSha256), ("hmac-sha512", TsigAlgorithm::HmacSha512)],
        );
        let (text, at) = match (&d.tsig_secret, &d.tsig_secret_file) {
            (Some(s), None) => (s.get_ref().clone(), s.span()),
            (None, Some(f)) => match std::fs::read_to_string(self.relative(f.get_ref())) {
                Ok(t) => (t, f.span()),
                Err(e) => {
                    self.err(Some(f.span()), format!("cannot read tsig_secret_file {:?}: {e}", f.get_ref()));
                    return None;
                }
            },
            (Some(s), Some(_)) => {
                self.err(Some(s.span()), "give tsig_secret or tsig_secret_file, not both");
                return None;
            }
            (None, None) => {
                self.err(Some(span), "tsig_key needs tsig_secret = \"BASE64\" or tsig_secret_file = \"PATH\"");
                return None;
            }
        };
        // A BIND key file holds more than the secret: take `secret "..."` if present.
        let text =
            text.split_once("secret").and_then(|(_, rest)| rest.split('"').nth(1)).map(str::to_owned).unwrap_or(text);
        match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
            Ok(secret) if !secret.is_empty() => Some(TsigSpec { key: key.get_ref().clone(), algorithm, secret }),
            _ => {
                self.err(Some(at), "the TSIG secret is not base64 (as tsig-keygen / keymgr print it)");
                None
            }
        }
    }

    fn on_demand(&mut self, o: &Spanned<RawOnDemand>) -> OnDemandSettings {
        let o = o.get_ref();
        let ask = o.ask.get_ref().trim().to_string();
        // No fragment: `&domain=NAME` goes at the end of the URL, and after
        // a `#` it would never be sent, so the endpoint would be asked
        // about no name at all.
        let ok = !ask.contains('#')
            && ask.parse::<http::Uri>().ok().is_some_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
        if !ok {
            self.err(Some(o.ask.span()), format!("ask must be an http:// URL without a #fragment, got {ask:?}"));
        }
        OnDemandSettings {
            ask,
            wait: o.wait.map(|w| w.0).unwrap_or(Duration::from_secs(10)),
            max_per_hour: self.int_in(&o.max_per_hour, "max_per_hour", 1, 1_000_000, 60u32),
        }
    }

    /// `[[certificates]]` entries; wildcards need DNS-01.
    pub(super) fn certificates(
        &mut self,
        raw: &[Spanned<RawCertificate>],
        acme: Option<&AcmeSettings>,
    ) -> Vec<CertificateSpec> {
        let mut out = Vec::new();
        for c in raw {
            let (line, col) = self.lines.line_col(c.span().start);
            let names_span = c.get_ref().names.span();
            if acme.is_none() {
                self.err(Some(c.span()), "[[certificates]] needs an [acme] table to obtain them");
            }
            let mut names: Vec<String> = Vec::new();
            for n in c.get_ref().names.get_ref() {
                let name = n.get_ref().trim().trim_end_matches('.').to_ascii_lowercase();
                if !valid_cert_name(&name) {
                    self.err(
                        Some(n.span()),
                        format!("invalid certificate name {name:?}; expected \"example.com\" or \"*.example.com\""),
                    );
                } else if name.starts_with("*.") && acme.is_some_and(|a| a.challenge != AcmeChallenge::Dns01) {
                    self.err(Some(n.span()), format!("wildcard name {name:?} needs challenge = \"dns-01\""));
                } else if names.contains(&name) {
                    self.err(Some(n.span()), format!("name {name:?} is listed twice"));
                } else {
                    names.push(name);
                }
            }
            if c.get_ref().names.get_ref().is_empty() {
                self.err(Some(names_span.clone()), "names must list at least one name");
            }
            if names.len() > 100 {
                self.err(Some(names_span), "at most 100 names per certificate (the CA's limit)");
            }
            out.push(CertificateSpec { names, line, col });
        }
        out
    }

    /// A wildcard route host gets a certificate only under DNS-01, or one
    /// per name under it with on-demand TLS.
    pub(super) fn check_wildcard_routes(
        &mut self,
        routes: &[Spanned<super::raw::RawRoute>],
        acme: Option<&AcmeSettings>,
    ) {
        let Some(acme) = acme.filter(|a| a.challenge != AcmeChallenge::Dns01 && a.on_demand.is_none()) else {
            return;
        };
        let word = if acme.challenge == AcmeChallenge::Http01 { "http-01" } else { "tls-alpn-01" };
        for r in routes {
            if let Some(h) = r.get_ref().host.as_ref().filter(|h| h.get_ref().trim().starts_with("*.")) {
                self.err(
                    Some(h.span()),
                    format!(
                        "wildcard host {:?} cannot get an ACME certificate with challenge = \"{word}\"; use challenge = \"dns-01\" with [acme.dns], or [acme.on_demand] for a certificate per name",
                        h.get_ref()
                    ),
                );
            }
        }
    }
}

/// `local@domain.tld`: one `@`, something before it, a dotted name after
/// it, no spaces or characters a `mailto:` URL cannot carry as they are.
fn plausible_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else { return false };
    let fine = |s: &str| !s.is_empty() && !s.bytes().any(|b| b.is_ascii_whitespace() || b"@,;<>\"?".contains(&b));
    fine(local) && fine(domain) && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
}

#[cfg(test)]
mod tests {
    use super::plausible_email;

    #[test]
    fn an_acme_contact_must_look_like_an_address() {
        for ok in ["ops@example.com", "first.last+tag@mail.example.co.uk"] {
            assert!(plausible_email(ok), "{ok}");
        }
        for bad in [
            "not-an-email",
            "@example.com",
            "ops@",
            "ops@localhost",
            "ops@example.com.",
            "a b@example.com",
            "a@b@c.com",
            "ops@example.com,x@y.z",
        ] {
            assert!(!plausible_email(bad), "{bad}");
        }
    }
}
