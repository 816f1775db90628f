//! Live sessions, as the rest of jitgate sees them.
//!
//! Each client connection has one [`Session`]: who it is, its upstream backend,
//! and the handles through which the statement hook and the enforcer act on it
//! while it runs — a notice queue toward the client, the cancel of its running
//! statement, poisoning of its open transaction, and ending it. [`Sessions`]
//! finds them by user and database (a grant that ends must reach every session
//! of its holder).
//!
//! The relay is the only writer toward the client and the server; these handles
//! only queue work for it (notices are written at the next message boundary),
//! so nothing here can interleave bytes into the middle of a message.

use bytes::BytesMut;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use wire::backend::ErrorFields;
use wire::encoding::ClientEncoding;

const NO_POISON: u8 = 0;
const POISON_PENDING: u8 = 1;
const POISONED: u8 = 2;

/// What the statement hook remembers about a session between statements.
#[derive(Default, Clone)]
pub struct Notes {
    /// From `SET jitgate.reason = '...'`: the reason of requests this session files.
    pub reason: Option<String>,
    /// Roles whose grants let statements of the open transaction through
    /// (cleared when the session is idle outside a transaction).
    pub roles_in_transaction: BTreeSet<String>,
    /// Roles whose grants let any statement of this session through.
    pub roles_used: BTreeSet<String>,
    /// SQL-level prepared statements (`PREPARE name AS ...`) and what the hook
    /// found them to be: `EXECUTE name` is judged as that.
    pub prepared: HashMap<String, Arc<policy::classify::Action>>,
}

/// One client connection through the gateway.
const ENCODING_UTF8: u8 = 0;
const ENCODING_ASCII_SAFE: u8 = 1;
const ENCODING_UNSAFE: u8 = 2;

pub struct Session {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub login_role: String,
    /// The upstream backend's pid (what the client sees too).
    pub backend_pid: i32,
    upstream_secret: i32,
    upstream_addr: (String, u16),
    notices: mpsc::UnboundedSender<BytesMut>,
    pub notes: Mutex<Notes>,
    /// Set while the open transaction must not commit; see [`Session::poison`].
    poison: Mutex<Option<ErrorFields>>,
    /// NO_POISON, POISON_PENDING or POISONED (read on every statement).
    poison_state: AtomicU8,
    /// Last ReadyForQuery status (`I`, `T` or `E`).
    tx_status: AtomicU8,
    /// Whether the server is working on something the client sent.
    busy: AtomicBool,
    /// The session's `client_encoding` class (see `wire::encoding`), as the
    /// server last reported it.
    encoding: AtomicU8,
    /// Parameters (1-based) of the `Parse` just let through whose values the
    /// hook wants to see at each `Bind` (`set_config($1, ...)`).
    bind_check: AtomicBool,
    /// The hook let through a statement that may change how the server
    /// lexes what follows (see `policy::lexing`); the relay takes it.
    lexing_change: AtomicBool,
    /// Such a statement is still running: the statement being judged may be
    /// lexed by the server under settings the gateway does not know yet.
    lexing_unsure: AtomicBool,
    /// Whether the gateway holds a statement (waiting for a decision).
    holding: AtomicBool,
    /// Client cancel requests seen (held statements watch it).
    cancels: AtomicU64,
    cancelled: Notify,
    /// ReadyForQuery messages seen, and a wake-up when the session goes idle.
    readies: AtomicU64,
    idle: Notify,
    /// Cancelled to end the session (with `ending`'s error).
    kill: CancellationToken,
    ending: Mutex<Option<ErrorFields>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("backend_pid", &self.backend_pid)
            .finish()
    }
}

/// The receiving ends the relay owns.
pub struct SessionIo {
    pub notices: mpsc::UnboundedReceiver<BytesMut>,
}

pub struct SessionParts {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub login_role: String,
    pub backend_pid: i32,
    pub upstream_secret: i32,
    pub upstream_addr: (String, u16),
}

