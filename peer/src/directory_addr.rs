//! Where the directory is: a `--directory` value (one `HOST[:PORT]`, or several instances
//! of one service separated by commas) and its resolution to socket addresses.

use std::net::SocketAddr;

use anyhow::{Context, bail};

/// The directory's default port.
pub const DEFAULT_DIRECTORY_PORT: u16 = 8888;

/// Resolves `HOST[:PORT]` (port 8888 when missing).
pub async fn resolve(directory: &str) -> anyhow::Result<SocketAddr> {
    let with_port = if directory.parse::<SocketAddr>().is_ok()
        || directory
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok())
    {
        directory.to_string()
    } else {
        format!("{directory}:{DEFAULT_DIRECTORY_PORT}")
    };
    tokio::net::lookup_host(&with_port)
        .await
        .with_context(|| format!("cannot resolve directory address {directory}"))?
        .next()
        .with_context(|| format!("directory address {directory} resolves to nothing"))
}

/// The addresses in a `--directory` value: one `HOST[:PORT]`, or several instances of one
/// directory service separated by commas (`a.example:8888,b.example:8888`).
pub fn directory_names(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// Resolves every name of `names` that resolves (in order); fails only if none does.
pub async fn resolve_all(names: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::with_capacity(names.len());
    let mut last_error = None;
    for name in names {
        match resolve(name).await {
            Ok(addr) => addrs.push(addr),
            Err(e) => last_error = Some(e),
        }
    }
    match (addrs.is_empty(), last_error) {
        (true, Some(e)) => Err(e),
        (true, None) => bail!("no directory address"),
        (false, _) => Ok(addrs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_split_on_commas() {
        assert_eq!(directory_names("a:1"), ["a:1"]);
        assert_eq!(directory_names(" a:1, b:2 ,,"), ["a:1", "b:2"]);
        assert!(directory_names(",").is_empty());
    }

    #[tokio::test]
    async fn resolve_all_skips_names_that_do_not_resolve() {
        let names = directory_names("127.0.0.1:9,name.invalid:9,127.0.0.2");
        let addrs = resolve_all(&names).await.unwrap();
        assert_eq!(
            addrs,
            [
                "127.0.0.1:9".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:8888".parse().unwrap()
            ]
        );
        assert!(resolve_all(&directory_names("name.invalid")).await.is_err());
        assert!(resolve_all(&[]).await.is_err());
    }
}
