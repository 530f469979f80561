//! The classic chat server we compare with: ngircd (Debian's package, built with GnuTLS),
//! driven by a minimal IRC client of our own (tokio + rustls).
//!
//! Nothing is installed here: `benches/setup-ngircd.sh` does that. The bench makes a
//! throwaway self-signed certificate (rcgen, ECDSA P-256), an ngircd.conf with the
//! limits that would get in the way of a benchmark lifted (connections per IP, flood
//! penalties, DNS and ident lookups) and fixed DH parameters (RFC 7919 ffdhe2048, so
//! start-up does not generate them), all in a temporary directory, and starts
//! `ngircd -n -f CONF` on 127.0.0.1. The client pins that certificate exactly.
//!
//! The same measurements as ours: user A sends a PRIVMSG to user B; B's program answers
//! each one with a PRIVMSG back (the equivalent of our acknowledgement). A round trip is
//! A's send → B's answer arriving at A; throughput counts answers per second.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::procfs;

/// RFC 7919 ffdhe2048 (public, fixed): spares ngircd generating DH parameters at start.
const FFDHE2048: &str = "-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
";

/// Where ngircd is, or why it cannot be used.
pub fn find_ngircd() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("ngircd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "ngircd is not installed (run `bash benches/setup-ngircd.sh` as root)".to_string()
        })
}

/// A running ngircd with TLS on 127.0.0.1.
pub struct Ngircd {
    child: Child,
    pub addr: SocketAddr,
    pub tls: TlsConnector,
    pub version: String,
    _dir: tempfile::TempDir,
}

