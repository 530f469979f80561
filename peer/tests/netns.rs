//! Reachability on simulated networks: real `directory` and `peer` binaries in Linux
//! network namespaces, behind nftables NATs and firewalls.
//!
//! ```text
//!                       [dir] 10.99.1.2:8888
//!                         |
//!  [public host] ---- [inet] (router) ---- [NAT router] -- LAN bridge -- [host] [host]
//!   10.99.n.2          10.99.n.1            wan 10.99.n.2    10.99.(100+n).0/24
//! ```
//!
//! Topologies, each a test that builds its namespaces, starts a directory and two peers
//! (scripted mode), opens a chat, sends messages both ways and checks every one arrived,
//! checks the path both sides report (`path=direct|relayed` on the `connected` line), and
//! tears everything down, also when it fails:
//!
//! 1. both peers on one LAN behind a NAT: direct (LAN addresses);
//! 2. one peer behind a NAT, the other public, the public one dialing: direct (the NATed
//!    one punches out when the directory tells it who is coming);
//! 3. both behind endpoint-independent ("cone") NATs: direct after punching;
//! 4. both behind address-and-port-dependent ("symmetric") NATs: punching fails, relayed;
//! 5. both public, a firewall drops all UDP between them (not to the directory): relayed.
//!
//! NATs are nftables `masquerade` (cone: it keeps the source port) or `masquerade random`
//! (symmetric: a new port per destination), with unsolicited inbound traffic dropped on
//! the WAN side. Needs root and `ip`/`nft` (`.ci/install-netns`); elsewhere each test
//! prints "skipped: <reason>" and passes, unless `NATTER_REQUIRE_EXTRAS=1`.
//!
//! Figures (not a test): `cargo test -p peer --test netns -- --ignored --nocapture
//! netbench` prints, per topology, the median time from `/connect` to the first delivered
//! message over 20 connections, and relayed against direct throughput.

mod netlab;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use netlab::{Lab, Proc};
use testkit::process::directory_binary;

/// The directory's address inside the lab.
const DIR_ADDR: &str = "10.99.1.2:8888";
/// Every account's password.
const PASSWORD: &str = "correct horse battery";
/// How long anything that should happen may take (debug builds on a loaded machine).
const WAIT: Duration = Duration::from_secs(30);
/// The dialers' direct-path timeout in the tests that expect a direct path: the default
/// (2 s) with room for a slow, loaded test machine.
const DIRECT_TIMEOUT_MS: &str = "4000";

/// One topology at a time: each runs a directory and two peers, and punching timing
/// should not suffer from the others.
static SERIAL: Mutex<()> = Mutex::new(());

/// A lab, or `None` after printing why the test is skipped (a failure instead when
/// `NATTER_REQUIRE_EXTRAS=1`).
fn lab() -> Option<Lab> {
    match Lab::new() {
        Ok(lab) => Some(lab),
        Err(why) => {
            if std::env::var("NATTER_REQUIRE_EXTRAS").as_deref() == Ok("1") {
                panic!("NATTER_REQUIRE_EXTRAS=1 but the netns tests cannot run: {why}");
            }
            println!("skipped: {why}");
            None
        }
    }
}

/// How a NAT router maps ports.
#[derive(Clone, Copy)]
enum Nat {
    /// `masquerade`: the source port is kept, whatever the destination.
    Cone,
    /// `masquerade random`: a new port for each destination.
    Symmetric,
}

/// The internet of the lab: the `inet` router and the directory's namespace.
struct Net {
    lab: Lab,
    inet: String,
}

impl Net {
    fn new(mut lab: Lab) -> Self {
        let inet = lab.ns("inet").unwrap();
        lab.forwarding(&inet).unwrap();
        let dir = lab.ns("dir").unwrap();
        lab.link(
            (&inet, "h1", "10.99.1.1/24"),
            (&dir, "eth0", "10.99.1.2/24"),
        )
        .unwrap();
        lab.ip(&dir, &["route", "add", "default", "via", "10.99.1.1"])
            .unwrap();
        Net { lab, inet }
    }

    /// A host with a public address 10.99.n.2 (n from 2 to 99).
    fn public_host(&mut self, name: &str, n: u8) -> String {
        let ns = self.lab.ns(name).unwrap();
        let (gw, addr) = (format!("10.99.{n}.1"), format!("10.99.{n}.2/24"));
        self.lab
            .link(
                (&self.inet, &format!("h{n}"), &format!("{gw}/24")),
                (&ns, "eth0", &addr),
            )
            .unwrap();
        self.lab
            .ip(&ns, &["route", "add", "default", "via", &gw])
            .unwrap();
        ns
    }

