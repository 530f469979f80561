//! Where the directory's settings come from: the configuration file (TOML), the
//! environment and the flags over the defaults; printing them; logging set-up.
//!
//! Every setting has a built-in default ([`Config::new`]), so no file is needed. Where a
//! setting is given several times, the most specific wins:
//!
//! ```text
//! built-in default  <  configuration file  <  environment  <  command-line flag
//! ```
//!
//! The environment counts for `RUST_LOG` (the log filter), `NATTER_DIRECTORY_DATA` and
//! `NATTER_DIRECTORY_CONFIG` (the latter two are the `--data`/`--config` flags' own
//! variables). The file is `--config FILE` when given, else `directory.toml` in the data
//! directory when it exists. The file is [`Config`] itself, deserialized: keys are the
//! flags' names with `_` for `-`, durations are seconds. [`render`] (`directory config
//! print`) is its serialization, itself a valid file; `docs/OPERATIONS.md` lists every
//! key.
//!
//! Unknown keys are an error (a typo must not silently leave a default in force), and so
//! are values that make no sense ([`Config::validate`]: no connections allowed, an empty
//! token). Every error is one line naming the file and the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::{CONFIG_FILE, Config, LogFormat, LogSettings};

/// Where settings come from besides the file and the flags that set [`Config`] fields.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config FILE`; `None`: `directory.toml` in the data directory, if it exists.
    pub config: Option<PathBuf>,
    /// `--data DIR`: beats the file's `data`.
    pub data: Option<PathBuf>,
    /// The data directory when neither `--data` nor the file names one.
    pub default_data: Option<PathBuf>,
    /// The `RUST_LOG` variable: beats the file's `log.filter`.
    pub rust_log: Option<String>,
    /// The log filter when nothing else sets one.
    pub default_filter: String,
}

/// The settings in force, and where the file came from.
#[derive(Debug, Clone)]
pub struct Effective {
    pub config: Config,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    parse(&text).with_context(|| format!("configuration file {}", path.display()))
}

/// Parses a configuration file's text (not yet validated). A key it does not name keeps
/// its default; a file that does not name `data` gives an empty `data_dir`. An error is
/// one line: where, and what.
pub fn parse(text: &str) -> anyhow::Result<Config> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                anyhow::anyhow!("line {line}, column {column}: {message}")
            }
            None => anyhow::anyhow!("{message}"),
        }
    })
}

/// Finds and reads the configuration file, then [`apply`]s it.
pub fn resolve(sources: &Sources, flags: impl FnOnce(&mut Config)) -> anyhow::Result<Effective> {
    let (file, path) = match &sources.config {
        Some(path) => (load(path)?, Some(path.clone())),
        None => {
            let data = sources.data.as_ref().or(sources.default_data.as_ref());
            match data.map(|d| d.join(CONFIG_FILE)) {
                Some(path) if path.is_file() => {
                    let file = load(&path)?;
                    if !file.data_dir.as_os_str().is_empty()
                        && Some(file.data_dir.as_path()) != path.parent()
                    {
                        bail!(
                            "{}: `data` cannot move the data directory from a file inside it; \
                             pass --config FILE instead",
                            path.display()
                        );
                    }
                    (file, Some(path))
                }
                _ => (Config::new(PathBuf::new()), None),
            }
        }
    };
    let config = apply(file, sources, flags).with_context(|| match &path {
        Some(p) => format!("configuration from {} and flags", p.display()),
        None => "configuration from flags".into(),
    })?;
    Ok(Effective { config, file: path })
}

