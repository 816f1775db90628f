//! Classification results by query text, bounded.
//!
//! Applications send the same few texts over and over (prepared statements,
//! ORM queries), so after warm-up the hot path is one hash lookup instead of a
//! parse. The bound is kept with two generations: when the young one is full
//! it becomes the old one and the previous old one is dropped; a hit in the old
//! generation moves the entry back to the young one. That keeps the working set
//! and needs no per-entry bookkeeping (written here because it is twenty lines;
//! an LRU crate would add a dependency for no gain in behaviour).

use policy::classify::{Action, ClassifyError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub type Classified = Arc<Result<Action, ClassifyError>>;

pub struct Cache {
    capacity: usize,
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<Box<str>, Classified>,
    old: HashMap<Box<str>, Classified>,
}

/// Texts longer than this are classified every time (not kept).
const MAX_CACHED_TEXT: usize = 16 * 1024;

impl Cache {
    /// Holds between `capacity` and `2 * capacity` texts.
    pub fn new(capacity: usize) -> Cache {
        Cache {
            capacity: capacity.max(1),
            inner: Mutex::new(Generations::default()),
        }
    }

    pub fn get_or(&self, text: &str, classify: impl FnOnce(&str) -> Classified) -> Classified {
        {
            let mut g = self.inner.lock().unwrap();
            if let Some(hit) = g.young.get(text) {
                return hit.clone();
            }
            if let Some((k, v)) = g.old.remove_entry(text) {
                self.insert(&mut g, k, v.clone());
                return v;
            }
        }
        // Parse outside the lock: other sessions keep hitting the cache.
        let value = classify(text);
        if text.len() <= MAX_CACHED_TEXT {
            let mut g = self.inner.lock().unwrap();
            self.insert(&mut g, text.into(), value.clone());
        }
        value
    }

    fn insert(&self, g: &mut Generations, key: Box<str>, value: Classified) {
        if g.young.len() >= self.capacity {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(key, value);
    }

    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap();
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn bounded_and_keeps_what_is_used() {
        let cache = Cache::new(2);
        let parses = Cell::new(0);
        let get = |t: &str| {
            cache.get_or(t, |t| {
                parses.set(parses.get() + 1);
                Arc::new(policy::classify::classify(t))
            })
        };
        get("SELECT 1");
        get("SELECT 2");
        get("SELECT 1");
        assert_eq!(parses.get(), 2);
        for i in 3..50 {
            get(&format!("SELECT {i}"));
            get("SELECT 1"); // stays warm
        }
        assert!(cache.len() <= 4, "{}", cache.len());
        let before = parses.get();
        get("SELECT 1");
        assert_eq!(parses.get(), before);
        get("SELECT 3");
        assert_eq!(parses.get(), before + 1, "evicted long ago");
    }
}