impl Session {
    pub fn new(p: SessionParts) -> (Arc<Session>, SessionIo) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Session {
            id: p.id,
            user: p.user,
            database: p.database,
            login_role: p.login_role,
            backend_pid: p.backend_pid,
            upstream_secret: p.upstream_secret,
            upstream_addr: p.upstream_addr,
            notices: tx,
            notes: Mutex::new(Notes::default()),
            poison: Mutex::new(None),
            poison_state: AtomicU8::new(NO_POISON),
            tx_status: AtomicU8::new(b'I'),
            busy: AtomicBool::new(false),
            encoding: AtomicU8::new(ENCODING_UTF8),
            bind_check: AtomicBool::new(false),
            lexing_change: AtomicBool::new(false),
            lexing_unsure: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            cancels: AtomicU64::new(0),
            cancelled: Notify::new(),
            readies: AtomicU64::new(0),
            idle: Notify::new(),
            kill: CancellationToken::new(),
            ending: Mutex::new(None),
        };
        (Arc::new(s), SessionIo { notices: rx })
    }

    /// Queues a NoticeResponse (give it severity WARNING or NOTICE) for the
    /// client; it is written at the next message boundary.
    pub fn notice(&self, notice: &ErrorFields) {
        let _ = self.notices.send(notice.to_bytes());
    }

    /// Asks the upstream backend to cancel what it is running (as a client
    /// CancelRequest would). Returns whether the request was sent.
    pub async fn cancel_statement(&self) -> bool {
        crate::cancel::send_cancel(&self.upstream_addr, self.backend_pid, self.upstream_secret)
            .await
    }

    /// Ends the session: the client gets `error` (FATAL) and the upstream
    /// connection is closed, never pooled, so an open transaction rolls back.
    pub fn terminate(&self, error: ErrorFields) {
        *self.ending.lock().unwrap() = Some(error);
        self.kill.cancel();
    }

    pub fn killed(&self) -> &CancellationToken {
        &self.kill
    }

    pub fn ending_error(&self) -> Option<ErrorFields> {
        self.ending.lock().unwrap().clone()
    }

    /// Refuses every statement of the open transaction except a plain ROLLBACK,
    /// so it can only roll back (whole: savepoints cannot keep part of it).
    /// Lifted by the first ReadyForQuery that reports the session outside a
    /// transaction. Idle sessions outside a transaction are not poisoned
    /// (nothing to roll back). A statement running outside a transaction block
    /// (as far as the last ReadyForQuery said) poisons only if its own
    /// ReadyForQuery reports a block: the client may send its next statement
    /// as soon as it sees the error, before that ReadyForQuery arrives, and
    /// that statement belongs to no poisoned transaction.
    pub fn poison(&self, error: ErrorFields) -> bool {
        let state = if self.tx_status.load(Relaxed) != b'I' {
            POISONED
        } else if self.busy.load(Relaxed) {
            POISON_PENDING
        } else {
            return false;
        };
        *self.poison.lock().unwrap() = Some(error);
        self.poison_state.store(state, Relaxed);
        true
    }

    pub fn is_poisoned(&self) -> bool {
        self.poison_state.load(Relaxed) == POISONED
    }

    pub fn poison_error(&self) -> Option<ErrorFields> {
        if !self.is_poisoned() {
            return None;
        }
        self.poison.lock().unwrap().clone()
    }

    pub fn in_transaction(&self) -> bool {
        self.tx_status.load(Relaxed) != b'I'
    }

    /// The hook lets the `Parse` it is judging through, but judges each
    /// `Bind` of that statement again, with its values (a bound `set_config`
    /// name; a statement allowed by a grant, which may have ended by then; an
    /// `approve_each` statement, approved with its values).
    pub fn check_binds(&self) {
        self.bind_check.store(true, Relaxed);
    }

    /// The statement being let through may change how the server lexes the
    /// session's next statements (it sets a lexical setting, or runs code
    /// the gateway cannot see into).
    pub fn mark_lexing_change(&self) {
        self.lexing_change.store(true, Relaxed);
    }

    pub(crate) fn take_lexing_change(&self) -> bool {
        self.lexing_change.swap(false, Relaxed)
    }

    /// Whether a statement that may change lexing is still running ahead of
    /// the one being judged (pipelined behind it).
    pub fn lexing_unsure(&self) -> bool {
        self.lexing_unsure.load(Relaxed)
    }

    pub(crate) fn set_lexing_unsure(&self, unsure: bool) {
        self.lexing_unsure.store(unsure, Relaxed);
    }

    /// Whether the hook asked to judge the Binds of the `Parse` just judged.
    pub(crate) fn take_bind_check(&self) -> bool {
        self.bind_check.swap(false, Relaxed)
    }

    /// How the session's text is read (the server's latest `client_encoding`).
    pub fn encoding(&self) -> ClientEncoding {
        match self.encoding.load(Relaxed) {
            ENCODING_UTF8 => ClientEncoding::Utf8,
            ENCODING_ASCII_SAFE => ClientEncoding::AsciiSafe,
            _ => ClientEncoding::Unsafe,
        }
    }

    /// The server reported a `client_encoding`.
    pub(crate) fn set_encoding(&self, name: &str) {
        let code = match ClientEncoding::of(name) {
            ClientEncoding::Utf8 => ENCODING_UTF8,
            ClientEncoding::AsciiSafe => ENCODING_ASCII_SAFE,
            ClientEncoding::Unsafe => ENCODING_UNSAFE,
        };
        self.encoding.store(code, Relaxed);
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Relaxed)
    }

    /// The relay reports each ReadyForQuery here.
    pub(crate) fn ready(&self, status: u8, busy: bool) {
        self.tx_status.store(status, Relaxed);
        self.busy.store(busy, Relaxed);
        self.readies.fetch_add(1, Relaxed);
        if !busy {
            self.idle.notify_waiters();
        }
        match (self.poison_state.load(Relaxed), status) {
            (NO_POISON, _) | (POISONED, b'T' | b'E') => {}
            (POISON_PENDING, b'T' | b'E') => self.poison_state.store(POISONED, Relaxed),
            _ => {
                // Outside a transaction now: the poisoned one is over.
                self.poison_state.store(NO_POISON, Relaxed);
                *self.poison.lock().unwrap() = None;
            }
        }
        // A statement held by the hook (written-ahead audit, a decision) is
        // not sent yet, so `busy` misses it; the roles noted for it belong to
        // the transaction it will run in, not to the one this answer closes.
        if status == b'I' && !busy && !self.holding.load(Relaxed) {
            let mut notes = self.notes.lock().unwrap();
            if !notes.roles_in_transaction.is_empty() {
                notes.roles_in_transaction.clear();
            }
        }
    }

    pub(crate) fn set_busy(&self) {
        self.busy.store(true, Relaxed);
    }

    /// Completes once the server has answered everything sent so far and at
    /// least one more ReadyForQuery has arrived (a statement allowed just now
    /// has run), or the session ended.
    pub fn idle_after_next_ready(
        self: &Arc<Self>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let seen = self.readies.load(Relaxed);
        let this = self.clone();
        async move {
            loop {
                let notified = this.idle.notified();
                if this.kill.is_cancelled()
                    || (this.readies.load(Relaxed) > seen && !this.busy.load(Relaxed))
                {
                    return;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = this.kill.cancelled() => return,
                }
            }
        }
    }

    /// A client CancelRequest arrived for this session. Returns whether to
    /// forward it upstream: not when the only thing running is a statement
    /// the gateway holds (the server would cancel whatever comes next).
    pub(crate) fn client_cancelled(&self) -> bool {
        self.cancels.fetch_add(1, Relaxed);
        self.cancelled.notify_waiters();
        !self.holding.load(Relaxed) || self.busy.load(Relaxed)
    }

    pub(crate) fn set_holding(&self, holding: bool) {
        self.holding.store(holding, Relaxed);
    }

    /// Completes when the client sends a CancelRequest after this call.
    pub fn cancel_requested(&self) -> impl std::future::Future<Output = ()> + '_ {
        let seen = self.cancels.load(Relaxed);
        async move {
            loop {
                let notified = self.cancelled.notified();
                if self.cancels.load(Relaxed) != seen {
                    return;
                }
                notified.await;
            }
        }
    }
}

/// Every live session, by id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<u64, Arc<Session>>>,
}

/// Removes the session from [`Sessions`] when dropped.
pub struct Registered<'a> {
    sessions: &'a Sessions,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.sessions.map.lock().unwrap().remove(&self.id) {
            // Whoever waits on the session (idle watchers) stops waiting.
            s.kill.cancel();
        }
    }
}

impl Sessions {
    pub fn register(&self, s: Arc<Session>) -> Registered<'_> {
        let id = s.id;
        self.map.lock().unwrap().insert(id, s);
        Registered { sessions: self, id }
    }

    /// The live sessions of `user` on `database`.
    pub fn of(&self, user: &str, database: &str) -> Vec<Arc<Session>> {
        self.map
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.user == user && s.database == database)
            .cloned()
            .collect()
    }

    pub fn by_backend_pid(&self, pid: i32) -> Option<Arc<Session>> {
        self.map
            .lock()
            .unwrap()
            .values()
            .find(|s| s.backend_pid == pid)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