    /// A NAT router with public address 10.99.n.2 and a LAN 10.99.(100+n).0/24 on a
    /// bridge; returns its namespace.
    fn nat_router(&mut self, name: &str, n: u8, nat: Nat) -> String {
        let router = self.public_host(name, n);
        // The public side is `wan` in the rules.
        self.lab
            .ip(&router, &["link", "set", "eth0", "down"])
            .unwrap();
        self.lab
            .ip(&router, &["link", "set", "eth0", "name", "wan"])
            .unwrap();
        self.lab.ip(&router, &["link", "set", "wan", "up"]).unwrap();
        self.lab
            .ip(
                &router,
                &[
                    "route",
                    "replace",
                    "default",
                    "via",
                    &format!("10.99.{n}.1"),
                ],
            )
            .unwrap();
        self.lab.forwarding(&router).unwrap();
        self.lab
            .ip(&router, &["link", "add", "br0", "type", "bridge"])
            .unwrap();
        self.lab
            .ip(
                &router,
                &[
                    "addr",
                    "add",
                    &format!("10.99.{}.1/24", 100 + n),
                    "dev",
                    "br0",
                ],
            )
            .unwrap();
        self.lab.ip(&router, &["link", "set", "br0", "up"]).unwrap();
        let masquerade = match nat {
            Nat::Cone => "masquerade",
            Nat::Symmetric => "masquerade random",
        };
        // Unsolicited traffic from outside is dropped: otherwise the first punch packet
        // from the other side would create a conntrack entry of its own and steal the
        // port mapping.
        let rules = format!(
            "table ip nat {{
                chain postrouting {{
                    type nat hook postrouting priority srcnat; policy accept;
                    oifname \"wan\" {masquerade}
                }}
            }}
            table inet filter {{
                chain input {{
                    type filter hook input priority filter; policy accept;
                    iifname \"wan\" ct state new drop
                }}
                chain forward {{
                    type filter hook forward priority filter; policy accept;
                    iifname \"wan\" ct state new drop
                }}
            }}"
        );
        self.lab.nft(&router, &rules).unwrap();
        router
    }

    /// Host `k` (1..) on the LAN of the NAT router made with number `n`.
    fn lan_host(&mut self, router: &str, name: &str, n: u8, k: u8) -> String {
        let ns = self.lab.ns(name).unwrap();
        let port = format!("p{k}");
        let addr = format!("10.99.{}.{}/24", 100 + n, k + 1);
        self.lab
            .link((router, &port, ""), (&ns, "eth0", &addr))
            .unwrap();
        self.lab
            .ip(router, &["link", "set", &port, "master", "br0"])
            .unwrap();
        self.lab
            .ip(
                &ns,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.99.{}.1", 100 + n),
                ],
            )
            .unwrap();
        ns
    }

    /// A firewall in the internet that drops UDP between two public subnets.
    fn block_udp_between(&mut self, a: u8, b: u8) {
        let rules = format!(
            "table inet firewall {{
                chain forward {{
                    type filter hook forward priority filter; policy accept;
                    ip saddr 10.99.{a}.0/24 ip daddr 10.99.{b}.0/24 meta l4proto udp drop
                    ip saddr 10.99.{b}.0/24 ip daddr 10.99.{a}.0/24 meta l4proto udp drop
                }}
            }}"
        );
        self.lab.nft(&self.inet.clone(), &rules).unwrap();
    }

    /// Creates the accounts and starts the directory; returns its process.
    fn start_directory(&mut self, users: &[&str]) -> Proc {
        let binary = directory_binary();
        let data = self.lab.tmp.path().join("directory");
        let config = self.lab.tmp.path().join("directory.toml");
        std::fs::write(
            &config,
            "[password_cost]\nmemory_kib = 8\niterations = 1\nparallelism = 1\n",
        )
        .unwrap();
        let (data_s, config_s) = (data.to_str().unwrap(), config.to_str().unwrap());
        for user in users {
            let mut child = Command::new(&binary)
                .args(["--data", data_s, "--config", config_s, "user", "add", user])
                .arg("--password-stdin")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
            assert!(child.wait().unwrap().success(), "directory user add {user}");
        }
        let ns = self.lab.name("dir");
        let mut dir = self
            .lab
            .spawn(
                "directory",
                &ns,
                &binary,
                &[
                    "--data", data_s, "--config", config_s, "serve", "--listen", DIR_ADDR,
                ],
                &[("RUST_LOG", "info")],
            )
            .unwrap();
        dir.expect("listening on", WAIT);
        dir
    }

    /// Starts `user`'s peer in `ns`, listening, and waits until it is logged in.
    fn start_peer(&mut self, user: &str, ns: &str, direct_timeout_ms: &str) -> Proc {
        let profile = self.lab.tmp.path().join(format!("profile-{user}"));
        std::fs::create_dir_all(&profile).unwrap();
        let profile_s = profile.to_str().unwrap();
        let mut p = self
            .lab
            .spawn(
                user,
                ns,
                std::path::Path::new(env!("CARGO_BIN_EXE_peer")),
                &[
                    "--profile",
                    profile_s,
                    "--directory",
                    DIR_ADDR,
                    "--user",
                    user,
                    "listen",
                ],
                &[
                    ("PEER_PASSWORD", PASSWORD),
                    ("HOME", profile_s),
                    ("NATTER_VAULT_COST", "8,1,1"),
                    ("PEER_DIRECT_TIMEOUT_MS", direct_timeout_ms),
                    ("RUST_LOG", "info,quinn=warn,rustls=warn"),
                ],
            )
            .unwrap();
        p.expect(&format!("logged-in user={user} "), WAIT);
        p.expect("listening addr=", WAIT);
        p
    }
}

