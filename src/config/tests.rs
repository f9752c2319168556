use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new("rampart.toml"), text)
}

fn errors(text: &str) -> Vec<String> {
    parse(text).expect_err("config should be rejected").0.iter().map(|e| e.to_string()).collect()
}

const BASE: &str = r#"
[upstreams.api]
servers = ["127.0.0.1:7600", { addr = "127.0.0.1:7610", weight = 2 }]
balance = "least_conn"

[[routes]]
host = "Logen.Example.com"
path = "/api/"
strip_prefix = true
upstream = "api"
"#;

#[test]
fn loads_the_contract_keys() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.upstreams[0].balance, Balance::LeastConn);
    assert_eq!(c.upstreams[0].servers[1].weight, 2);
    assert_eq!(c.routes[0].host, HostPattern::Exact("logen.example.com".into()));
    assert_eq!(c.routes[0].prefix, "/api");
    assert_eq!(c.routes[0].name, "logen.example.com/api/");
    assert_eq!(c.summary(), "ok: 1 routes, 1 upstreams, 0 middleware");
}

#[test]
fn listeners_defer_accept_unless_told_not_to() {
    assert!(parse(BASE).unwrap().server.defer_accept);
    let off = parse(&format!("[server]\ndefer_accept = false\n{BASE}")).unwrap();
    assert!(!off.server.defer_accept);
}

#[test]
fn busy_polling_is_off_unless_asked_and_bounded() {
    assert_eq!(parse(BASE).unwrap().server.busy_poll, Duration::ZERO);
    let on = parse(&format!("[server]\nworkers = 1\nbusy_poll = \"200us\"\n{BASE}")).unwrap();
    assert_eq!(on.server.busy_poll, Duration::from_micros(200));
    let e = errors(&format!("[server]\nworkers = 1\nbusy_poll = \"1s\"\n{BASE}"));
    assert!(e.iter().any(|e| e.contains("busy_poll must be at most 10ms")), "{e:?}");
    let e = errors(&format!("[server]\nbusy_poll = \"200us\"\n{BASE}"));
    assert!(e.iter().any(|e| e.contains("busy_poll needs server.workers = 1")), "{e:?}");
}

#[test]
fn unknown_key_is_reported_with_position() {
    let e = errors("[server]\nworkerz = 2\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("rampart.toml:2:1: error: unknown field `workerz`"), "{e:?}");
}

#[test]
fn a_refused_host_or_path_is_no_duplicate_of_another_route() {
    for bad in ["bad host", "*.*.com", "exa mple.com"] {
        let text = format!(
            "{BASE}\n[[routes]]\nhost = \"*\"\nupstream = \"api\"\n[[routes]]\nhost = \"{bad}\"\nupstream = \"api\"\n"
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert!(!e[0].contains("duplicate route"), "{bad}: {e:?}");
    }
}

#[test]
fn every_cross_reference_problem_is_listed() {
    let text = format!("{BASE}\n[[routes]]\nhost = \"logen.example.com\"\npath = \"/api\"\nupstream = \"nope\"\nmiddleware = [\"ghost\"]\n");
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e.iter().any(|m| m.contains("duplicate route")));
    assert!(e.iter().any(|m| m.contains("unknown upstream \"nope\"")));
    assert!(e.iter().any(|m| m.contains("unknown middleware \"ghost\"")));
    assert!(e.iter().all(|m| m.starts_with("rampart.toml:1")), "{e:?}");
}

#[test]
fn bad_values_point_at_the_value() {
    let e = errors("[server]\nshutdown_timeout = \"ten\"\n");
    assert!(e[0].starts_with("rampart.toml:2:20: error: invalid duration"), "{e:?}");
    let e = errors("[listen]\nhttp = \"localhost\"\n");
    assert!(e[0].contains("invalid listen address"), "{e:?}");
    let e = errors("[upstreams.a]\nservers = [\"nohost\"]\n");
    assert!(e[0].contains("invalid server address"), "{e:?}");
    let e = errors("[upstreams.a]\nservers = []\n");
    assert!(e[0].contains("has no servers"), "{e:?}");
}

#[test]
fn absurd_durations_and_sizes_are_refused_not_overflowed() {
    // Each once panicked on every connection or request (Instant + d).
    let e = errors("[server]\nidle_timeout = \"500000000000y\"\n");
    assert!(e[0].starts_with("rampart.toml:2:16: error: duration"), "{e:?}");
    assert!(e[0].contains("longer than a year"), "{e:?}");
    let e = errors("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nfail_timeout = \"20000000000y\"\n");
    assert!(e[0].contains("longer than a year"), "{e:?}");
    let e = errors("[server]\nmax_header_bytes = \"5GiB\"\n");
    assert!(e.iter().any(|m| m.contains("max_header_bytes must be between 8192 and 16MiB")), "{e:?}");
    assert!(parse("[server]\nidle_timeout = \"365d\"\n").is_ok());
}

#[test]
fn middleware_type_is_checked() {
    let e = errors("[middleware.x]\ntype = \"teleport\"\n");
    assert!(e[0].starts_with("rampart.toml:"), "{e:?}");
    assert!(e[0].contains("teleport"), "{e:?}");
}

#[test]
fn hosts_parse() {
    assert_eq!(HostPattern::parse("*.Example.com").unwrap(), HostPattern::Wildcard(".example.com".into()));
    assert_eq!(HostPattern::parse("*").unwrap(), HostPattern::Any);
    assert!(HostPattern::parse("example.com:80").is_err());
    assert!(HostPattern::parse("a.*.com").is_err());
}

#[test]
fn a_route_without_a_name_is_named_host_and_path_as_written() {
    let c = parse("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nhost = \"app.test\"\npath = \"/hc\"\nupstream = \"a\"\n[[routes]]\nupstream = \"a\"\n").unwrap();
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["app.test/hc", "*/"]);
    let e = errors("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"none\"\nupstream = \"a\"\n");
    assert!(e[0].starts_with("rampart.toml:4:8: error: route name \"none\" is reserved"), "{e:?}");
}

