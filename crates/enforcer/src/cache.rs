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

/// The cache key of `text`: every numeric literal replaced by `0`.
///
/// Applications that send literals inline (`WHERE id = 12345`, pgbench's
/// simple mode) would otherwise miss the cache on every statement. No
/// classification depends on a number's value (kinds, objects, functions,
/// identity changes and settings are words and strings, which stay as they
/// are), so the masked text classifies exactly as the original. The scan is
/// deliberately narrow: anything it does not fully understand — comments,
/// backslashes, dollar quoting, prefixed strings (`E''`, `U&''`), numbers
/// glued to letters (`1e5`, `0x1F`, `1_000`) — gives `None`, and the text is
/// classified as it is.
pub fn mask_numbers(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if !b.iter().any(u8::is_ascii_digit) {
        return None; // the common case of prepared texts: nothing to mask, no allocation
    }
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let mut out = Vec::with_capacity(b.len());
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                if c == b'\'' && i > 0 && (ident(b[i - 1]) || b[i - 1] == b'&') {
                    return None; // E'...', B'...', U&'...': other escaping rules
                }
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => return None,
                        Some(&q) if q == c => {
                            if b.get(i + 1) == Some(&c) {
                                i += 2;
                                continue;
                            }
                            i += 1;
                            break;
                        }
                        Some(b'\\') => return None,
                        Some(_) => i += 1,
                    }
                }
                out.extend_from_slice(&b[start..i]);
            }
            b'\\' => return None,
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            b'$' => {
                // $1 (a parameter) is fine; $tag$ quoting is not scanned.
                if !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    return None;
                }
                out.push(c);
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    out.push(b[i]);
                    i += 1;
                }
            }
            b'0'..=b'9' if out.last().is_some_and(|&p| ident(p)) => {
                out.push(c);
                i += 1;
            }
            b'0'..=b'9' => {
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if b.get(i).is_some_and(|&n| ident(n)) {
                    return None;
                }
                out.push(b'0');
                changed = true;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if !changed {
        return None;
    }
    String::from_utf8(out).ok()
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

#[cfg(test)]
mod masking {
    use super::mask_numbers;
    use policy::classify::classify;

    #[test]
    fn numbers_are_masked_where_certain() {
        for (text, want) in [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;",
                Some("SELECT abalance FROM pgbench_accounts WHERE aid = 0;"),
            ),
            (
                "UPDATE t1 SET v = -1.5 WHERE id = $1",
                Some("UPDATE t1 SET v = -0.0 WHERE id = $1"),
            ),
            (
                "SELECT 'a1 2' , \"c 3\" FROM x2 LIMIT 10",
                Some("SELECT 'a1 2' , \"c 3\" FROM x2 LIMIT 0"),
            ),
            ("SELECT 'it''s 5', 6", Some("SELECT 'it''s 5', 0")),
            ("SELECT t.col2 FROM t", None),
            ("SELECT 1e5", None),
            ("SELECT 0x1F", None),
            ("SELECT 1_000", None),
            ("SELECT E'\\x', 1", None),
            ("SELECT U&'d', 1", None),
            ("SELECT 1 -- 2", None),
            ("SELECT /* 1 */ 2", None),
            ("DO $$ BEGIN PERFORM 1; END $$", None),
            ("SELECT 'unterminated 1", None),
        ] {
            assert_eq!(mask_numbers(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn masked_text_classifies_like_the_original() {
        for text in [
            "SELECT set_config('role', 'x', false), 1",
            "SELECT set_config('work_mem', '64MB', false), 2",
            "SELECT pg_cancel_backend(4242)",
            "DELETE FROM public.orders WHERE id = 17",
            "WITH d AS (DELETE FROM orders WHERE id = 3 RETURNING *) SELECT * FROM d LIMIT 5",
            "SELECT pg_read_file('/etc/passwd', 0, 100)",
            "SET statement_timeout = 5000",
        ] {
            let masked = mask_numbers(text).expect(text);
            assert_eq!(classify(&masked), classify(text), "{text}");
        }
    }
}
