//! RFC 2136 dynamic updates, signed with TSIG (RFC 8945): `present` adds
//! one TXT record to the name's record set (class IN, an "add to an
//! RRset"), `cleanup` deletes that one record by its data (class NONE);
//! neither touches the other values at the name, so the apex and its
//! wildcard can validate at once. The zone is the one whose SOA the
//! primary names for the record.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_client::proto::dnssec::rdata::tsig::TsigAlgorithm as HickoryAlg;
use hickory_client::proto::dnssec::tsig::TSigner;
use hickory_client::proto::op::{update_message, Message, MessageFinalizer, ResponseCode};
use hickory_client::proto::rr::rdata::TXT;
use hickory_client::proto::rr::{RData, Record};

use super::query::{self, name};
use super::{DnsError, DnsProvider};
use crate::config::{TsigAlgorithm, TsigSpec};

pub struct Rfc2136 {
    nameserver: SocketAddr,
    tsig: Option<TsigSpec>,
    ttl: u32,
}

/// Seconds of clock difference a signature tolerates (RFC 8945's 300).
const FUDGE: u16 = 300;

fn algorithm_name(a: TsigAlgorithm) -> &'static str {
    match a {
        TsigAlgorithm::HmacSha256 => "hmac-sha256",
        TsigAlgorithm::HmacSha512 => "hmac-sha512",
    }
}

impl Rfc2136 {
    pub fn new(nameserver: SocketAddr, tsig: Option<TsigSpec>, ttl: u32) -> Rfc2136 {
        Rfc2136 { nameserver, tsig, ttl }
    }

    fn signer(&self) -> Result<Option<Arc<dyn MessageFinalizer>>, DnsError> {
        let Some(t) = &self.tsig else { return Ok(None) };
        let alg = match t.algorithm {
            TsigAlgorithm::HmacSha256 => HickoryAlg::HmacSha256,
            TsigAlgorithm::HmacSha512 => HickoryAlg::HmacSha512,
        };
        let bad = |message: String| self.tsig_error(t, message);
        let key_name = name(&t.key).map_err(bad)?;
        let signer = TSigner::new(t.secret.clone(), alg, key_name, FUDGE).map_err(|e| bad(e.to_string()))?;
        Ok(Some(Arc::new(signer)))
    }

    fn tsig_error(&self, t: &TsigSpec, message: String) -> DnsError {
        DnsError::Tsig { server: self.nameserver, key: t.key.clone(), algorithm: algorithm_name(t.algorithm), message }
    }

    async fn update(&self, fqdn: &str, value: &str, add: bool) -> Result<(), DnsError> {
        let verb = if add { "adding a TXT record" } else { "deleting a TXT record" };
        let fail =
            |message: String| DnsError::Update { server: self.nameserver, name: fqdn.to_string(), verb, message };
        let zone = query::find_zone(self.nameserver, fqdn).await?;
        let owner = name(fqdn).map_err(fail)?;
        let ttl = if add { self.ttl } else { 0 };
        let record = Record::from_rdata(owner, ttl, RData::TXT(TXT::new(vec![value.to_string()])));
        let mut message = if add {
            update_message::append(record.into(), zone.clone(), false, false)
        } else {
            update_message::delete_by_rdata(record.into(), zone.clone(), false)
        };
        message.set_id(random_id());
        let verifier = match self.signer()? {
            Some(signer) => message.finalize(&*signer, unix_now()).map_err(|e| fail(e.to_string()))?,
            None => None,
        };
        let request = message.to_vec().map_err(|e| fail(e.to_string()))?;
        let answer = exchange(self.nameserver, &request, message.id()).await.map_err(fail)?;
        let parsed = Message::from_vec(&answer).map_err(|e| fail(format!("unreadable answer: {e}")))?;
        let key = self.tsig.as_ref();
        let tsig_error = if parsed.signature().is_empty() { None } else { tsig_error_code(&answer) };
        match (parsed.response_code(), key, tsig_error) {
            (ResponseCode::NoError, _, _) => {
                if let (Some(t), Some(mut verify)) = (key, verifier) {
                    verify(&answer).map_err(|e| self.tsig_error(t, format!("the answer's signature does not verify: {e}")))?;
                }
                tracing::info!(%fqdn, zone = %zone, server = %self.nameserver, added = add, "DNS update applied");
                Ok(())
            }
            (ResponseCode::NotAuth, Some(t), Some(16)) => Err(self.tsig_error(
                t,
                "BADSIG: the signature does not verify, so tsig_secret (or tsig_algorithm) differs from the server's".into(),
            )),
            (ResponseCode::NotAuth, Some(t), Some(18)) => {
                Err(self.tsig_error(t, "BADTIME: this host's clock and the server's differ by more than 5 minutes".into()))
            }
            (ResponseCode::NotAuth, Some(t), Some(17)) => Err(fail(format!(
                "refused (NOTAUTH, TSIG BADKEY): the server does not accept key {:?} for this name; the key is unknown to it \
                 or its update policy does not let the key change {fqdn} in zone {zone}",
                t.key
            ))),
            (ResponseCode::Refused, _, _) | (ResponseCode::NotAuth, None, _) => Err(fail(format!(
                "refused ({}): the server's update policy does not let {} change {fqdn} in zone {zone}",
                parsed.response_code(),
                key.map_or("an unsigned update".to_string(), |t| format!("key {:?}", t.key))
            ))),
            (other, _, _) => Err(fail(format!("answered {other}"))),
        }
    }
}

fn unix_now() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    let rng = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    let _ = rng.fill(&mut b);
    u16::from_le_bytes(b)
}

/// The error field of the TSIG record that ends `message` (RFC 8945 4.2:
/// ... Original ID, Error, Other Len, Other Data).
fn tsig_error_code(message: &[u8]) -> Option<u16> {
    let n = message.len();
    let other_len = usize::from(u16::from_be_bytes([*message.get(n.checked_sub(2)?)?, message[n - 1]]));
    let at = n.checked_sub(4 + other_len)?;
    Some(u16::from_be_bytes([*message.get(at)?, *message.get(at + 1)?]))
}

/// Send one UDP request to `server` and wait for the answer with `id`.
async fn exchange(server: SocketAddr, request: &[u8], id: u16) -> Result<Vec<u8>, String> {
    let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    socket.send(request).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let wait = async {
        loop {
            let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
            if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                return Ok(buf[..n].to_vec());
            }
        }
    };
    tokio::time::timeout(query::QUERY_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", query::QUERY_TIMEOUT.as_secs())))
}

#[async_trait::async_trait]
impl DnsProvider for Rfc2136 {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.update(fqdn, value, true).await
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.update(fqdn, value, false).await
    }
}