#[test]
fn a_problem_in_each_of_several_sections_is_listed_at_its_position() {
    let text = "[listen]\nhttp = \"nowhere\"\n[server]\nbogus = 1\n[upstreams.a]\nservers = [\"nohost\"]\n\
                [upstreams.b]\nservers = [\"127.0.0.1:1\"]\nmax_idle_per_server = \"x\"\n\
                [[routes]]\nupstream = \"a\"\nwat = 1\n[extra]\n";
    let e = errors(text);
    let at: Vec<&str> = e.iter().map(|m| m.split(": error: ").next().unwrap()).collect();
    assert_eq!(
        at,
        [
            "rampart.toml:2:8",
            "rampart.toml:4:1",
            "rampart.toml:6:12",
            "rampart.toml:9:23",
            "rampart.toml:12:1",
            "rampart.toml:13:2"
        ],
        "{e:#?}"
    );
    assert!(e[0].contains("invalid listen address"), "{e:?}");
    assert!(e[1].contains("unknown field `bogus`"), "{e:?}");
    assert!(e[2].contains("invalid server address"), "{e:?}");
    assert!(e[4].contains("unknown field `wat`"), "{e:?}");
    assert!(e[5].contains("unknown field `extra`"), "{e:?}");
}

#[test]
fn a_static_upstream_takes_the_contract_keys_with_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let c = parse(&format!("[upstreams.site]\nstatic = \"{d}\"\n[[routes]]\nupstream = \"site\"\n")).unwrap();
    let f = c.upstreams[0].files.as_ref().unwrap();
    assert!(c.upstreams[0].servers.is_empty());
    assert_eq!((f.index.clone(), f.fallback.clone()), (vec!["index.html".to_string()], None));
    assert!(f.precompressed && !f.follow_symlinks && !f.allow_dotfiles && f.cache_control.is_empty());
    let c = parse(&format!(
        "[upstreams.site]\nstatic = \"{d}\"\nindex = [\"index.htm\", \"index.html\"]\nfallback = \"/index.html\"\n\
         precompressed = false\nfollow_symlinks = true\nallow_dotfiles = true\n\
         cache_control = [{{ path = \"/assets/\", value = \"immutable\" }}, {{ path = \"*.html\", value = \"no-cache\" }}]\n"
    ))
    .unwrap();
    let f = c.upstreams[0].files.as_ref().unwrap();
    assert_eq!(f.index, ["index.htm", "index.html"]);
    assert_eq!(f.fallback.as_deref(), Some("/index.html"));
    assert!(!f.precompressed && f.follow_symlinks && f.allow_dotfiles);
    assert_eq!(f.cache_control[0].pattern, PathPattern::Prefix("/assets/".into()));
    assert_eq!(f.cache_control[1].pattern, PathPattern::Suffix(".html".into()));
}

