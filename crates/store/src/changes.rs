//! "Something changed": the signal between the parts that change state (the
//! HTTP API, the lifecycle tick, the gateway filing requests) and the parts
//! that react (the enforcer applies grants; web pages refresh).
//!
//! Two receivers with different needs: the enforcer wants one wake-up however
//! many changes piled up (a `Notify` permit), pages want to know that the
//! version moved since they last looked (a `watch` counter).

use tokio::sync::{watch, Notify};

pub struct Changes {
    notify: Notify,
    version: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            notify: Notify::new(),
            version: watch::Sender::new(0),
        }
    }
}

impl Changes {
    /// Records a change: wakes the enforcer and moves the version.
    pub fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
        self.notify.notify_one();
    }

    /// Completes after the next change (or at once if one is pending).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
