//! Query cancellation. Clients get the real backend pid (drivers compare it with
//! `pg_backend_pid()` and NOTIFY's pid) and a secret only the gateway knows; a
//! CancelRequest carrying both is forwarded with the upstream's own secret.
//!
//! Replicas behind a load balancer: a cancel request opens a new connection,
//! which may reach another replica than the session's. A replica in a cluster
//! puts its index (1..=255) in the top byte of the secrets it hands out; a
//! request whose key is not its own and whose top byte names another replica
//! is passed to that replica's listener ([`Peers`]), which handles it as its
//! own (its index matches, so nothing is passed on twice). The price: 24
//! random bits of secret instead of 32 (see SECURITY.md).

use crate::sessions::Session;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Clone)]
struct Target {
    addr: (String, u16),
    upstream_secret: i32,
    /// Told about the cancel too: a statement the gateway holds is not upstream yet.
    session: Option<Weak<Session>>,
}

#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), Target>>,
    peers: OnceLock<Arc<dyn Peers>>,
}

/// The other replicas of a cluster.
pub trait Peers: Send + Sync {
    /// This replica's index; 0 when alone.
    fn index(&self) -> u8;
    /// Where replica `index`'s listener is, if it is alive.
    fn address(&self, index: u8) -> Option<String>;
}

fn replica_of(secret: i32) -> u8 {
    (secret as u32 >> 24) as u8
}

/// Removes the session's key when the session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    key: (i32, i32),
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.lock().unwrap().remove(&self.key);
    }
}

impl Registration {
    pub fn secret(&self) -> i32 {
        self.key.1
    }
}

impl CancelRegistry {
    /// Joins a cluster: keys carry this replica's index from now on.
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    fn index(&self) -> u8 {
        self.peers.get().map_or(0, |p| p.index())
    }

    /// Registers a session and returns the key to show the client.
    pub fn register(
        self: &Arc<Self>,
        pid: i32,
        upstream_secret: i32,
        addr: (String, u16),
        session: Option<&Arc<Session>>,
    ) -> Registration {
        let index = self.index();
        let mut map = self.map.lock().unwrap();
        let secret = loop {
            let s: i32 = match index {
                0 => rand::random(),
                i => ((u32::from(i) << 24) | (rand::random::<u32>() >> 8)) as i32,
            };
            if !map.contains_key(&(pid, s)) {
                break s;
            }
        };
        map.insert(
            (pid, secret),
            Target {
                addr,
                upstream_secret,
                session: session.map(Arc::downgrade),
            },
        );
        Registration {
            registry: self.clone(),
            key: (pid, secret),
        }
    }

    /// Forwards a client's CancelRequest. Unknown keys are ignored silently, as
    /// PostgreSQL does (the client learns nothing either way).
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let target = self.map.lock().unwrap().get(&(pid, secret)).cloned();
        let Some(t) = target else {
            let owner = replica_of(secret);
            let own = self.index();
            if own != 0 && owner != own {
                if let Some(addr) = self.peers.get().and_then(|p| p.address(owner)) {
                    tracing::debug!(
                        pid,
                        replica = owner,
                        "cancel request passed to the replica that issued the key"
                    );
                    return send_to(&addr, pid, secret).await;
                }
            }
            tracing::debug!(pid, "cancel request with an unknown key ignored");
            return false;
        };
        if let Some(session) = t.session.as_ref().and_then(Weak::upgrade) {
            if !session.client_cancelled() {
                return true;
            }
        }
        send_cancel(&t.addr, pid, t.upstream_secret).await
    }
}

/// Sends a CancelRequest for backend `pid` to the server at `addr`.
pub async fn send_cancel(addr: &(String, u16), pid: i32, secret: i32) -> bool {
    send_to(&format!("{}:{}", addr.0, addr.1), pid, secret).await
}

/// Sends a CancelRequest to `addr` (`host:port`, a server or a replica).
async fn send_to(addr: &str, pid: i32, secret: i32) -> bool {
    let packet = wire::startup::encode_cancel(pid, secret);
    match TcpStream::connect(addr).await {
        Ok(mut s) => {
            let _ = s.write_all(&packet).await;
            let _ = s.shutdown().await;
            true
        }
        Err(e) => {
            tracing::warn!(pid, error = %e, "could not send cancel request");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Three;
    impl Peers for Three {
        fn index(&self) -> u8 {
            3
        }
        fn address(&self, _: u8) -> Option<String> {
            None
        }
    }

    #[test]
    fn keys_carry_the_replica_index_only_in_a_cluster() {
        let alone = Arc::new(CancelRegistry::default());
        let tops: std::collections::HashSet<u8> = (0..64)
            .map(|_| replica_of(alone.register(1, 1, ("h".into(), 1), None).secret()))
            .collect();
        assert!(tops.len() > 8, "32 random bits when alone");
        let r = Arc::new(CancelRegistry::default());
        r.set_peers(Arc::new(Three));
        for _ in 0..64 {
            assert_eq!(
                replica_of(r.register(1, 1, ("h".into(), 1), None).secret()),
                3
            );
        }
    }
}