/// Opens a chat from `a` to `b` and checks both report `path`; sends a first message and
/// returns how long it took from `/connect` until it was delivered.
fn connect(a: &mut Proc, b: &mut Proc, path: &str) -> Duration {
    let (an, bn) = (a.label.clone(), b.label.clone());
    let started = Instant::now();
    a.say(&format!("/connect {bn}"));
    a.say("first message");
    let line = a.expect(&format!("connected peer={bn} "), WAIT);
    assert!(
        line.contains("direction=outgoing") && line.ends_with(&format!(" path={path}")),
        "{an}: {line}"
    );
    let line = b.expect(&format!("connected peer={an} "), WAIT);
    assert!(
        line.contains("direction=incoming") && line.ends_with(&format!(" path={path}")),
        "{bn}: {line}"
    );
    b.expect(&format!("msg from={an} id=1 text=first message"), WAIT);
    a.expect(&format!("delivered to={bn} id=1"), WAIT);
    started.elapsed()
}

/// Sends `n` more messages each way on the open chat between `a` and `b` (after the
/// first one from `a`) and checks that every one arrived and was acknowledged.
fn exchange(a: &mut Proc, b: &mut Proc, n: u64) {
    let (an, bn) = (a.label.clone(), b.label.clone());
    for i in 0..n {
        a.say(&format!("from {an} {i}"));
        b.say(&format!("from {bn} {i}"));
    }
    for i in 0..n {
        b.expect(
            &format!("msg from={an} id={} text=from {an} {i}", i + 2),
            WAIT,
        );
        a.expect(
            &format!("msg from={bn} id={} text=from {bn} {i}", i + 1),
            WAIT,
        );
    }
    for i in 0..n {
        a.expect(&format!("delivered to={bn} id={}", i + 2), WAIT);
        b.expect(&format!("delivered to={an} id={}", i + 1), WAIT);
    }
}

/// Ends both peers (end of input) and checks they exit cleanly.
fn finish(net: &mut Net, peers: [Proc; 2]) {
    let [mut a, mut b] = peers;
    a.close_stdin();
    b.close_stdin();
    for p in [&a, &b] {
        assert_eq!(
            net.lab.wait_exit(p, WAIT),
            Some(true),
            "{} did not exit cleanly",
            p.label
        );
    }
}