/// The file's settings, then the environment, then `flags` (no file system access);
/// validated.
pub fn apply(
    mut config: Config,
    sources: &Sources,
    flags: impl FnOnce(&mut Config),
) -> anyhow::Result<Config> {
    let file_data = Some(config.data_dir.clone()).filter(|d| !d.as_os_str().is_empty());
    config.data_dir = sources
        .data
        .clone()
        .or(file_data)
        .or_else(|| sources.default_data.clone())
        .context("cannot find a data directory for this user; pass --data DIR")?;
    if let Some(filter) = sources.rust_log.as_ref().filter(|v| !v.trim().is_empty()) {
        config.log.filter = Some(filter.clone());
    }
    flags(&mut config);
    config
        .log
        .filter
        .get_or_insert_with(|| sources.default_filter.clone());
    config.validate()?;
    Ok(config)
}

/// The effective settings as a configuration file: every key, with its value in force
/// (what `directory config print` shows). Secrets (the status token, the database URL)
/// are never printed; settings not set are shown as comments.
pub fn render(e: &Effective) -> anyhow::Result<String> {
    let c = &e.config;
    let file = e.file.as_deref().map(Path::display);
    let mut out = format!(
        "# Effective configuration of the Natter directory (file: {}).\n\
         # Precedence: default < file < environment < flags.\n",
        file.map_or_else(|| "none".into(), |f| f.to_string())
    );
    if c.handshake_burst.is_none() {
        out += &format!(
            "# handshake_burst = {}  (as max_connections_per_ip)\n",
            c.effective_handshake_burst()
        );
    }
    if c.handshakes_per_sec.is_none() {
        out += &format!(
            "# handshakes_per_sec = {}  (a quarter of the burst)\n",
            c.effective_handshakes_per_sec()
        );
    }
    if c.status.is_none() {
        out += "# status = \"127.0.0.1:8080\"  (off)\n";
    }
    out += match c.database {
        Some(_) => "# database = (PostgreSQL; not shown: it may hold a password)\n",
        None => "# database = (SQLite in the data directory)\n",
    };
    out += match c.status_token {
        Some(_) => "# status_token = (set; not shown)\n",
        None => "# status_token = (not set)\n",
    };
    if c.cluster.address.is_none() {
        out += "# cluster.address = (the listening address; 0.0.0.0 becomes the address \
                toward the database)\n";
    }
    out.push('\n');
    out += &toml::to_string(c).context("cannot print the configuration")?;
    Ok(out)
}

