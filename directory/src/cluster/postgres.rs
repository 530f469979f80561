//! The PostgreSQL cluster backend: presence rows, heartbeats and `LISTEN/NOTIFY` on the
//! database the instances already share.
//!
//! Why the database and not instance-to-instance links: the instances already depend on
//! it, it needs no extra ports, addresses or certificates between instances, it orders
//! each sender's messages, and a new instance finds the others by just connecting. The
//! cost is a few milliseconds per message and PostgreSQL's 8000-byte payload limit —
//! fine for logins, logouts and small events. Relayed chat bytes do not go this way:
//! instances link to each other over QUIC for that ([`crate::relay::forward`]), at the
//! `relay_address` each one records in the `instances` table.
//!
//! Three tasks per instance:
//! - the **writer** takes [`Message`]s in publication order, keeps this instance's rows
//!   of the `presence` table up to date, and sends each message with `pg_notify`;
//! - the **heartbeat** refreshes `instances.heartbeat_at` every
//!   [`ClusterPolicy::heartbeat`], deletes instances silent for
//!   [`ClusterPolicy::expiry`] (their presence rows go with them) announcing them
//!   [`Message::Gone`], and re-reads everyone's presence, which repairs anything a lost
//!   notification left out;
//! - the **listener** holds its own connection with `LISTEN` and hands what arrives to
//!   [`Presence::apply_remote`]; it reconnects when the connection drops.
//!
//! Times are the database's (`now()`), so the instances' clocks do not matter.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{Batch, Cluster, ClusterPolicy, Envelope, InstanceStatus, Message};
use crate::presence::Presence;
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use crate::store::postgres::PostgresStore;

/// Largest `NOTIFY` payload PostgreSQL accepts, less a margin.
const MAX_PAYLOAD: usize = 7900;

/// This instance's link to the others through PostgreSQL.
#[derive(Debug)]
pub struct PgCluster {
    id: String,
    outbox: mpsc::UnboundedSender<Message>,
    pool: Pool,
    /// Set once the writer has left the cluster (on shutdown).
    left: tokio::sync::watch::Sender<bool>,
}

impl Cluster for PgCluster {
    fn instance(&self) -> &str {
        &self.id
    }

    fn publish(&self, message: Message) {
        let _ = self.outbox.send(message);
    }

    fn left(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut left = self.left.subscribe();
        Box::pin(async move {
            let _ = left.wait_for(|done| *done).await;
        })
    }

    fn instances(&self) -> Pin<Box<dyn Future<Output = Vec<InstanceStatus>> + Send + '_>> {
        Box::pin(async move {
            let rows = async {
                let client = self.pool.get().await?;
                client
                    .query(
                        "SELECT i.id, i.relay_address,
                                EXTRACT(EPOCH FROM now() - i.heartbeat_at)::float8,
                                (SELECT count(*) FROM presence p WHERE p.instance = i.id)
                         FROM instances i ORDER BY i.id",
                        &[],
                    )
                    .await
                    .map_err(StoreError::from)
            };
            match rows.await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| InstanceStatus {
                        id: r.get(0),
                        relay_address: r.get(1),
                        heartbeat_age_secs: r.get::<_, f64>(2).max(0.0),
                        users: r.get::<_, i64>(3).max(0) as u64,
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!("cluster: cannot list instances: {e}");
                    Vec::new()
                }
            }
        })
    }

    fn relay_address(
        &self,
        instance: &str,
    ) -> Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send + '_>> {
        let instance = instance.to_string();
        Box::pin(async move {
            let client = self.pool.get().await.ok()?;
            let row = client
                .query_opt(
                    "SELECT relay_address FROM instances WHERE id = $1",
                    &[&instance],
                )
                .await
                .ok()??;
            row.get::<_, Option<String>>(0)?.parse().ok()
        })
    }
}

