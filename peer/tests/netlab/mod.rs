//! A small laboratory of simulated networks: Linux network namespaces joined by veth
//! pairs, routers with nftables NAT and firewall rules, and real processes inside them.
//!
//! A [`Lab`] owns everything it made: every namespace (named with a per-process prefix,
//! so parallel runs never collide) and every process it started. Dropping it, also while
//! a failed test unwinds, kills the processes and deletes the namespaces. Only addresses
//! inside namespaces the lab created are used (10.99.0.0/16); nothing is routed to the
//! machine's own networks.
//!
//! Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and the `ip` and `nft` commands
//! (Debian's `iproute2` and `nftables`, see `.ci/install-netns`). [`Lab::new`] says why
//! it cannot run, so tests can skip.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs a command to completion; `Err` with what it printed when it fails.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

/// A set of namespaces and the processes running in them.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    procs: Vec<Child>,
    pub tmp: tempfile::TempDir,
}

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// A new, empty lab, or why none can be made here.
    pub fn new() -> Result<Self, String> {
        for tool in ["ip", "nft"] {
            let found = Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok();
            if !found {
                return Err(format!("`{tool}` is not installed (run .ci/install-netns)"));
            }
        }
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let mut lab = Self {
            prefix: format!("nt{}x{n}", std::process::id()),
            namespaces: Vec::new(),
            procs: Vec::new(),
            tmp: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        // Creating a namespace is the real test of our rights.
        lab.ns("probe")
            .map_err(|e| format!("cannot create network namespaces ({e})"))?;
        Ok(lab)
    }

    /// The full name of namespace `name`.
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates namespace `name` with its loopback up.
    pub fn ns(&mut self, name: &str) -> Result<String, String> {
        let full = self.name(name);
        // Left over from a crashed run with the same pid: start clean.
        let _ = ip(&["netns", "del", &full]);
        ip(&["netns", "add", &full])?;
        self.namespaces.push(full.clone());
        ip(&["-n", &full, "link", "set", "lo", "up"])?;
        Ok(full)
    }

    /// Joins namespaces `a` and `b` with a veth pair (`a_if` in `a` with address
    /// `a_addr`, `b_if` in `b` with `b_addr`; addresses in CIDR form, or empty for none).
    pub fn link(
        &self,
        (a, a_if, a_addr): (&str, &str, &str),
        (b, b_if, b_addr): (&str, &str, &str),
    ) -> Result<(), String> {
        ip(&[
            "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b,
        ])?;
        for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            if !addr.is_empty() {
                ip(&["-n", ns, "addr", "add", addr, "dev", ifname])?;
            }
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// Runs `ip -n ns ARGS...`.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Turns IPv4 forwarding on in `ns` (a router).
    pub fn forwarding(&self, ns: &str) -> Result<(), String> {
        run(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ]))
        .map(|_| ())
    }

    /// Loads an nftables ruleset into `ns`.
    pub fn nft(&self, ns: &str, rules: &str) -> Result<(), String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(rules.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft in {ns}: {}\n{rules}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Starts `program ARGS...` inside `ns` with `env`, stdin and stdout piped, stderr
    /// into a file of the lab (shown when the test fails). `label` names it in messages.
    pub fn spawn(
        &mut self,
        label: &str,
        ns: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proc, String> {
        let stderr_path = self.tmp.path().join(format!("{label}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("{label}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let pid = child.id();
        self.procs.push(child);
        Ok(Proc {
            label: label.to_string(),
            pid,
            stdin,
            lines,
            seen: Vec::new(),
            backlog: Vec::new(),
            stderr_path,
        })
    }

    /// Waits (bounded) for a process to exit by itself; returns whether it exited 0.
    pub fn wait_exit(&mut self, proc: &Proc, limit: Duration) -> Option<bool> {
        let i = self.procs.iter().position(|c| c.id() == proc.pid)?;
        let deadline = Instant::now() + limit;
        loop {
            match self.procs[i].try_wait() {
                Ok(Some(status)) => {
                    // Exited: `wait` only collects the status again.
                    let _ = self.procs.remove(i).wait();
                    return Some(status.success());
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return None,
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.procs {
            let _ = child.kill();
        }
        for child in &mut self.procs {
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A process in the lab: lines in on stdin, lines out of stdout.
pub struct Proc {
    pub label: String,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every stdout line so far.
    pub seen: Vec<String>,
    backlog: Vec<String>,
    stderr_path: PathBuf,
}

impl Proc {
    /// Writes one line to its stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Closes its stdin (the peer's scripted mode then ends every chat and exits).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `limit` for a stdout line starting with `prefix` (one seen earlier and
    /// not yet taken counts); panics with everything it printed when none comes.
    pub fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        if let Some(i) = self.backlog.iter().position(|l| l.starts_with(prefix)) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                    self.backlog.push(line);
                }
                Err(e) => panic!(
                    "{}: no line starting with {prefix:?} ({e:?}); stdout:\n{}\nstderr:\n{}",
                    self.label,
                    self.seen.join("\n"),
                    std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
                ),
            }
        }
    }
}