#[test]
fn static_and_servers_are_one_or_the_other_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let e = errors(&format!("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nstatic = \"{d}\"\n"));
    assert!(e[0].starts_with("rampart.toml:3:10: error: upstream \"a\" has both `static` and `servers`"), "{e:?}");
    let e = errors("[upstreams.a]\nbalance = \"least_conn\"\n");
    assert!(e[0].starts_with("rampart.toml:1:1: error: upstream \"a\" needs `servers`"), "{e:?}");
    let e = errors("[upstreams.a]\nstatic = \"/nonexistent/rampart-site\"\n");
    assert!(e[0].starts_with("rampart.toml:2:10: error: static directory"), "{e:?}");
    let e = errors(&format!(
        "[upstreams.a]\nstatic = \"{d}\"\nretries = 2\nfallback = \"index.html\"\nindex = [\"a/b\"]\n"
    ));
    assert!(e[0].starts_with("rampart.toml:3:11: error: upstream \"a\": `retries` is for servers"), "{e:?}");
    assert!(e[1].starts_with("rampart.toml:4:12: error: fallback must be"), "{e:?}");
    assert!(e[2].starts_with("rampart.toml:5:9: error: index entries"), "{e:?}");
    let e = errors("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nfallback = \"/index.html\"\n");
    assert!(e[0].starts_with("rampart.toml:3:12: error: upstream \"a\": `fallback` needs `static = DIR`"), "{e:?}");
    let e =
        errors(&format!("[upstreams.a]\nstatic = \"{d}\"\ncache_control = [{{ path = \"assets\", value = \"x\" }}]\n"));
    assert!(e[0].starts_with("rampart.toml:3:27: error: cache_control path"), "{e:?}");
    // Refused at every use, so refused here: an encoded way out, dotfiles.
    let e = errors(&format!(
        "[upstreams.a]\nstatic = \"{d}\"\nfallback = \"/%2e%2e/outside/secret.txt\"\nindex = [\".env\"]\n"
    ));
    assert!(e[0].starts_with("rampart.toml:3:12: error: fallback must be"), "{e:?}");
    assert!(e[1].starts_with("rampart.toml:4:9: error: index entry \".env\" is a dotfile"), "{e:?}");
    let e = errors(&format!("[upstreams.a]\nstatic = \"{d}\"\nfallback = \"/.git/config\"\n"));
    assert!(e[0].starts_with("rampart.toml:3:12: error: fallback \"/.git/config\" names a dotfile"), "{e:?}");
    let fine = format!(
        "[upstreams.a]\nstatic = \"{d}\"\nfallback = \"/.env\"\nallow_dotfiles = true\n\
         [[routes]]\nhost = \"*\"\npath = \"/\"\nupstream = \"a\"\n"
    );
    assert!(parse(&fine).is_ok());
}

