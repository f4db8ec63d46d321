//! Shared storage: a Redis server through which several gateway processes
//! share state (rate-limit counters, the distributed response cache). One
//! connection (redis-rs's `ConnectionManager`: multiplexed, pipelined,
//! reconnecting by itself) per configured server, shared by every policy
//! that uses it and kept across reloads while the settings are unchanged.
//! The server is one address, the master named by Redis Sentinel, or a
//! Redis Cluster (redis-rs's cluster connection: slots learnt from the
//! nodes, `MOVED`/`ASK` followed, the map refreshed after a failover);
//! in a cluster every key a script touches shares a hash tag
//! ([`Redis::tag`]).
//!
//! Every call has a deadline (`timeout`). After a failure the store is
//! considered down for one second: calls fail at once instead of each
//! waiting on a dead server, then the next call tries again. Failures are
//! counted in `flexgw_shared_storage_errors_total` and logged at most once
//! a minute.

use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::RedisFuture;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// `spec.server.sharedStorage.redis`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisSettings {
    /// `host:port` (empty with `sentinel`).
    pub address: String,
    /// The Sentinels that name the master (instead of `address`).
    pub sentinel: Option<Sentinel>,
    /// `host:port` of Redis Cluster nodes to learn the cluster from
    /// (instead of `address`; empty when not a cluster).
    pub cluster: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    pub tls: bool,
    /// Deadline of one call (connect included).
    pub timeout: Duration,
}

/// `sharedStorage.redis.sentinel`: Redis Sentinel.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sentinel {
    /// `host:port` of each Sentinel, asked in turn.
    pub addresses: Vec<String>,
    pub master_name: String,
    /// The Sentinels' own credentials (the data nodes use the outer ones).
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("addresses", &self.addresses)
            .field("master_name", &self.master_name)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RedisSettings {
    fn url(&self, address: &str) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{address}/{}", self.db)
    }

    /// Where the store is, for messages: the address, or the master's name
    /// and its Sentinels.
    pub fn describe(&self) -> String {
        match &self.sentinel {
            Some(s) => format!(
                "master {:?} (Sentinels {})",
                s.master_name,
                s.addresses.join(", ")
            ),
            None if !self.cluster.is_empty() => {
                format!("cluster {}", self.cluster.join(", "))
            }
            None => self.address.clone(),
        }
    }
}

