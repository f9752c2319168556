//! The disk tier's file format, pure: a stored key's file name (a 128-bit
//! hash of the key), and a slot encoded to and decoded from the bytes of
//! one file. Layout: `RMPC1\0\0\0`, u32 meta length, u64 body length, the
//! meta as JSON (the full key, checked on read, so a hash collision is a
//! miss), the body, u64 FNV-1a of meta and body (little-endian numbers).
//! Anything that does not parse or whose checksum is wrong decodes to
//! `None`.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::cache::policy::CacheControl;
use crate::cache::store::{Entry, Marker, Slot};

const MAGIC: &[u8; 8] = b"RMPC1\0\0\0";
const HEAD: usize = 8 + 4 + 8;

#[derive(Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) key: String,
    pub(super) host: String,
    pub(super) path: String,
    /// Present for a response, absent for a Vary marker.
    pub(super) status: Option<u16>,
    headers: Vec<(String, String)>,
    vary: Vec<String>,
    response_time: u64,
    initial_age: u64,
    lifetime: u64,
    stored: u64,
}

fn fnv(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seed;
    for p in parts {
        for b in p.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

pub(super) fn file_name(key: &str) -> String {
    let a = fnv(0xcbf2_9ce4_8422_2325, &[key.as_bytes()]);
    let b = fnv(0x8422_2325_cbf2_9ce4, &[key.as_bytes(), b"rampart"]);
    format!("{a:016x}{b:016x}")
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub(super) fn encode(key: &str, slot: &Slot) -> Option<Vec<u8>> {
    let (meta, body) = match slot {
        Slot::Object(e) => (
            Meta {
                key: key.to_string(),
                host: e.host.clone(),
                path: e.path.clone(),
                status: Some(e.status.as_u16()),
                headers: e.headers.iter().map(|(k, v)| (k.as_str().to_string(), b64().encode(v.as_bytes()))).collect(),
                vary: vec![],
                response_time: e.response_time,
                initial_age: e.initial_age,
                lifetime: e.lifetime,
                stored: e.stored,
            },
            e.body.clone(),
        ),
        Slot::Variants(m) => (
            Meta {
                key: key.to_string(),
                host: m.host.clone(),
                path: m.path.clone(),
                status: None,
                headers: vec![],
                vary: m.names.iter().map(|n| n.as_str().to_string()).collect(),
                response_time: 0,
                initial_age: 0,
                lifetime: 0,
                stored: m.created,
            },
            Bytes::new(),
        ),
    };
    let meta = serde_json::to_vec(&meta).ok()?;
    let mut out = Vec::with_capacity(HEAD + meta.len() + body.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(meta.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&body);
    out.extend_from_slice(&fnv(0xcbf2_9ce4_8422_2325, &[&meta, &body]).to_le_bytes());
    Some(out)
}

/// Parse a whole file; `None` if it is not one of ours, intact.
pub(super) fn decode(data: &[u8]) -> Option<(Meta, Bytes)> {
    if data.len() < HEAD + 8 || &data[..8] != MAGIC {
        return None;
    }
    let meta_len = u32::from_le_bytes(data[8..12].try_into().ok()?) as usize;
    let body_len = usize::try_from(u64::from_le_bytes(data[12..20].try_into().ok()?)).ok()?;
    let end = HEAD.checked_add(meta_len)?.checked_add(body_len)?;
    if data.len() != end.checked_add(8)? {
        return None;
    }
    let meta = &data[HEAD..HEAD + meta_len];
    let body = &data[HEAD + meta_len..end];
    let sum = u64::from_le_bytes(data[end..end + 8].try_into().ok()?);
    if sum != fnv(0xcbf2_9ce4_8422_2325, &[meta, body]) {
        return None;
    }
    Some((serde_json::from_slice(meta).ok()?, Bytes::copy_from_slice(body)))
}

pub(super) fn to_slot(meta: Meta, body: Bytes) -> Option<Slot> {
    let Some(status) = meta.status else {
        let names = meta.vary.iter().map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect::<Option<Vec<_>>>()?;
        return Some(Slot::Variants(Arc::new(Marker {
            host: meta.host,
            path: meta.path,
            names,
            created: meta.stored,
        })));
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &meta.headers {
        let v = b64().decode(v).ok()?;
        headers.append(HeaderName::from_bytes(k.as_bytes()).ok()?, HeaderValue::from_bytes(&v).ok()?);
    }
    let cc = CacheControl::parse_response(&headers);
    Some(Slot::Object(Arc::new(Entry {
        host: meta.host,
        path: meta.path,
        status: StatusCode::from_u16(status).ok()?,
        headers,
        body,
        response_time: meta.response_time,
        initial_age: meta.initial_age,
        lifetime: meta.lifetime,
        stored: meta.stored,
        cc,
        answer: OnceLock::new(),
    })))
}