#[test]
fn dns01_keys_compile_and_wildcards_need_dns01() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("tsig");
    std::fs::write(&secret, "key \"rampart.\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n").unwrap();
    let text = format!(
        "[acme]\nchallenge = \"dns-01\"\n[acme.dns]\nprovider = \"rfc2136\"\nnameserver = \"127.0.0.1\"\n\
         tsig_key = \"rampart.\"\ntsig_algorithm = \"hmac-sha512\"\ntsig_secret_file = \"{}\"\n\
         [acme.on_demand]\nask = \"http://127.0.0.1:7600/allowed\"\n\
         [[certificates]]\nnames = [\"Example.com\", \"*.example.com\"]\n{BASE}\
         [[routes]]\nhost = \"*.wild.example.com\"\nupstream = \"api\"\n",
        secret.display()
    );
    let c = parse(&text).unwrap();
    let acme = c.acme.as_ref().unwrap();
    let dns = acme.dns.as_ref().unwrap();
    // The secret comes out of a BIND key file as well as a bare one.
    let DnsProviderSpec::Rfc2136 { nameserver, tsig: Some(tsig), ttl } = &dns.provider else { panic!("{dns:?}") };
    assert_eq!(nameserver.port(), 53);
    assert_eq!((tsig.secret.as_slice(), tsig.algorithm, *ttl), (&b"secret"[..], TsigAlgorithm::HmacSha512, 60));
    assert_eq!(dns.propagation_timeout, Duration::from_secs(120));
    let od = acme.on_demand.as_ref().unwrap();
    assert_eq!((od.wait, od.max_per_hour), (Duration::from_secs(10), 60));
    assert_eq!(c.certificates[0].names, ["example.com", "*.example.com"]);
    assert!(!format!("{tsig:?}").contains("c2VjcmV0") && !format!("{tsig:?}").contains("secret: "));

    // The same wildcard route under tls-alpn-01: an error at its line.
    let alpn = format!(
        "[acme]\nchallenge = \"tls-alpn-01\"\n{BASE}[[routes]]\nhost = \"*.wild.example.com\"\nupstream = \"api\"\n"
    );
    let e = errors(&alpn);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("rampart.toml:14:8: error: wildcard host \"*.wild.example.com\""), "{e:?}");
    assert!(errors("[acme]\nchallenge = \"dns-01\"\n")[0].contains("needs an [acme.dns] table"));
    let e = errors("[acme]\nchallenge = \"http-01\"\n[[certificates]]\nnames = [\"*.a.com\"]\n");
    assert!(e[0].starts_with("rampart.toml:4:10: error: wildcard name"), "{e:?}");
    let e = errors("[acme]\nchallenge = \"dns-01\"\n[acme.dns]\nprovider = \"rfc2136\"\nnameserver = \"127.0.0.1\"\ntsig_key = \"k.\"\ntsig_secret_file = \"/nonexistent/tsig\"\n");
    assert!(e[0].starts_with("rampart.toml:7:20: error: cannot read tsig_secret_file"), "{e:?}");
}

#[test]
fn route_paths_are_written_as_requests_are_routed() {
    let route = |path: &str| {
        format!("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nhost = \"*\"\npath = \"{path}\"\nupstream = \"a\"\n")
    };
    for (path, want) in [
        ("/é/", "write \"/%C3%A9/\""),
        ("/%61pi/", "write \"/api/\""),
        ("/caf%c3%a9/", "write \"/caf%C3%A9/\""),
        ("/q\\\"x/", "write \"/q%22x/\""),
        ("/a/../b/", "`.` and `..` segments are resolved first; write \"/b/\""),
        ("/v1/../v2/", "write \"/v2/\""),
        ("/a/./b/", "write \"/a/b/\""),
        ("/a/%2e%2e/b/", "write \"/b/\""),
        ("/../x/", "climbs above the root"),
        ("/a%2Fb/", "encoded NUL, slash or backslash"),
        ("/a%zz/", "malformed %-escape"),
        ("/a;b/", "a `;` starts a parameter"),
    ] {
        let e = errors(&route(path));
        assert!(e[0].contains("would never match") && e[0].contains(want), "{path}: {e:?}");
        // A suggestion is never the path itself.
        assert!(!e[0].contains(&format!("write \"{path}\"")), "{path}: {e:?}");
    }
    for fine in ["/", "/api/", "/caf%C3%A9/", "/~user/", "/a-b_c.d/", "/x:y@z/"] {
        assert!(parse(&route(fine)).is_ok(), "{fine}: {:?}", parse(&route(fine)).err());
    }
}

#[test]
fn every_error_is_one_line_and_says_where() {
    // A key without a value at the end: toml says nothing; we say something.
    let e = errors("[listen]\nhttp = ");
    assert!(e[0].starts_with("rampart.toml:2:") && !e[0].ends_with("error: "), "{e:?}");
    // Messages toml spreads over two lines are one.
    let e = errors("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[upstreams.a]\n");
    assert!(e.iter().all(|l| !l.contains('\n')), "{e:?}");
    assert!(e[0].contains("duplicate key"), "{e:?}");
    // A file that is not UTF-8: the line of the first bad byte.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, b"[listen]\n# caf\xe9\nhttp = \"127.0.0.1:0\"\n").unwrap();
    let e = Config::load(&file).unwrap_err().0[0].to_string();
    assert!(e.contains("bad.toml:2:6: error: not UTF-8"), "{e}");
}

