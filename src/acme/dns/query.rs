//! DNS look-ups for DNS-01 with hickory's client, one server at a time: a
//! record set by type, the zone that holds a name (its SOA), CNAME chains,
//! and the system's resolvers from `/etc/resolv.conf`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_client::client::{Client, ClientHandle};
use hickory_client::proto::op::{MessageFinalizer, ResponseCode};
use hickory_client::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::udp::UdpClientStream;
use hickory_client::proto::xfer::DnsResponse;

use super::DnsError;

/// How long one query waits for its answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn name(s: &str) -> Result<Name, String> {
    Name::from_str(s).map_err(|e| format!("invalid DNS name {s:?}: {e}"))
}

/// A client for `server` over UDP; `signer` signs (and checks) every message.
pub async fn client(
    server: SocketAddr,
    signer: Option<Arc<dyn MessageFinalizer>>,
) -> Result<Client, hickory_client::proto::ProtoError> {
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(QUERY_TIMEOUT))
        .with_signer(signer)
        .build();
    let (client, background) = Client::connect(stream).await?;
    tokio::spawn(background);
    Ok(client)
}

/// One query; any answer that is not NOERROR or NXDOMAIN is an error.
pub async fn ask(server: SocketAddr, fqdn: &str, rtype: RecordType) -> Result<DnsResponse, DnsError> {
    let err = |message: String| DnsError::Query { server, name: fqdn.to_string(), message };
    let n = name(fqdn).map_err(err)?;
    let mut c = client(server, None).await.map_err(|e| err(e.to_string()))?;
    let r = c.query(n, DNSClass::IN, rtype).await.map_err(|e| err(e.to_string()))?;
    match r.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(r),
        other => Err(err(format!("answered {other}"))),
    }
}

/// The TXT strings at `fqdn` as `server` answers them.
pub async fn txt_values(server: SocketAddr, fqdn: &str) -> Result<Vec<String>, DnsError> {
    let r = ask(server, fqdn, RecordType::TXT).await?;
    Ok(r.answers()
        .iter()
        .filter_map(|rec| match rec.data() {
            RData::TXT(t) => Some(t.txt_data().iter().map(|s| String::from_utf8_lossy(s)).collect::<String>()),
            _ => None,
        })
        .collect())
}

/// The zone holding `fqdn`: the owner of the SOA record in the answer (the
/// name is the apex) or the authority section (it is below it).
pub async fn find_zone(server: SocketAddr, fqdn: &str) -> Result<Name, DnsError> {
    let r = ask(server, fqdn, RecordType::SOA).await?;
    r.answers()
        .iter()
        .chain(r.name_servers())
        .find(|rec| rec.record_type() == RecordType::SOA)
        .map(|rec| rec.name().clone())
        .ok_or_else(|| DnsError::NoZone(fqdn.to_string()))
}

/// Follow CNAMEs from `fqdn` (at most 8), asking the first of `servers`
/// that answers; `fqdn` itself when there is none or nobody answers.
pub async fn follow_cnames(servers: &[SocketAddr], fqdn: &str) -> String {
    let mut current = fqdn.to_string();
    'hops: for _ in 0..8 {
        for server in servers {
            let Ok(r) = ask(*server, &current, RecordType::CNAME).await else { continue };
            let target = r.answers().iter().find_map(|rec| match rec.data() {
                RData::CNAME(c) if rec.name().to_ascii().eq_ignore_ascii_case(&current) => Some(c.0.to_ascii()),
                _ => None,
            });
            match target {
                Some(t) => {
                    tracing::info!(from = %current, to = %t, "following the CNAME of the challenge name");
                    current = t;
                    continue 'hops;
                }
                None => return current,
            }
        }
        return current;
    }
    current
}

/// Name servers from `/etc/resolv.conf` (port 53).
pub fn system_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}
