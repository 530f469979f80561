//! `/joke`: a random joke from an HTTP API, or one bundled with the program.
//!
//! The API is the official-joke-api's `random_joke` endpoint by default
//! ([`DEFAULT_API`]), or the profile's `joke_api` setting: any URL that answers a GET
//! with JSON `{"setup": "...", "punchline": "..."}`. The request has a short overall
//! timeout ([`TIMEOUT`]) and a small size limit; when it fails for any reason (offline,
//! slow, a bad answer) a joke from the list compiled into the program (`jokes.txt`) is
//! used instead, so `/joke` always has something to send.

use std::time::Duration;

use serde::Deserialize;

/// The public joke API used unless the profile names another.
pub const DEFAULT_API: &str = "https://official-joke-api.appspot.com/random_joke";
/// How long the API may take, all included (connecting, TLS, the answer).
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer read from the API.
const MAX_BODY: usize = 16 * 1024;
/// Longest joke accepted from the API (setup and punchline together).
const MAX_JOKE: usize = 1000;

const BUNDLED: &str = include_str!("jokes.txt");

/// Where a joke came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    Bundled,
}

/// A joke, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joke {
    pub setup: String,
    pub punchline: String,
    pub source: Source,
}

impl Joke {
    /// The joke as one chat message.
    pub fn text(&self) -> String {
        format!("{} {}", self.setup, self.punchline)
    }
}

#[derive(Deserialize)]
struct ApiJoke {
    setup: String,
    punchline: String,
}

/// A joke from `api` (within `timeout`), else a bundled one.
pub async fn fetch(api: &str, timeout: Duration) -> Joke {
    match tokio::time::timeout(timeout, from_api(api, timeout)).await {
        Ok(Ok(joke)) => joke,
        Ok(Err(e)) => {
            tracing::debug!("joke API {api}: {e}; using a bundled joke");
            bundled()
        }
        Err(_) => {
            tracing::debug!("joke API {api} took longer than {timeout:?}; using a bundled joke");
            bundled()
        }
    }
}

async fn from_api(api: &str, timeout: Duration) -> Result<Joke, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("natter-peer/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())?;
    let mut response = client
        .get(api)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err("answer too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    let joke: ApiJoke = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let (setup, punchline) = (joke.setup.trim(), joke.punchline.trim());
    if setup.is_empty() || setup.len() + punchline.len() > MAX_JOKE {
        return Err("not a usable joke".into());
    }
    Ok(Joke {
        setup: setup.to_string(),
        punchline: punchline.to_string(),
        source: Source::Api,
    })
}

/// Every bundled joke.
pub fn all_bundled() -> Vec<Joke> {
    BUNDLED
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('|'))
        .map(|(setup, punchline)| Joke {
            setup: setup.trim().to_string(),
            punchline: punchline.trim().to_string(),
            source: Source::Bundled,
        })
        .collect()
}

/// A random bundled joke.
pub fn bundled() -> Joke {
    let all = all_bundled();
    all[rand::random_range(0..all.len())].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_jokes_parse() {
        let all = all_bundled();
        assert!(all.len() >= 10);
        assert!(
            all.iter()
                .all(|j| !j.setup.is_empty() && !j.punchline.is_empty())
        );
        assert_eq!(bundled().source, Source::Bundled);
    }
}