impl Ngircd {
    /// Writes certificate, key, DH parameters and config to a temporary directory and
    /// starts ngircd; returns once it accepts TLS connections.
    pub async fn start(bin: &PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
        let p = |name: &str| dir.path().join(name);
        std::fs::write(p("cert.pem"), cert.pem())?;
        std::fs::write(p("key.pem"), key.serialize_pem())?;
        std::fs::write(p("dh.pem"), FFDHE2048)?;
        let tls_port = free_port()?;
        let plain_port = free_port()?;
        let conf = format!(
            "[Global]\nName = bench.natter.invalid\nInfo = natter benchmark\nListen = 127.0.0.1\n\
             Ports = {plain_port}\nMotdPhrase = \"bench\"\nPidFile = {pid}\nServerUID = nobody\n\
             [Limits]\nMaxConnections = 0\nMaxConnectionsIP = 0\nMaxNickLength = 16\n\
             MaxPenaltyTime = 0\nPingTimeout = 600\n\
             [Options]\nPAM = no\nDNS = no\nIdent = no\n\
             [SSL]\nCertFile = {cert}\nKeyFile = {key}\nDHFile = {dh}\nPorts = {tls_port}\n",
            pid = p("ngircd.pid").display(),
            cert = p("cert.pem").display(),
            key = p("key.pem").display(),
            dh = p("dh.pem").display(),
        );
        std::fs::write(p("ngircd.conf"), conf)?;
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        let log = std::fs::File::create(p("ngircd.log"))?;
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(p("ngircd.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start ngircd")?;
        let tls = TlsConnector::from(Arc::new(client_config(cert.der().clone())?));
        let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
        let server = Self {
            child,
            addr,
            tls,
            version,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match IrcClient::connect(&server, "probe").await {
                Ok(c) => {
                    c.quit().await;
                    return Ok(server);
                }
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(server._dir.path().join("ngircd.log"))
                        .unwrap_or_default();
                    bail!("ngircd did not come up: {e:#}\n{log}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stats(&self) -> procfs::ProcStats {
        procfs::read(self.pid()).unwrap_or_default()
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// TLS 1.3 client (ring) that accepts exactly the certificate we generated.
fn client_config(expected: CertificateDer<'static>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { expected, provider }))
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct Pinned {
    expected: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the certificate we made".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

type Reader = tokio::io::Lines<BufReader<ReadHalf<TlsStream<TcpStream>>>>;
type Writer = WriteHalf<TlsStream<TcpStream>>;

/// A registered IRC user.
pub struct IrcClient {
    lines: Reader,
    writer: Writer,
}

impl IrcClient {
    /// TLS, `NICK`/`USER`, then reads up to the end of the MOTD.
    pub async fn connect(server: &Ngircd, nick: &str) -> anyhow::Result<Self> {
        Self::connect_to(server.addr, &server.tls, nick).await
    }

    /// Like [`IrcClient::connect`], given the server's address and TLS configuration.
    pub async fn connect_to(
        addr: SocketAddr,
        tls: &TlsConnector,
        nick: &str,
    ) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tls = tls.connect(ServerName::try_from("localhost")?, tcp).await?;
        let (r, w) = tokio::io::split(tls);
        let mut client = Self {
            lines: BufReader::new(r).lines(),
            writer: w,
        };
        client
            .send(&format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n"))
            .await?;
        loop {
            let line = client.line().await?;
            match line.split(' ').nth(1) {
                Some("376") | Some("422") => return Ok(client),
                Some(code) if code.starts_with('4') || code.starts_with('5') => {
                    bail!("registration refused: {line}")
                }
                _ => {}
            }
        }
    }

    async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.writer.write_all(text.as_bytes()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// The next line, answering `PING`s on the way.
    async fn line(&mut self) -> anyhow::Result<String> {
        loop {
            let line = self
                .lines
                .next_line()
                .await?
                .context("ngircd closed the connection")?;
            if let Some(token) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {token}\r\n")).await?;
                continue;
            }
            if line.starts_with("ERROR") {
                bail!("ngircd: {line}");
            }
            return Ok(line);
        }
    }

    /// The next PRIVMSG: (sender nick, text).
    async fn privmsg(&mut self) -> anyhow::Result<(String, String)> {
        loop {
            let line = self.line().await?;
            let mut parts = line.splitn(4, ' ');
            let (Some(prefix), Some("PRIVMSG"), Some(_to), Some(text)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let from = prefix
                .trim_start_matches(':')
                .split('!')
                .next()
                .unwrap_or("");
            return Ok((from.to_string(), text.trim_start_matches(':').to_string()));
        }
    }

    /// Says goodbye.
    pub async fn quit(mut self) {
        let _ = self.send("QUIT :bye\r\n").await;
        let _ = self.writer.shutdown().await;
    }
}

/// Starts user `nick` on `runtime`: it answers every PRIVMSG with `ack` to the sender,
/// until the connection ends.
pub async fn start_acker(
    server: &Ngircd,
    runtime: &tokio::runtime::Runtime,
    nick: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut client = IrcClient::connect(server, nick).await?;
    Ok(runtime.spawn(async move {
        while let Ok((from, _)) = client.privmsg().await {
            if client
                .send(&format!("PRIVMSG {from} :ack\r\n"))
                .await
                .is_err()
            {
                break;
            }
        }
    }))
}

/// Round trips: `warmup` + `samples` times, a `size`-byte PRIVMSG to `to` and wait for
/// its answer.
pub async fn round_trips(
    client: &mut IrcClient,
    to: &str,
    size: usize,
    warmup: usize,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let text = "x".repeat(size);
    let mut out = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let t0 = Instant::now();
        client.send(&format!("PRIVMSG {to} :{text}\r\n")).await?;
        tokio::time::timeout(Duration::from_secs(20), client.privmsg())
            .await
            .context("no answer within 20 s")??;
        if i >= warmup {
            out.push(t0.elapsed());
        }
    }
    Ok(out)
}

/// Throughput: `size`-byte PRIVMSGs to `to` for `duration`, at most `window`
/// unanswered; returns answers per `tick` and the total.
pub async fn throughput(
    client: IrcClient,
    to: &str,
    size: usize,
    window: usize,
    duration: Duration,
    tick: Duration,
) -> anyhow::Result<(Vec<u64>, u64, Duration)> {
    let IrcClient { mut lines, writer } = client;
    let credits = Arc::new(Semaphore::new(window));
    let line = format!("PRIVMSG {to} :{}\r\n", "y".repeat(size));
    let sender = {
        let credits = credits.clone();
        tokio::spawn(async move {
            let mut writer = writer;
            let deadline = Instant::now() + duration;
            let mut sent = 0u64;
            while Instant::now() < deadline {
                credits.acquire().await?.forget();
                writer.write_all(line.as_bytes()).await?;
                writer.flush().await?;
                sent += 1;
            }
            anyhow::Ok((sent, writer))
        })
    };
    let start = Instant::now();
    let (mut per_tick, mut in_tick, mut total) = (Vec::new(), 0u64, 0u64);
    let mut next_tick = start + tick;
    let mut sent: Option<u64> = None;
    let mut sender = sender;
    let mut _writer = None;
    loop {
        if let Some(sent) = sent
            && total >= sent
        {
            break;
        }
        tokio::select! {
            done = &mut sender, if sent.is_none() => {
                let (n, w) = done??;
                sent = Some(n);
                _writer = Some(w);
            }
            line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()) => {
                let line = line.context("answers stopped")??.context("ngircd closed")?;
                if line.contains(" PRIVMSG ") {
                    credits.add_permits(1);
                    total += 1;
                    in_tick += 1;
                    let now = Instant::now();
                    while now >= next_tick {
                        per_tick.push(in_tick);
                        in_tick = 0;
                        next_tick += tick;
                    }
                } else if line.starts_with("ERROR") {
                    bail!("ngircd: {line}");
                }
            }
        }
    }
    let elapsed = start.elapsed();
    per_tick.truncate((duration.as_secs_f64() / tick.as_secs_f64()) as usize);
    Ok((per_tick, total, elapsed))
}

/// Connects `n` registered users (at most `concurrency` registering at once) and keeps
/// them connected; returns the phase (latency = TLS connect through end of MOTD).
pub async fn connect_many(
    server: &Ngircd,
    n: usize,
    concurrency: usize,
) -> (crate::swarm::Phase, Vec<IrcClient>) {
    let addr = server.addr;
    let tls = server.tls.clone();
    let jobs: Vec<usize> = (0..n).collect();
    crate::swarm::bounded(jobs, Some(concurrency), move |i| {
        let tls = tls.clone();
        async move {
            IrcClient::connect_to(addr, &tls, &format!("c{i}"))
                .await
                .map_err(|e| format!("irc user c{i}: {e:#}"))
        }
    })
    .await
}
