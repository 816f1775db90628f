//! Failed logins per key (a user name, a peer address) in a sliding window.
//!
//! After `limit` failures the key is throttled until `window` has passed since
//! its first failure; a success clears it. Used by the HTTP API (per user
//! name) and the wire listener (per user name and per peer address). Time is
//! an input, like everywhere in this crate.

use crate::clock::Time;
use std::collections::HashMap;
use std::sync::Mutex;

pub struct Attempts {
    limit: u32,
    window: chrono::Duration,
    by_key: Mutex<HashMap<String, (Time, u32)>>,
}

/// Bounded: a spray of names cannot grow the map without limit.
const MAX_KEYS: usize = 100_000;

impl Attempts {
    pub fn new(limit: u32, window: chrono::Duration) -> Attempts {
        Attempts {
            limit,
            window,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn throttled(&self, key: &str, now: Time) -> bool {
        let mut map = self.by_key.lock().unwrap();
        match map.get(key) {
            Some((since, _)) if now - *since >= self.window => {
                map.remove(key);
                false
            }
            Some((_, n)) => *n >= self.limit,
            None => false,
        }
    }

    /// Counts a failure; true when this failure starts the throttling.
    pub fn failed(&self, key: &str, now: Time) -> bool {
        let mut map = self.by_key.lock().unwrap();
        if map.len() > MAX_KEYS {
            let window = self.window;
            map.retain(|_, (since, _)| now - *since < window);
        }
        let entry = map.entry(key.to_string()).or_insert((now, 0));
        if now - entry.0 >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 == self.limit
    }

    pub fn succeeded(&self, key: &str) {
        self.by_key.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_the_limit_until_the_window_has_passed() {
        let t0 = chrono::DateTime::from_timestamp(1_000, 0).unwrap();
        let a = Attempts::new(3, chrono::Duration::minutes(1));
        assert!(!a.failed("alice", t0));
        assert!(!a.failed("alice", t0));
        assert!(!a.throttled("alice", t0));
        assert!(a.failed("alice", t0), "the third failure starts it");
        assert!(a.throttled("alice", t0 + chrono::Duration::seconds(59)));
        assert!(!a.throttled("bob", t0));
        assert!(!a.throttled("alice", t0 + chrono::Duration::seconds(60)));
        a.failed("bob", t0);
        a.succeeded("bob");
        assert!(!a.failed("bob", t0) && !a.failed("bob", t0));
    }
}