/// Builds topology `which`, returning the network and the two peers' namespaces
/// (dialer first) and the path expected.
fn topology(lab: Lab, which: u8) -> (Net, String, String, &'static str) {
    let mut net = Net::new(lab);
    match which {
        1 => {
            let router = net.nat_router("ra", 2, Nat::Cone);
            let a = net.lan_host(&router, "ali", 2, 1);
            let b = net.lan_host(&router, "bia", 2, 2);
            (net, a, b, "direct")
        }
        2 => {
            let router = net.nat_router("ra", 2, Nat::Cone);
            let natted = net.lan_host(&router, "ali", 2, 1);
            let public = net.public_host("bia", 4);
            // The public peer dials the one behind the NAT.
            (net, public, natted, "direct")
        }
        3 => {
            let ra = net.nat_router("ra", 2, Nat::Cone);
            let rb = net.nat_router("rb", 3, Nat::Cone);
            let a = net.lan_host(&ra, "ali", 2, 1);
            let b = net.lan_host(&rb, "bia", 3, 1);
            (net, a, b, "direct")
        }
        4 => {
            let ra = net.nat_router("ra", 2, Nat::Symmetric);
            let rb = net.nat_router("rb", 3, Nat::Symmetric);
            let a = net.lan_host(&ra, "ali", 2, 1);
            let b = net.lan_host(&rb, "bia", 3, 1);
            (net, a, b, "relayed")
        }
        5 => {
            let a = net.public_host("ali", 4);
            let b = net.public_host("bia", 5);
            net.block_udp_between(4, 5);
            (net, a, b, "relayed")
        }
        _ => unreachable!("five topologies"),
    }
}

/// Runs topology `which`: chat both ways, path checked, everything delivered.
fn run_topology(which: u8) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = lab() else {
        return;
    };
    let (mut net, a_ns, b_ns, path) = topology(lab, which);
    let timeout = if path == "direct" {
        DIRECT_TIMEOUT_MS
    } else {
        "2000"
    };
    let _dir = net.start_directory(&["ali", "bianca"]);
    let mut bianca = net.start_peer("bianca", &b_ns, timeout);
    let mut ali = net.start_peer("ali", &a_ns, timeout);
    let took = connect(&mut ali, &mut bianca, path);
    exchange(&mut ali, &mut bianca, 3);
    println!("topology {which}: {path}, first message delivered after {took:?}");
    finish(&mut net, [ali, bianca]);
}

#[test]
fn t1_both_peers_on_one_lan_talk_directly() {
    run_topology(1);
}

#[test]
fn t2_a_public_peer_reaches_a_peer_behind_a_nat_directly() {
    run_topology(2);
}

#[test]
fn t3_two_cone_nats_are_punched_through() {
    run_topology(3);
}

#[test]
fn t4_two_symmetric_nats_fall_back_to_the_relay() {
    run_topology(4);
}

#[test]
fn t5_a_firewall_blocking_udp_between_peers_falls_back_to_the_relay() {
    run_topology(5);
}

/// Figures for the benchmark report: per topology, the median (and min/max) time from
/// `/connect` to the first delivered message over `NATTER_NETBENCH_RUNS` (20)
/// connections with the default direct timeout, and throughput of 1 KB messages on a
/// direct (topology 3) and a relayed (topology 4) chat.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn netbench() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runs: usize = std::env::var("NATTER_NETBENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut report = Vec::new();
    for which in 1..=5u8 {
        let Some(lab) = lab() else {
            return;
        };
        let (mut net, a_ns, b_ns, path) = topology(lab, which);
        let _dir = net.start_directory(&["ali", "bianca"]);
        let mut bianca = net.start_peer("bianca", &b_ns, "2000");
        let mut ali = net.start_peer("ali", &a_ns, "2000");
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(connect(&mut ali, &mut bianca, path));
            ali.say("/end");
            ali.expect("ended peer=bianca", WAIT);
            bianca.expect("ended peer=ali", WAIT);
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let line = format!(
            "topology {which} ({path}): connect→first delivered median {:.0} ms (min {:.0}, max {:.0}, n={runs})",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
        );
        println!("{line}");
        report.push(line);
        if which == 3 || which == 4 {
            connect(&mut ali, &mut bianca, path);
            let body = "x".repeat(1000);
            // Within what a chat lets wait for acknowledgement (256).
            const N: u64 = 200;
            let started = Instant::now();
            for _ in 0..N {
                ali.say(&body);
            }
            ali.expect(&format!("delivered to=bianca id={}", N + 1), WAIT * 4);
            let secs = started.elapsed().as_secs_f64();
            let line = format!(
                "topology {which} ({path}): {N} × 1000-byte messages in {:.2} s = {:.0} KB/s, {:.0} msg/s",
                secs,
                N as f64 * 1000.0 / secs / 1000.0,
                N as f64 / secs
            );
            println!("{line}");
            report.push(line);
        }
        finish(&mut net, [ali, bianca]);
    }
    println!("\n{}", report.join("\n"));
}
