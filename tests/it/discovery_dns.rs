//! DNS discovery against a real DNS server the test starts (Debian's
//! dnsmasq on a loopback port, answering from a hosts file it re-reads on
//! SIGHUP): one name, several loopback addresses, each its own server with
//! its own health; the set follows the answers; a failed lookup keeps the
//! last good set.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{closed_port, eventually_async, get, server_up, status, Proxy, Upstream};

struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(hosts: &Path) -> Option<Dnsmasq> {
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].into_iter().find(|p| Path::new(p).exists())?;
        let addr = closed_port();
        let child = Command::new(bin)
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--bind-interfaces", "--listen-address=127.0.0.1"])
            .args(["--no-resolv", "--no-hosts", "--local-ttl=1", "--user=root", "--group=root", "--pid-file="])
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        Some(Dnsmasq { child, addr })
    }

    /// Read the hosts file again.
    fn reload(&self) {
        let _ = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Upstreams named after their address, on one port of 127.0.0.2, .3, .4.
async fn upstreams_on_one_port() -> (u16, Vec<Upstream>) {
    for _ in 0..20 {
        let first = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let rest = [3u8, 4].map(|last| std::net::TcpListener::bind((IpAddr::from([127, 0, 0, last]), port)));
        let [Ok(b), Ok(c)] = rest else { continue };
        let mut ups = vec![serve(first)];
        for l in [b, c] {
            l.set_nonblocking(true).unwrap();
            ups.push(serve(tokio::net::TcpListener::from_std(l).unwrap()));
        }
        return (port, ups);
    }
    panic!("no port free on 127.0.0.2-4");
}

fn serve(l: tokio::net::TcpListener) -> Upstream {
    let name: &'static str = Box::leak(l.local_addr().unwrap().ip().to_string().into_boxed_str());
    Upstream::serve_on(l, move |_req| async move { http::Response::new(crate::util::full(name)) })
}

fn hosts(path: &Path, last_octets: &[u8]) {
    let text: String = last_octets.iter().map(|o| format!("127.0.0.{o} tasks.api\n")).collect();
    std::fs::write(path, text).unwrap();
}

async fn pool(p: &Proxy) -> Vec<String> {
    let s = status(p).await;
    let mut v: Vec<String> = s["upstreams"][0]["servers"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["addr"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_name_expands_to_one_server_per_address_and_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let hosts_file = dir.path().join("hosts");
    hosts(&hosts_file, &[2, 3, 4]);
    let Some(mut dns) = Dnsmasq::start(&hosts_file) else {
        eprintln!("SKIPPED dns discovery: dnsmasq not found (scripts/test installs dnsmasq-base)");
        return;
    };
    let (port, ups) = upstreams_on_one_port().await;
    let p = Proxy::start(&format!(
        "[providers.dns]\nresolvers = [\"{}\"]\n[upstreams.api]\nservers = [{{ dns = \"tasks.api:{port}\" }}]\ndns_refresh = \"1s\"\n\
         [upstreams.api.health]\ninterval = \"1s\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n[[routes]]\nupstream = \"api\"\n",
        dns.addr
    ));
    let all: Vec<String> = [2, 3, 4].iter().map(|o| format!("127.0.0.{o}:{port}")).collect();
    assert!(
        eventually_async(Duration::from_secs(20), || async { pool(&p).await == all }).await,
        "{:?}",
        pool(&p).await
    );
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..30 {
        *seen.entry(get(&p.url("/"), "any").await.text()).or_default() += 1;
    }
    for o in [2, 3, 4] {
        assert_eq!(seen.get(&format!("127.0.0.{o}")), Some(&10), "{seen:?}");
    }

    // Each address has its own health.
    ups[1].stop();
    let addr = |o: u8| SocketAddr::from(([127, 0, 0, o], port));
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            server_up(&status(&p).await, "api", addr(3)) == Some(false)
        })
        .await
    );
    let s = status(&p).await;
    assert_eq!((server_up(&s, "api", addr(2)), server_up(&s, "api", addr(4))), (Some(true), Some(true)));

    // The set follows the answers.
    hosts(&hosts_file, &[2, 3]);
    dns.reload();
    let two = all[..2].to_vec();
    assert!(
        eventually_async(Duration::from_secs(20), || async { pool(&p).await == two }).await,
        "{:?}",
        pool(&p).await
    );
    let dns_status = &status(&p).await["providers"]["dns"];
    assert_eq!(dns_status["up"], true, "{dns_status}");

    // The DNS server goes away: the last good set stays, and it shows.
    dns.stop();
    assert!(
        eventually_async(Duration::from_secs(40), || async { status(&p).await["providers"]["dns"]["up"] == false })
            .await,
        "a failed lookup shows on the status"
    );
    assert_eq!(pool(&p).await, two);
    for _ in 0..10 {
        assert_eq!(get(&p.url("/"), "any").await.text(), "127.0.0.2", "the healthy address left keeps serving");
    }
    assert!(!p.log_lines(&["dns: lookup failed", "tasks.api"]).is_empty());
    let metrics = get(&p.admin_url("/metrics"), "admin").await.text();
    assert!(metrics.contains("rampart_provider_up{provider=\"dns\"} 0"), "{metrics}");
}
