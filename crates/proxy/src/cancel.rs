//! Query cancellation. Clients get the real backend pid (drivers compare it with
//! `pg_backend_pid()` and NOTIFY's pid) and a secret only the gateway knows; a
//! CancelRequest carrying both is forwarded with the upstream's own secret.

use crate::sessions::Session;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
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
    /// Registers a session and returns the key to show the client.
    pub fn register(
        self: &Arc<Self>,
        pid: i32,
        upstream_secret: i32,
        addr: (String, u16),
        session: Option<&Arc<Session>>,
    ) -> Registration {
        let mut map = self.map.lock().unwrap();
        let secret = loop {
            let s: i32 = rand::random();
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
    let packet = wire::startup::encode_cancel(pid, secret);
    match TcpStream::connect((addr.0.as_str(), addr.1)).await {
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
