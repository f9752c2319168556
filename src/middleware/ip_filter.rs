//! `ip_allow` / `ip_deny`: answer 403 unless (allow) or if (deny) the
//! client's address is in one of the listed networks, IPv4 or IPv6.

use std::net::IpAddr;

use http::{Response, StatusCode};
use ipnet::IpNet;

use super::client_ip::{contains, parse_cidrs};
use crate::body::plain_response;
use crate::body::ResponseBody;

#[derive(Debug)]
pub struct IpFilter {
    nets: Vec<IpNet>,
    /// true: only listed addresses pass; false: listed addresses are refused.
    allow: bool,
}

impl IpFilter {
    pub fn allow(list: &[String]) -> Result<Self, String> {
        if list.is_empty() {
            return Err("ip_allow needs at least one network in `allow`".into());
        }
        Ok(IpFilter { nets: parse_cidrs(list)?, allow: true })
    }

    pub fn deny(list: &[String]) -> Result<Self, String> {
        Ok(IpFilter { nets: parse_cidrs(list)?, allow: false })
    }

    pub fn on_request(&self, peer: IpAddr) -> Option<Response<ResponseBody>> {
        (contains(&self.nets, peer) != self.allow).then(|| plain_response(StatusCode::FORBIDDEN, "403 Forbidden\n"))
    }
}
