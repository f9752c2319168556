use super::*;

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    m
}

#[test]
fn parses_directives_first_wins_and_bad_numbers_are_stale() {
    let cc = CacheControl::parse(&h(&[
        ("cache-control", "max-age=60, Max-Age=5, s-maxage=\"30\""),
        ("cache-control", "stale-while-revalidate=10, no-cache=\"set-cookie, x\", PRIVATE"),
    ]));
    assert_eq!(cc.max_age, Some(60));
    assert_eq!(cc.s_maxage, Some(30));
    assert_eq!(cc.stale_while_revalidate, Some(10));
    assert!(cc.no_cache && cc.private && !cc.public);
    assert_eq!(CacheControl::parse(&h(&[("cache-control", "max-age=abc")])).max_age, Some(0));
    assert_eq!(CacheControl::parse(&h(&[("cache-control", "max-age=-1")])).max_age, Some(0));
}

#[test]
fn storability_keeps_private_data_private() {
    let get = Method::GET;
    let none = HeaderMap::new();
    let cc = |s: &str| CacheControl::parse(&h(&[("cache-control", s)]));
    let ok = |rh: &HeaderMap, s: StatusCode, hs: &HeaderMap| {
        storable(&get, rh, &CacheControl::default(), s, hs, &CacheControl::parse(hs))
    };
    assert_eq!(ok(&none, StatusCode::OK, &h(&[("cache-control", "max-age=60")])), Ok(()));
    assert_eq!(ok(&none, StatusCode::OK, &h(&[("cache-control", "private, max-age=60")])), Err(NotStored::Private));
    assert_eq!(ok(&none, StatusCode::OK, &h(&[("cache-control", "no-store")])), Err(NotStored::NoStore));
    let cookie = h(&[("cache-control", "max-age=60"), ("set-cookie", "a=b")]);
    assert_eq!(ok(&none, StatusCode::OK, &cookie), Err(NotStored::SetCookie));
    let public_cookie = h(&[("cache-control", "public, max-age=60"), ("set-cookie", "a=b")]);
    assert_eq!(ok(&none, StatusCode::OK, &public_cookie), Ok(()));
    let auth = h(&[("authorization", "Basic eDp5")]);
    assert_eq!(ok(&auth, StatusCode::OK, &h(&[("cache-control", "max-age=60")])), Err(NotStored::Authorization));
    assert_eq!(ok(&auth, StatusCode::OK, &h(&[("cache-control", "s-maxage=60")])), Ok(()));
    assert_eq!(ok(&none, StatusCode::OK, &h(&[("vary", "accept, *")])), Err(NotStored::VaryStar));
    assert_eq!(ok(&none, StatusCode::FOUND, &HeaderMap::new()), Err(NotStored::NoFreshness));
    // The answer to one request's `If-Match` or `Range`, not to the URL.
    let year = h(&[("cache-control", "public, max-age=31536000, immutable")]);
    assert_eq!(ok(&none, StatusCode::PRECONDITION_FAILED, &year), Err(NotStored::Status));
    assert_eq!(ok(&none, StatusCode::RANGE_NOT_SATISFIABLE, &year), Err(NotStored::Status));
    assert_eq!(ok(&none, StatusCode::PARTIAL_CONTENT, &year), Err(NotStored::Status));
    let post = storable(&Method::POST, &none, &cc(""), StatusCode::OK, &none, &cc("max-age=5"));
    assert_eq!(post, Err(NotStored::Method));
}

#[test]
fn lifetime_prefers_s_maxage_then_max_age_then_expires_then_heuristic() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let d = httpdate::fmt_http_date(now);
    let e = httpdate::fmt_http_date(now + Duration::from_secs(100));
    let life = |hs: &HeaderMap, heur: u64| {
        freshness_lifetime(StatusCode::OK, hs, &CacheControl::parse(hs), Duration::from_secs(heur), now)
    };
    assert_eq!(life(&h(&[("cache-control", "max-age=5, s-maxage=7")]), 0), 7);
    assert_eq!(life(&h(&[("cache-control", "max-age=5"), ("expires", &e)]), 0), 5);
    assert_eq!(life(&h(&[("date", &d), ("expires", &e)]), 0), 100);
    assert_eq!(life(&h(&[("expires", "0")]), 50), 0);
    assert_eq!(life(&HeaderMap::new(), 50), 50);
    let found = freshness_lifetime(
        StatusCode::FOUND,
        &HeaderMap::new(),
        &CacheControl::default(),
        Duration::from_secs(50),
        now,
    );
    assert_eq!(found, 0);
}