/// Registers this instance in the database behind `store` (with `relay_address`, where
/// the others reach it), starts the writer, the heartbeat and the listener, and attaches
/// them to `presence`. They stop when `shutdown` fires (the instance then removes itself,
/// so its users go offline everywhere at once).
pub async fn start(
    store: &PostgresStore,
    presence: Presence,
    policy: ClusterPolicy,
    relay_address: SocketAddr,
    shutdown: Shutdown,
) -> Result<Arc<PgCluster>, StoreError> {
    let pool = store.pool().clone();
    let client = pool.get().await?;
    let schema: String = client
        .query_one("SELECT current_schema()", &[])
        .await?
        .get(0);
    let channel = format!("natter_{schema}");
    let id = format!("{:016x}", rand::random::<u64>());
    let relay_address = relay_address.to_string();
    client
        .execute(
            "INSERT INTO instances (id, relay_address) VALUES ($1, $2)",
            &[&id, &relay_address],
        )
        .await?;
    drop(client);

    let (outbox, inbox) = mpsc::unbounded_channel();
    let cluster = Arc::new(PgCluster {
        id: id.clone(),
        outbox,
        pool: pool.clone(),
        left: tokio::sync::watch::Sender::new(false),
    });
    let ctx = Arc::new(Context {
        pool,
        id,
        relay_address,
        channel,
        presence: presence.clone(),
        policy,
        cluster: cluster.clone(),
    });
    // Listen before anything is published, and before the first snapshot.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(listener(
        ctx.clone(),
        store.config().clone(),
        shutdown.clone(),
        Some(ready_tx),
    ));
    let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
    ctx.resync().await;
    tokio::spawn(writer(ctx.clone(), inbox, shutdown.clone()));
    tokio::spawn(heartbeat(ctx, shutdown));
    presence.set_cluster(cluster.clone());
    tracing::info!(instance = %cluster.id, "joined the cluster");
    Ok(cluster)
}

struct Context {
    pool: Pool,
    id: String,
    relay_address: String,
    channel: String,
    presence: Presence,
    policy: ClusterPolicy,
    cluster: Arc<PgCluster>,
}

impl Context {
    /// Sends `message` to the other instances (not stored).
    async fn notify(&self, message: Message) -> Result<(), StoreError> {
        let payload = serde_json::to_string(&Envelope {
            from: self.id.clone(),
            message,
        })?;
        if payload.len() > MAX_PAYLOAD {
            return Err(StoreError::Unusable(format!(
                "cluster message of {} bytes is too large",
                payload.len()
            )));
        }
        let client = self.pool.get().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload])
            .await?;
        Ok(())
    }

    /// Records a batch of messages in the presence table (logins, logouts) and sends
    /// them, in one transaction: one commit for the lot, and the notifications leave
    /// when it commits, in order, packed into as few payloads as fit.
    async fn write(&self, batch: Vec<Message>) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        for message in &batch {
            match message {
                Message::Online { info, conn } => {
                    let json = serde_json::to_string(info)?;
                    tx.execute(
                        "INSERT INTO presence (username, instance, conn, info) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (username) DO UPDATE SET instance = excluded.instance,
                             conn = excluded.conn, info = excluded.info, since = now()",
                        &[&info.user.as_str(), &self.id, &(*conn as i64), &json],
                    )
                    .await?;
                }
                Message::Offline { user, conn } => {
                    tx.execute(
                        "DELETE FROM presence WHERE username = $1 AND instance = $2 AND conn = $3",
                        &[&user.as_str(), &self.id, &(*conn as i64)],
                    )
                    .await?;
                }
                _ => {}
            }
        }
        for payload in payloads(&self.id, batch)? {
            tx.execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload])
                .await?;
        }
        Ok(tx.commit().await?)
    }

    /// Re-reads every other instance's presence rows.
    async fn resync(&self) {
        let read_at = Instant::now();
        let rows = match self.pool.get().await {
            Ok(client) => {
                client
                    .query(
                        "SELECT instance, conn, info FROM presence WHERE instance <> $1",
                        &[&self.id],
                    )
                    .await
            }
            Err(e) => {
                tracing::warn!("cluster: cannot read presence: {e}");
                return;
            }
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("cluster: cannot read presence: {e}");
                return;
            }
        };
        let snapshot = rows
            .iter()
            .filter_map(|r| {
                let info: String = r.get(2);
                let conn: i64 = r.get(1);
                Some((r.get(0), conn as u64, serde_json::from_str(&info).ok()?))
            })
            .collect();
        self.presence.resync_remote(snapshot, read_at);
    }

    /// One heartbeat: prove life, sweep the dead, re-read presence.
    async fn beat(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let alive = client
            .execute(
                "UPDATE instances SET heartbeat_at = now() WHERE id = $1",
                &[&self.id],
            )
            .await?;
        if alive == 0 {
            // Declared dead (a long pause, a lost database): come back, republish.
            tracing::warn!(instance = %self.id, "cluster: this instance had expired; rejoining");
            client
                .execute(
                    "INSERT INTO instances (id, relay_address) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&self.id, &self.relay_address],
                )
                .await?;
            for (info, conn) in self.presence.local_sessions() {
                self.cluster.publish(Message::Online { info, conn });
            }
        }
        let expiry = self.policy.expiry.as_secs_f64();
        let dead = client
            .query(
                "DELETE FROM instances WHERE heartbeat_at < now() - make_interval(secs => $1)
                 RETURNING id",
                &[&expiry],
            )
            .await?;
        drop(client);
        for row in dead {
            let instance: String = row.get(0);
            tracing::warn!(%instance, "cluster: instance stopped sending heartbeats; its users are offline");
            self.presence.apply_remote(
                &self.id,
                Message::Gone {
                    instance: instance.clone(),
                },
            );
            self.cluster.publish(Message::Gone { instance });
        }
        self.resync().await;
        Ok(())
    }

    /// Leaves the cluster: this instance's users go offline everywhere.
    async fn leave(&self) {
        let result = async {
            let client = self.pool.get().await?;
            client
                .execute("DELETE FROM instances WHERE id = $1", &[&self.id])
                .await?;
            drop(client);
            self.notify(Message::Gone {
                instance: self.id.clone(),
            })
            .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("cluster: cannot leave cleanly ({e}); the others expire us");
        }
    }
}