/// Sets up `tracing` for the process: `settings.filter` (per-module directives; `info`
/// when unset), as text (coloured on a terminal) or JSON lines, on stderr.
pub fn init_logging(settings: &LogSettings) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let directives = settings.filter.as_deref().unwrap_or("info");
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .map_err(|e| anyhow::anyhow!("log filter {directives:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;

    fn sources(rust_log: Option<&str>) -> Sources {
        Sources {
            default_data: Some(PathBuf::from("/var/lib/natter")),
            rust_log: rust_log.map(String::from),
            default_filter: "info".into(),
            ..Sources::default()
        }
    }

    fn no_flags(_: &mut Config) {}

    /// Applies `text` as the file, with no environment and no flags.
    fn from_file(text: &str) -> anyhow::Result<Config> {
        apply(parse(text)?, &sources(None), no_flags)
    }

    fn print(config: &Config) -> String {
        render(&Effective {
            config: config.clone(),
            file: None,
        })
        .unwrap()
    }

    #[test]
    fn no_file_no_flags_gives_the_defaults() {
        let c = from_file("").unwrap();
        let d = Config::new("/var/lib/natter");
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.max_connections, d.max_connections);
        assert_eq!(c.lockout, d.lockout);
        assert_eq!(c.status, None);
        assert_eq!(c.log.filter.as_deref(), Some("info"));
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn file_over_defaults_and_flags_over_file() {
        let file = parse(
            r#"
            listen = "127.0.0.1:9000"
            open_registration = true
            idle_timeout = 30
            max_connections = 50
            status = "127.0.0.1:8080"
            status_token = "0123456789abcdef"
            [lockout]
            max_failures = 5
            [log]
            filter = "warn,directory::auth=debug"
            format = "json"
            [audit]
            max_bytes = 1000
            keep = 2
            [cluster]
            address = "10.0.0.5:8888"
            heartbeat_secs = 1
            expiry_secs = 4
            "#,
        )
        .unwrap();
        let c = apply(file.clone(), &sources(None), no_flags).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert!(c.open_registration);
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 50);
        assert_eq!(c.lockout.max_failures, 5);
        assert_eq!(c.lockout.base, Duration::from_secs(30), "default kept");
        assert_eq!(c.status, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.status_token, Some(Secret("0123456789abcdef".into())));
        assert_eq!(c.audit_rotation.keep, 2);
        assert_eq!(c.cluster.address, Some("10.0.0.5:8888".parse().unwrap()));
        assert_eq!(c.cluster.heartbeat, Duration::from_secs(1));
        assert_eq!(c.cluster.expiry, Duration::from_secs(4));
        assert_eq!(c.log.filter.as_deref(), Some("warn,directory::auth=debug"));
        assert_eq!(c.log.format, LogFormat::Json);

        // RUST_LOG beats the file; flags beat both.
        let c = apply(file.clone(), &sources(Some("debug")), no_flags).unwrap();
        assert_eq!(c.log.filter.as_deref(), Some("debug"));
        let flags = |c: &mut Config| {
            c.listen = "127.0.0.1:9999".parse().unwrap();
            c.open_registration = false;
            c.max_connections = 7;
            c.log.filter = Some("error".into());
            c.log.format = LogFormat::Text;
        };
        let with_data = Sources {
            data: Some("/srv/natter".into()),
            ..sources(Some("debug"))
        };
        let c = apply(file, &with_data, flags).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9999".parse().unwrap());
        assert!(!c.open_registration);
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.idle_timeout, Duration::from_secs(30), "file kept");
        assert_eq!(c.data_dir, PathBuf::from("/srv/natter"));
        assert_eq!(c.log.filter.as_deref(), Some("error"));
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(parse("lisen = \"127.0.0.1:1\"").is_err(), "unknown key");
        assert!(
            parse("[lockout]\nmax_failure = 3").is_err(),
            "unknown key in a table"
        );
        assert!(parse("listen = 8888").is_err(), "wrong type");
        assert!(parse("[log]\nformat = \"xml\"").is_err());
        let bad = |text: &str| from_file(text).unwrap_err().to_string();
        assert!(bad("max_connections = 0").contains("max_connections"));
        assert!(bad("status_token = \"short\"").contains("status_token"));
        assert!(bad("[lockout]\nmax_secs = 99999999999").contains("lockout.max_secs"));
        assert!(bad("[log]\nfilter = \"info,=[\"").contains("log filter"));
        assert!(bad("[cluster]\nexpiry_secs = 3").contains("cluster.expiry_secs"));
        assert!(bad("[cluster]\nheartbeat_secs = 0").contains("cluster.expiry_secs"));
        let no_data = Sources {
            default_data: None,
            ..sources(None)
        };
        let no_data = apply(Config::new(PathBuf::new()), &no_data, no_flags);
        assert!(no_data.unwrap_err().to_string().contains("--data"));
    }

    #[test]
    fn errors_name_the_key_and_where_it_is() {
        let err = parse("listen = \"127.0.0.1:1\"\n[relay]\nenable = true\n").unwrap_err();
        let err = err.to_string();
        assert!(err.starts_with("line 3, column 1:"), "{err}");
        assert!(err.contains("unknown field `enable`"), "{err}");
        let zero = parse("[mailbox]\nmax_bytes = 0\n").unwrap().validate();
        assert_eq!(zero.unwrap_err().key(), "mailbox.max_bytes");
        assert_eq!(
            from_file("database = \"sqlite://x\"")
                .unwrap_err()
                .to_string(),
            crate::config::ConfigError::Database.to_string()
        );
        assert!(parse("idle_timeout = -1").is_err(), "negative duration");
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let c = from_file(
            "listen = \"127.0.0.1:9000\"\nstatus = \"127.0.0.1:8080\"\nstatus_token = \"0123456789abcdef\"\n[password_cost]\nmemory_kib = 4096\n",
        )
        .unwrap();
        let text = print(&c);
        assert!(!text.contains("0123456789abcdef"), "{text}");
        let again = apply(parse(&text).unwrap(), &Sources::default(), no_flags).unwrap();
        assert_eq!(again.listen, c.listen);
        assert_eq!(again.data_dir, c.data_dir);
        assert_eq!(again.status, c.status);
        assert_eq!(again.password_cost, c.password_cost);
        assert_eq!(again.source_limit, c.source_limit);
        assert_eq!(again.audit_rotation, c.audit_rotation);
        assert_eq!(again.log, c.log);
    }

    #[test]
    fn print_then_parse_gives_the_same_config() {
        let mut c = Config::new("/srv/natter dir/\"quoted\"");
        c.listen = "[::1]:9000".parse().unwrap();
        c.open_registration = true;
        c.handshake_burst = Some(8);
        c.hello_timeout = Duration::from_millis(2500);
        c.status = Some("127.0.0.1:8080".parse().unwrap());
        c.lockout.max_failures = 7;
        c.source_limit.window = Duration::from_secs(99);
        c.log.filter = Some("warn,directory::auth=debug".into());
        c.log.format = LogFormat::Json;
        c.audit_rotation.keep = 0;
        c.relay.enabled = false;
        c.mailbox.lifetime = Duration::from_secs(3600);
        c.cluster.address = Some("10.0.0.5:8888".parse().unwrap());
        let text = print(&c);
        assert_eq!(parse(&text).unwrap(), c, "{text}");
        // Secrets are left out, and only they.
        c.status_token = Some(Secret("0123456789abcdef".into()));
        c.database = Some(Secret("postgres://u:hunter2@db/natter".into()));
        let text = print(&c);
        assert!(
            !text.contains("0123456789abcdef") && !text.contains("hunter2"),
            "{text}"
        );
        let again = parse(&text).unwrap();
        assert_eq!((&again.status_token, &again.database), (&None, &None));
        assert_eq!(
            Config {
                status_token: None,
                database: None,
                ..c
            },
            again
        );
    }

    #[test]
    fn handshake_rate_follows_the_per_ip_cap_unless_set() {
        let c = from_file("max_connections_per_ip = 100\nwrite_timeout = 2\n").unwrap();
        assert_eq!(c.effective_handshake_burst(), 100);
        assert_eq!(c.effective_handshakes_per_sec(), 25);
        assert_eq!(c.write_timeout, Duration::from_secs(2));
        let text = print(&c);
        assert!(text.contains("# handshake_burst = 100"), "{text}");
        let c = from_file("handshake_burst = 8\nhandshakes_per_sec = 3\n").unwrap();
        assert_eq!(c.effective_handshake_burst(), 8);
        assert_eq!(c.effective_handshakes_per_sec(), 3);
        let again = apply(parse(&print(&c)).unwrap(), &Sources::default(), no_flags).unwrap();
        assert_eq!(again.handshake_burst, Some(8));
        assert_eq!(again.handshakes_per_sec, Some(3));
        assert_eq!(again.write_timeout, c.write_timeout);
        assert!(from_file("handshake_burst = 0").is_err());
    }

    #[test]
    fn the_file_in_the_data_directory_is_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "max_connections = 12\n").unwrap();
        let flags = Sources {
            data: Some(dir.path().to_path_buf()),
            default_filter: "info".into(),
            ..Sources::default()
        };
        let e = resolve(&flags, no_flags).unwrap();
        assert_eq!(e.config.max_connections, 12);
        assert_eq!(e.file, Some(dir.path().join(CONFIG_FILE)));
        std::fs::write(dir.path().join(CONFIG_FILE), "data = \"/elsewhere\"\n").unwrap();
        assert!(resolve(&flags, no_flags).is_err());
    }
}