#[test]
fn surrogate_control_speaks_to_this_cache_over_cache_control() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let cc = |pairs: &[(&str, &str)]| CacheControl::parse_response(&h(pairs));
    let life = |pairs: &[(&str, &str)]| {
        let hs = h(pairs);
        freshness_lifetime(StatusCode::OK, &hs, &CacheControl::parse_response(&hs), Duration::ZERO, now)
    };
    let stored = |pairs: &[(&str, &str)]| {
        let hs = h(pairs);
        let none = HeaderMap::new();
        storable(&Method::GET, &none, &CacheControl::default(), StatusCode::OK, &hs, &CacheControl::parse_response(&hs))
    };
    // Its max-age wins over Cache-Control's, shorter or longer, and
    // lifts no-store and no-cache, which are then the browsers'.
    assert_eq!(life(&[("cache-control", "max-age=3600"), ("surrogate-control", "max-age=1")]), 1);
    assert_eq!(life(&[("cache-control", "s-maxage=1"), ("surrogate-control", "MaX-aGe=3600")]), 3600);
    assert_eq!(stored(&[("cache-control", "no-store"), ("surrogate-control", "max-age=60")]), Ok(()));
    assert!(!cc(&[("cache-control", "no-cache"), ("surrogate-control", "max-age=60")]).no_cache);
    // Its no-store wins over any lifetime.
    let no_store = [("cache-control", "max-age=600"), ("surrogate-control", "no-store")];
    assert_eq!(stored(&no_store), Err(NotStored::NoStore));
    // Never over private.
    assert_eq!(stored(&[("cache-control", "private"), ("surrogate-control", "max-age=60")]), Err(NotStored::Private));
    // Targeted at this cache: over untargeted; at another: ignored.
    assert_eq!(life(&[("surrogate-control", "max-age=5, max-age=50;rampart")]), 50);
    assert_eq!(life(&[("surrogate-control", "max-age=5, max-age=50 ; RAMPART")]), 50);
    let spaced = [("cache-control", "max-age=600"), ("surrogate-control", "no-store ;rampart")];
    assert_eq!(stored(&spaced), Err(NotStored::NoStore));
    assert_eq!(life(&[("cache-control", "max-age=7"), ("surrogate-control", "max-age=3600;other")]), 7);
    // Strict values; max-age=N+M lives N; an extension is skipped.
    assert_eq!(life(&[("cache-control", "max-age=7"), ("surrogate-control", "max-age= 100")]), 7);
    assert_eq!(life(&[("cache-control", "max-age=7"), ("surrogate-control", "max-age =100")]), 7);
    assert_eq!(life(&[("surrogate-control", "foo, max-age=30+600")]), 30);
    assert_eq!(life(&[("surrogate-control", "max-age=99999999999")]), u64::from(u32::MAX));
    // Requests never read it.
    assert_eq!(CacheControl::parse(&h(&[("surrogate-control", "max-age=5")])).surrogate_max_age, None);
}

#[test]
fn age_counts_the_age_header_and_the_delay() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let t1 = t0 + Duration::from_secs(2);
    assert_eq!(initial_age(&h(&[("age", "30")]), t0, t1), 32);
    assert!(initial_age(&h(&[("age", "x")]), t0, t1) > 1_000_000);
    assert!(initial_age(&h(&[("age", "1, 2")]), t0, t1) > 1_000_000);
    let old_date = httpdate::fmt_http_date(t1 - Duration::from_secs(100));
    assert_eq!(initial_age(&h(&[("date", &old_date)]), t0, t1), 100);
}

#[test]
fn if_none_match_compares_weakly() {
    assert!(none_match("\"a\", W/\"b\"", Some("\"b\"")));
    assert!(none_match("*", Some("\"x\"")));
    assert!(!none_match("\"a\"", Some("\"b\"")));
    assert!(!none_match("\"a\"", None));
}