/// `messages` as `NOTIFY` payloads of at most [`MAX_PAYLOAD`] bytes, in order. A
/// message too large to send alone is dropped (logged).
fn payloads(from: &str, messages: Vec<Message>) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut size = 0;
    let wrap = |items: &[String]| {
        format!(
            "{{\"from\":{},\"messages\":[{}]}}",
            serde_json::Value::String(from.to_string()),
            items.join(",")
        )
    };
    let overhead = wrap(&[]).len();
    for message in messages {
        let json = serde_json::to_string(&message)?;
        if overhead + json.len() > MAX_PAYLOAD {
            tracing::warn!(
                "cluster message of {} bytes is too large; dropped",
                json.len()
            );
            continue;
        }
        if overhead + size + json.len() + 1 > MAX_PAYLOAD {
            out.push(wrap(&pending));
            pending.clear();
            size = 0;
        }
        size += json.len() + 1;
        pending.push(json);
    }
    if !pending.is_empty() {
        out.push(wrap(&pending));
    }
    Ok(out)
}

/// Most messages written in one transaction.
const MAX_BATCH: usize = 512;

async fn writer(
    ctx: Arc<Context>,
    mut inbox: mpsc::UnboundedReceiver<Message>,
    mut shutdown: Shutdown,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            n = inbox.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    break;
                }
                // Whatever queued while the last batch was written goes in this one.
                if let Err(e) = ctx.write(std::mem::take(&mut batch)).await {
                    tracing::warn!("cluster: cannot publish: {e}");
                }
            }
            _ = shutdown.recv() => break,
        }
    }
    ctx.leave().await;
    ctx.cluster.left.send_replace(true);
}

async fn heartbeat(ctx: Arc<Context>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(ctx.policy.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = ctx.beat().await {
                    tracing::warn!("cluster: heartbeat failed: {e}");
                }
            }
            _ = shutdown.recv() => break,
        }
    }
}

