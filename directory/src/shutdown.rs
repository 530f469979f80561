//! The shutdown signal every task listens for.
//!
//! One [`ShutdownSender`] (held by [`crate::Directory`]) and any number of [`Shutdown`]
//! listeners. A listener created after the signal still sees it, so a connection accepted
//! at the last moment cannot miss it.

use tokio::sync::watch;

/// Sends the shutdown signal (with a reason for the peers).
#[derive(Debug)]
pub struct ShutdownSender {
    tx: watch::Sender<Option<String>>,
}

/// Waits for the shutdown signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Option<String>>,
}

/// A connected sender and listener.
pub fn channel() -> (ShutdownSender, Shutdown) {
    let (tx, rx) = watch::channel(None);
    (ShutdownSender { tx }, Shutdown { rx })
}

impl ShutdownSender {
    /// Signals every listener, now and later.
    pub fn signal(&self, reason: &str) {
        self.tx.send_if_modified(|current| {
            // The first reason stands: a later signal must not reword the notice.
            if current.is_none() {
                *current = Some(reason.to_string());
                true
            } else {
                false
            }
        });
    }

    /// A new listener.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    /// Whether shutdown has been signalled.
    pub fn is_signalled(&self) -> bool {
        self.tx.borrow().is_some()
    }
}

impl Shutdown {
    /// Completes with the reason once shutdown is signalled (at once if it already was).
    /// If the sender is dropped without a signal, completes with a generic reason.
    pub async fn recv(&mut self) -> String {
        match self.rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "directory stopped".to_string(),
        }
    }

    /// Whether shutdown has been signalled.
    pub fn is_shutdown(&self) -> bool {
        self.rx.borrow().is_some()
    }
}
