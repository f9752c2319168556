//! Small value types that parse themselves while the file is read, so a bad
//! duration, address or size is reported at the value's own line and column.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A duration written with units: `"250ms"`, `"10s"`, `"30d"`; at most
/// [`MAX_DURATION`]. For timeouts and intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// The same without the bound, for a span compared with dates only, never
/// added to the clock: ACME's `renew_before`, where more than a
/// certificate's lifetime means "renew at every start".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongDuration(pub Duration);

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        // Only the unit is worth repeating: the others name a byte offset.
        let why = match e {
            humantime::DurationError::UnknownUnit { unit, .. } => format!(" (unknown unit {unit:?})"),
            _ => String::new(),
        };
        format!("invalid duration {s:?}{why}; write it with a unit, like \"10s\" or \"250ms\"")
    })
}

impl<'de> Deserialize<'de> for LongDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(LongDuration).map_err(de::Error::custom)
    }
}

/// A year: longer than any timeout or interval means, and short enough
/// that adding it (times 32, for `fail_timeout`'s back-off) to the clock
/// cannot overflow, which would panic on every connection.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let d = parse_duration(&s).map_err(de::Error::custom)?;
        if d > MAX_DURATION {
            return Err(de::Error::custom(format!("duration {s:?} is longer than a year")));
        }
        Ok(HumanDuration(d))
    }
}

/// A listen address: `IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim().parse().map(ListenAddr).map_err(|_| {
            de::Error::custom(format!(
                "invalid listen address {s:?}; expected IP:PORT such as \"0.0.0.0:80\" or \"[::]:443\""
            ))
        })
    }
}

/// An upstream server address, `HOST:PORT` (an IP or a DNS name, as in a
/// compose file's `backend:7600`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamAddr(pub String);

impl UpstreamAddr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!("invalid server address {s:?}; expected HOST:PORT such as \"127.0.0.1:7600\" or \"backend:7600\"")
        };
        if s.parse::<SocketAddr>().is_ok() {
            return Ok(UpstreamAddr(s.to_string()));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port_ok = port.parse::<u16>().map(|p| p != 0).unwrap_or(false);
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if port_ok && host_ok {
            Ok(UpstreamAddr(s.to_ascii_lowercase()))
        } else {
            Err(bad())
        }
    }
}

/// One entry of `servers`: a bare `"HOST:PORT"`, `{ addr = "...", weight = N }`,
/// or `{ dns = "NAME:PORT", weight = N }` (one server per A/AAAA record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawServer {
    pub addr: UpstreamAddr,
    pub weight: u32,
    /// `addr` is a name to expand into every address it resolves to.
    pub dns: bool,
}

impl<'de> Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawServer;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"HOST:PORT\", { addr = \"HOST:PORT\", weight = N } or { dns = \"NAME:PORT\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawServer, E> {
                Ok(RawServer { addr: UpstreamAddr::parse(v).map_err(E::custom)?, weight: 1, dns: false })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawServer, A::Error> {
                let mut addr = None;
                let mut weight = 1u32;
                let mut dns = false;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" | "dns" => {
                            if addr.is_some() {
                                return Err(de::Error::custom("a server has either addr or dns, not both"));
                            }
                            let s: String = map.next_value()?;
                            addr = Some(UpstreamAddr::parse(&s).map_err(de::Error::custom)?);
                            dns = key == "dns";
                        }
                        "weight" => {
                            let w: i64 = map.next_value()?;
                            if !(1..=1000).contains(&w) {
                                return Err(de::Error::custom(format!("weight must be between 1 and 1000, got {w}")));
                            }
                            weight = w as u32;
                        }
                        other => return Err(de::Error::unknown_field(other, &["addr", "dns", "weight"])),
                    }
                }
                let addr = addr.ok_or_else(|| de::Error::missing_field("addr"))?;
                Ok(RawServer { addr, weight, dns })
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte count: an integer, or a string with a unit (`"1MiB"`, `"512KB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<u64, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 =
            num.parse().map_err(|_| format!("invalid size {s:?}; expected bytes such as 1000000 or \"1MiB\""))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?} in {s:?}; use B, KB, KiB, MB, MiB, GB or GiB")),
        };
        n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte count such as 1000000 or \"1MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("size must not be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse a CIDR list (`10.0.0.0/8`, `::1/128`, or a bare address).
/// Networks written in IPv4-mapped form (`::ffff:10.0.0.0/104`) become
/// their IPv4 network, because client addresses are compared as IPv4
/// once unmapped (`client_ip::canonical`): kept as IPv6 they would match
/// no client at all, and a deny rule would silently let everyone in.
pub fn parse_cidrs(list: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(unmapped)
                .map_err(|_| {
                    format!(
                        "invalid CIDR {s:?}; expected an address or network such as \"10.0.0.0/8\" or \"2001:db8::/32\""
                    )
                })
        })
        .collect()
}

/// `net` as an IPv4 network if it lies within `::ffff:0:0/96`.
fn unmapped(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map(ipnet::IpNet::V4).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_addresses() {
        assert!(UpstreamAddr::parse("127.0.0.1:7600").is_ok());
        assert!(UpstreamAddr::parse("[::1]:7600").is_ok());
        assert_eq!(UpstreamAddr::parse("Backend:7600").unwrap().0, "backend:7600");
        assert!(UpstreamAddr::parse("backend").is_err());
        assert!(UpstreamAddr::parse("backend:0").is_err());
        assert!(UpstreamAddr::parse("backend:99999").is_err());
        assert!(UpstreamAddr::parse("bad host:80").is_err());
        assert!(UpstreamAddr::parse(":80").is_err());
    }

    #[test]
    fn mapped_networks_become_ipv4() {
        let nets =
            parse_cidrs(&["::ffff:127.0.0.1".into(), "::ffff:10.0.0.0/104".into(), "::ffff:0:0/96".into()]).unwrap();
        let want: Vec<ipnet::IpNet> =
            ["127.0.0.1/32", "10.0.0.0/8", "0.0.0.0/0"].iter().map(|n| n.parse().unwrap()).collect();
        assert_eq!(nets, want);
        // Other IPv6 networks stay as written.
        assert_eq!(parse_cidrs(&["::1".into()]).unwrap(), vec!["::1/128".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(parse_cidrs(&["::/0".into()]).unwrap(), vec!["::/0".parse::<ipnet::IpNet>().unwrap()]);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("1000").unwrap(), 1000);
        assert_eq!(ByteSize::parse("1MiB").unwrap(), 1 << 20);
        assert_eq!(ByteSize::parse("2 KB").unwrap(), 2000);
        assert!(ByteSize::parse("1XB").is_err());
        assert!(ByteSize::parse("abc").is_err());
    }
}