async fn listener(
    ctx: Arc<Context>,
    config: tokio_postgres::Config,
    mut shutdown: Shutdown,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    loop {
        let session = async {
            let (client, mut connection) = config.connect(NoTls).await?;
            let (tx, mut rx) = mpsc::unbounded_channel();
            // The connection yields the notifications; drive it on its own task.
            let driver = tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(n))) => {
                            if tx.send(n.payload().to_string()).is_err() {
                                break;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::warn!("cluster: listener connection: {e}");
                            break;
                        }
                        None => break,
                    }
                }
            });
            let quoted = ctx.channel.replace('"', "\"\"");
            client
                .batch_execute(&format!("LISTEN \"{quoted}\""))
                .await?;
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            } else {
                // Reconnected: we may have missed messages meanwhile.
                ctx.resync().await;
            }
            while let Some(payload) = rx.recv().await {
                match serde_json::from_str::<Batch>(&payload) {
                    Ok(batch) if batch.from == ctx.id => {}
                    Ok(batch) => {
                        for message in batch.messages {
                            ctx.presence.apply_remote(&batch.from, message);
                        }
                    }
                    // One message alone (`leave`, and instances of earlier versions).
                    Err(_) => match serde_json::from_str::<Envelope>(&payload) {
                        Ok(env) if env.from == ctx.id => {}
                        Ok(env) => ctx.presence.apply_remote(&env.from, env.message),
                        Err(e) => tracing::warn!("cluster: undecodable message: {e}"),
                    },
                }
            }
            drop(client);
            let _ = driver.await;
            Ok::<(), StoreError>(())
        };
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::warn!("cluster: listener: {e}");
                }
            }
            _ = shutdown.recv() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// The address the other instances should dial to reach this one: `configured` when
/// given, else `listening`, with an unspecified IP (`0.0.0.0`) replaced by the one this
/// machine uses toward the database (the instances all reach the database, so they most
/// likely reach each other that way too; loopback for a database on this machine).
pub async fn relay_address(
    listening: SocketAddr,
    configured: Option<SocketAddr>,
    database: &tokio_postgres::Config,
) -> SocketAddr {
    if let Some(addr) = configured {
        return addr;
    }
    if !listening.ip().is_unspecified() {
        return listening;
    }
    let loopback = SocketAddr::new(
        if listening.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        },
        listening.port(),
    );
    let port = database.get_ports().first().copied().unwrap_or(5432);
    let Some(tokio_postgres::config::Host::Tcp(host)) = database.get_hosts().first() else {
        return loopback;
    };
    let Ok(mut found) = tokio::net::lookup_host((host.as_str(), port)).await else {
        return loopback;
    };
    let Some(db) = found.next() else {
        return loopback;
    };
    let toward = async {
        let any: SocketAddr = if db.is_ipv4() {
            "0.0.0.0:0".parse().expect("address")
        } else {
            "[::]:0".parse().expect("address")
        };
        let socket = tokio::net::UdpSocket::bind(any).await?;
        socket.connect(db).await?;
        socket.local_addr()
    };
    match toward.await {
        Ok(local) => SocketAddr::new(local.ip(), listening.port()),
        Err(_) => loopback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fit_notify_payloads_in_order() {
        let messages: Vec<Message> = (0..500)
            .map(|i| Message::Kick {
                user: format!("user-{i}").parse().unwrap(),
                reason: "x".repeat(40),
            })
            .collect();
        let out = payloads("0123456789abcdef", messages.clone()).unwrap();
        assert!(out.len() > 1, "split into several payloads");
        let mut back = Vec::new();
        for p in &out {
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            let batch: Batch = serde_json::from_str(p).unwrap();
            assert_eq!(batch.from, "0123456789abcdef");
            back.extend(batch.messages);
        }
        assert_eq!(back, messages);
        let huge = Message::Kick {
            user: "ali".parse().unwrap(),
            reason: "x".repeat(MAX_PAYLOAD),
        };
        assert!(
            payloads("a", vec![huge]).unwrap().is_empty(),
            "too large: dropped"
        );
    }
}
