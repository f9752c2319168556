//! Background revalidation for `stale-while-revalidate`: the client got the
//! stale response at once; this task asks the route's upstream with the
//! stored validators (`If-None-Match`, `If-Modified-Since`) and stores the
//! refreshed response (a 304's headers, or a new storable response). It
//! holds the key's lock, so one revalidation runs per key at a time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use super::respond;
use crate::body::RequestBody;
use crate::cache::flight::{Leader, Outcome};
use crate::cache::policy::{self, CacheControl};
use crate::cache::store::Entry;
use crate::cache::{Cache, Settings};
use crate::upstream::{Pool, RequestHead};

pub struct Job {
    pub cache: Arc<Cache>,
    pub settings: Settings,
    pub leader: Leader,
    pub entry: Arc<Entry>,
    pub primary: String,
    /// The client's request headers, as the proxy rewrote them.
    pub req_headers: HeaderMap,
    pub pool: Arc<Pool>,
    pub path: PathAndQuery,
    pub preserve_host: bool,
}

pub fn spawn(job: Job) {
    tokio::spawn(async move {
        // Bounded: a stuck upstream never keeps the key locked for long.
        let limit = job.pool.response_timeout() + job.pool.spec.connect_timeout + Duration::from_secs(5);
        if tokio::time::timeout(limit, run(job)).await.is_err() {
            tracing::debug!("background cache revalidation timed out");
        }
    });
}

async fn run(job: Job) {
    let Job { cache, settings, leader, entry, primary, req_headers, pool, path, preserve_host } = job;
    let mut headers = req_headers.clone();
    headers.remove(header::IF_MATCH);
    headers.remove(header::IF_UNMODIFIED_SINCE);
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
    if !respond::add_validators(&mut headers, &entry) {
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
    }
    if !preserve_host {
        headers.remove(header::HOST);
    }
    respond::announce_surrogate(&mut headers);
    let Some(idx) = pool.pick(&[]) else { return };
    let server = &pool.servers[idx];
    if !headers.contains_key(header::HOST) {
        if let Some(h) = &server.host_header {
            headers.insert(header::HOST, h.clone());
        }
    }
    let request_time = SystemTime::now();
    let guard = server.start_request();
    let head = RequestHead { method: &Method::GET, path_and_query: path.as_str(), headers: &headers, extra: &[] };
    let resp = match pool.client.request(server, head, RequestBody::empty()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "background cache revalidation failed");
            return;
        }
    };
    let (parts, mut body) = resp.into_parts();
    body.attach(guard);
    let response_time = SystemTime::now();
    if parts.status == StatusCode::NOT_MODIFIED {
        let fresh = respond::merge_304(&entry, &parts.headers, &settings, request_time, response_time);
        let req_cc = CacheControl::parse_request(&req_headers);
        if !leader.doomed() && respond::still_storable(&fresh, &parts.headers, &req_headers, &req_cc) {
            cache.store.update(&primary, &req_headers, fresh);
            leader.finish(Outcome::Stored);
        } else {
            cache.invalidate(&primary);
            leader.finish(Outcome::NotStored);
        }
        return;
    }
    let cc = CacheControl::parse_response(&parts.headers);
    let req_cc = CacheControl::parse_request(&req_headers);
    let storable = policy::storable(&Method::GET, &req_headers, &req_cc, parts.status, &parts.headers, &cc);
    let (Ok(()), Some(names)) = (storable, policy::vary_names(&parts.headers)) else { return };
    // Read the new body whole, up to max_object_size.
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        if let Some(d) = frame.data_ref() {
            if (buf.len() + d.len()) as u64 > settings.max_object_size {
                return;
            }
            buf.extend_from_slice(d);
        }
    }
    let e = respond::new_entry(
        &entry.host,
        &entry.path,
        parts.status,
        &parts.headers,
        buf.freeze(),
        &settings,
        request_time,
        response_time,
    );
    if leader.doomed() {
        leader.finish(Outcome::NotStored);
        return;
    }
    cache.store.insert(&primary, names, &req_headers, e);
    leader.finish(Outcome::Stored);
}
