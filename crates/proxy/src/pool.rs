//! Session-mode pool of upstream connections.
//!
//! A connection belongs to one client from connect to disconnect; afterwards it
//! is reset with `DISCARD ALL` and kept for the next client with the same key:
//! the same database, the same login role, and the same startup parameters
//! (those become the connection's defaults, which `DISCARD ALL` restores, so a
//! connection is only reused where it is indistinguishable from a new one).

use crate::upstream::{read_frame, ServerConn};
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PoolKey {
    pub database: String,
    pub login_role: String,
    /// Startup parameters passed upstream, in the client's order.
    pub params: Vec<(String, String)>,
}

pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<ServerConn>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently used live connection for `key`, if any. Connections
    /// that the server closed (or wrote to) while idle are dropped.
    pub async fn take(&self, key: &PoolKey) -> Option<ServerConn> {
        loop {
            let conn = {
                let mut idle = self.idle.lock().unwrap();
                idle.get_mut(key)?.pop()?
            };
            if conn.idle_since.elapsed() < self.idle_timeout && conn.stream.is_quiet().await {
                return Some(conn);
            }
            conn.close().await;
        }
    }

    /// Resets `conn` and keeps it, or drops it if the reset fails.
    pub async fn put(&self, key: PoolKey, mut conn: ServerConn) {
        if self.max_idle == 0 || reset(&mut conn).await.is_err() {
            return conn.close().await;
        }
        conn.idle_since = Instant::now();
        let surplus = {
            let mut idle = self.idle.lock().unwrap();
            let list = idle.entry(key).or_default();
            if list.len() < self.max_idle {
                list.push(conn);
                None
            } else {
                Some(conn)
            }
        };
        if let Some(conn) = surplus {
            conn.close().await;
        }
    }

    /// Closes connections idle for longer than the timeout.
    pub async fn reap(&self) {
        let expired: Vec<ServerConn> = {
            let mut idle = self.idle.lock().unwrap();
            let mut expired = Vec::new();
            for list in idle.values_mut() {
                let (old, fresh) = std::mem::take(list)
                    .into_iter()
                    .partition(|c| c.idle_since.elapsed() >= self.idle_timeout);
                *list = fresh;
                expired.extend::<Vec<ServerConn>>(old);
            }
            idle.retain(|_, l| !l.is_empty());
            expired
        };
        for conn in expired {
            conn.close().await;
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().values().map(Vec::len).sum()
    }

    /// Drops every idle connection (e.g. after the upstream restarted).
    pub fn clear(&self) {
        self.idle.lock().unwrap().clear();
    }
}

/// `DISCARD ALL`, then wait for an idle ReadyForQuery. Any error, a non-idle
/// status, or a slow server means the connection is not reused.
async fn reset(conn: &mut ServerConn) -> Result<(), ()> {
    let work = async {
        let mut q = BytesMut::new();
        wire::frontend::write_query(&mut q, "DISCARD ALL");
        conn.stream.write_all(&q).await.map_err(|_| ())?;
        let mut buf = BytesMut::new();
        let mut failed = false;
        loop {
            match read_frame(&mut conn.stream, &mut buf)
                .await
                .map_err(|_| ())?
            {
                (b'E', _) => failed = true,
                (b'Z', status) => {
                    return if !failed && status.first() == Some(&b'I') && buf.is_empty() {
                        Ok(())
                    } else {
                        Err(())
                    }
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| ())?
}