/// Calls that failed (unreachable, timed out, refused).
pub static ERRORS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The connection: to one server (or the Sentinels' master), or to a
/// cluster.
#[derive(Clone)]
enum Connection {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Connection::One(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::One(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::One(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

pub struct Redis {
    settings: RedisSettings,
    conn: tokio::sync::Mutex<Option<Connection>>,
    down_until: Mutex<Option<Instant>>,
    last_log: Mutex<Option<Instant>>,
}

const DOWN_FOR: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A client for `url` logging in with these credentials (Redis 6 ACL
/// user, password).
fn client(
    url: &str,
    username: &Option<String>,
    password: &Option<String>,
) -> Result<redis::Client, String> {
    let info = url
        .parse::<redis::ConnectionInfo>()
        .map_err(|e| e.to_string())?;
    let mut redis_info = info.redis_settings().clone();
    if let Some(u) = username {
        redis_info = redis_info.set_username(u);
    }
    if let Some(p) = password {
        redis_info = redis_info.set_password(p);
    }
    redis::Client::open(info.set_redis_settings(redis_info)).map_err(|e| e.to_string())
}

/// The store for these settings: one per distinct settings in the process.
pub fn redis(settings: &RedisSettings) -> Arc<Redis> {
    static ALL: LazyLock<Mutex<HashMap<RedisSettings, Arc<Redis>>>> =
        LazyLock::new(Default::default);
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    all.entry(settings.clone())
        .or_insert_with(|| {
            Arc::new(Redis {
                settings: settings.clone(),
                conn: tokio::sync::Mutex::new(None),
                down_until: Mutex::new(None),
                last_log: Mutex::new(None),
            })
        })
        .clone()
}

impl Redis {
    pub fn address(&self) -> String {
        self.settings.describe()
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// `part` of a key as a hash tag (`{part}`) in a cluster, as is
    /// otherwise. A script's keys must all be on one node of a cluster:
    /// they share a tag. Outside a cluster keys keep the form they always
    /// had (counts and entries carry on across an upgrade).
    pub fn tag<'a>(&self, part: &'a str) -> std::borrow::Cow<'a, str> {
        match self.clustered() {
            false => part.into(),
            true => format!("{{{part}}}").into(),
        }
    }

    /// A Redis Cluster.
    pub fn clustered(&self) -> bool {
        !self.settings.cluster.is_empty()
    }

    /// The master's `host:port`, as the first Sentinel that answers names
    /// it (and the server there agrees it is the master).
    async fn master(&self, s: &Sentinel) -> Result<String, String> {
        let mut last = String::from("no Sentinel address");
        for addr in &s.addresses {
            match self.ask_sentinel(s, addr).await {
                Ok(master) => return Ok(master),
                Err(e) => last = format!("Sentinel {addr}: {e}"),
            }
        }
        Err(last)
    }

    async fn ask_sentinel(&self, s: &Sentinel, addr: &str) -> Result<String, String> {
        let client = client(&format!("redis://{addr}"), &s.username, &s.password)?;
        let ask = async {
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&s.master_name)
                .query_async::<Option<(String, String)>>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(self.settings.timeout, ask).await {
            Ok(Ok(Some((host, port)))) => Ok(format!("{host}:{port}")),
            Ok(Ok(None)) => Err(format!("no master named {:?}", s.master_name)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("no answer in time".into()),
        }
    }

    async fn connection(&self) -> Result<Connection, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = match self.clustered() {
            true => Connection::Cluster(self.cluster().await?),
            false => Connection::One(self.server().await?),
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// A connection to the one server: `address`, or the master the
    /// Sentinels name (and that agrees it is the master).
    async fn server(&self) -> Result<ConnectionManager, String> {
        let address = match &self.settings.sentinel {
            Some(s) => self.master(s).await?,
            None => self.settings.address.clone(),
        };
        let s = &self.settings;
        let client = client(&s.url(&address), &s.username, &s.password)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.timeout))
            .set_response_timeout(Some(self.settings.timeout))
            .set_number_of_retries(1);
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| e.to_string())?;
        if self.settings.sentinel.is_some() {
            // a Sentinel's word may be a failover old: the server must agree
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                return Err(format!("{address} is not the master (yet)"));
            }
        }
        Ok(conn)
    }

    /// A cluster connection, the slots learnt from the first node that
    /// answers. It follows `MOVED`/`ASK` and refreshes the slot map when a
    /// node fails (a replica promoted), so it is kept across failures.
    async fn cluster(&self) -> Result<ClusterConnection, String> {
        let s = &self.settings;
        let nodes: Vec<String> = s.cluster.iter().map(|a| s.url(a)).collect();
        let mut b = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(s.timeout)
            .response_timeout(s.timeout)
            // the deadline of the whole call is `guarded`'s
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100);
        if let Some(u) = &s.username {
            b = b.username(u);
        }
        if let Some(p) = &s.password {
            b = b.password(p);
        }
        let client = b.build().map_err(|e| e.to_string())?;
        client
            .get_async_connection()
            .await
            .map_err(|e| e.to_string())
    }

    /// Run `script` with `keys` and `args`, within the deadline.
    pub async fn eval(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[u64],
    ) -> Result<Vec<i64>, String> {
        self.eval_as(script, keys, args).await
    }

    /// [`Redis::eval`] with any arguments and reply type.
    pub async fn eval_as<A: redis::ToRedisArgs, T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[A],
    ) -> Result<T, String> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        self.guarded(async {
            let mut conn = self.connection().await?;
            inv.invoke_async::<T>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// One command, within the deadline.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        self.guarded(async {
            let mut conn = self.connection().await?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// A call with the deadline, the one-second pause after a failure, the
    /// error count and the rate-limited log line.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        if self
            .down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
        {
            return Err(format!(
                "Redis at {} is unreachable",
                self.settings.describe()
            ));
        }
        let result = match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {}ms",
                self.settings.timeout.as_millis()
            )),
        };
        if let Err(why) = &result {
            ERRORS.inc();
            if self.settings.sentinel.is_some() {
                // the master may have moved: ask the Sentinels again
                *self.conn.lock().await = None;
            }
            let now = Instant::now();
            *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(now + DOWN_FOR);
            let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                *last = Some(now);
                log::warn!(
                    "shared storage: Redis at {}: {why} (logged at most once a minute)",
                    self.settings.describe()
                );
            }
        }
        result
    }
}