#[test]
fn settings_that_could_never_serve_are_refused_by_check() {
    let e = errors("[server]\nclient_header_timeout = \"0s\"\nidle_timeout = \"0s\"\n");
    assert!(e.iter().any(|l| l.contains("server.client_header_timeout must be greater than zero")), "{e:?}");
    assert!(e.iter().any(|l| l.contains("server.idle_timeout must be greater than zero")), "{e:?}");
    let e =
        errors("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nresponse_timeout = \"0s\"\nconnect_timeout = \"0ms\"\n");
    assert!(e.iter().any(|l| l.contains("upstream \"a\": response_timeout must be greater than zero")), "{e:?}");
    assert!(e.iter().any(|l| l.contains("upstream \"a\": connect_timeout must be greater than zero")), "{e:?}");
    // Two listeners that cannot both bind.
    let e = errors("[listen]\nhttp = \"127.0.0.1:37990\"\nadmin = \"127.0.0.1:37990\"\n");
    assert!(
        e[0].contains("listen.http (127.0.0.1:37990) and listen.admin (127.0.0.1:37990) cannot share a port"),
        "{e:?}"
    );
    let e = errors("[listen]\nhttp = \"0.0.0.0:8080\"\nhttps = \"127.0.0.1:8080\"\n");
    assert!(e[0].contains("cannot share a port"), "{e:?}");
    assert!(parse("[listen]\nhttp = \"127.0.0.1:8080\"\nadmin = \"127.0.0.2:8080\"\n").is_ok());
    assert!(parse("[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n").is_ok());
}

#[test]
fn settings_without_a_position_of_their_own_are_reported_at_their_key() {
    let e = errors("[server]\nclient_header_timeout = \"0s\"\nidle_timeout = \"0s\"\n");
    assert!(
        e.contains(&"rampart.toml:2:1: error: server.client_header_timeout must be greater than zero".into()),
        "{e:?}"
    );
    assert!(e.contains(&"rampart.toml:3:1: error: server.idle_timeout must be greater than zero".into()), "{e:?}");
    let e = errors("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nresponse_timeout = \"0s\"\n");
    assert!(e[0].starts_with("rampart.toml:3:1: error: upstream \"a\": response_timeout"), "{e:?}");
    let e = errors("[server]\n# limits\nmax_header_bytes = 10\n");
    assert!(e[0].starts_with("rampart.toml:3:1: error: server.max_header_bytes"), "{e:?}");
    let e = errors("[listen]\nhttp = \"127.0.0.1:37990\"\nadmin = \"127.0.0.1:37990\"\n");
    assert!(e[0].starts_with("rampart.toml:3:1: error: listen.http"), "{e:?}");
}

#[test]
fn cluster_settings_run_would_refuse_are_refused_by_check() {
    let e = errors("[cluster]\nredis = \"rediss://127.0.0.1:6379/0#insecure\"\n");
    assert!(e[0].starts_with("rampart.toml:2:9: error: the redis URL's #insecure fragment is not supported"), "{e:?}");
    let e = errors("[cluster]\nredis = \"redis://127.0.0.1:6379\"\n\ntimeout = \"0s\"\n");
    assert_eq!(e, ["rampart.toml:4:1: error: cluster.timeout must be greater than zero"]);
}

#[test]
fn acme_urls_that_could_never_work_are_refused_by_check() {
    let e = errors("[acme]\ndirectory = \"not a url\"\n");
    assert!(e[0].starts_with("rampart.toml:2:1: error: directory must be an https:// URL"), "{e:?}");
    let e = errors("[acme]\ndirectory = \"http://127.0.0.1:14000/dir\"\n");
    assert!(e[0].contains("directory must be an https:// URL"), "{e:?}");
    let e = errors("[acme]\n[acme.on_demand]\nask = \"http://127.0.0.1:7600/allowed?x=1#frag\"\n");
    assert!(e[0].starts_with("rampart.toml:3:7: error: ask must be an http:// URL without a #fragment"), "{e:?}");
}
