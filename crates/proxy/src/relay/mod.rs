//! The relay: bytes between a client and its upstream connection, in both
//! directions at once, inside one task. `client.rs` is the client → server
//! direction, `server.rs` the server → client one; this file holds what they
//! share.
//!
//! The two directions run as two futures joined by `select!` (not two tasks):
//! each can block on its own write without stopping the other from reading, so
//! large pipelines or COPY in one direction never deadlock against results
//! flowing the other way, and they share state without cross-task messaging.
//!
//! Client → server: messages are framed (header only) and forwarded as raw
//! bytes, a whole read's worth at once. `Query`, `Parse` and `FunctionCall` are
//! buffered whole (up to `max_query_bytes`) and shown to the statement hook;
//! other messages stream through without being buffered, whatever their size.
//!
//! Server → client: raw bytes, forwarded as soon as they arrive (never held back
//! for later work, so NOTIFY reaches an idle client at once). Only
//! `ReadyForQuery` (to know when the connection is idle) and `ErrorResponse`
//! (see below) are looked at.
//!
//! Refusals: the relay replaces a refused message with one that makes the
//! server itself fail at the same point — `Describe` of a statement named
//! `jitgate_refused_<random>` for a `Parse`, `EXECUTE jitgate_refused_<random>`
//! in place of a simple `Query` with a refused statement (none of its
//! statements is sent: PostgreSQL runs a Query all or nothing). The server's "does not exist" error
//! then arrives in order, aborts the transaction exactly as a real error would,
//! and in a pipeline everything up to `Sync` is skipped (the relay drops those
//! messages itself, so nothing the hook has not seen is sent). The server →
//! client side swaps that error for the hook's error on its way out. No
//! statement text the hook refused ever reaches the server.

use crate::hook::{Bound, Check, Denied, Explained, Statement, StatementHook, Verdict};
use crate::rerun::{Rerun, ServerStep};
use crate::sessions::{Session, SessionIo};
use crate::split;
use crate::stream::{ReadHalf, Stream, WriteHalf};
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use wire::backend::{self, error_code_and_message, ErrorFields};
use wire::encoding::ClientEncoding;
use wire::{frontend, tag, Header, WireError};

mod client;
mod frames;
mod server;

const MARKER_PREFIX: &str = "jitgate_refused_";
/// Server messages are trusted up to PostgreSQL's own 1 GB limit.
const SERVER_MESSAGE_LIMIT: usize = (1 << 30) + 1024;
/// An ErrorResponse larger than this is relayed without being examined.
const INSPECT_ERROR_LIMIT: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// Every message a protocol 3.0 client may send after startup. Anything else is
/// refused: a message the gateway does not know could carry a statement.
const FRONTEND_TAGS: &[u8] = b"BCdcfDEHQPFSX";

pub struct Limits {
    pub max_query_bytes: usize,
    pub max_message_bytes: usize,
    pub message_timeout: Duration,
}

/// How a relay ended; the session decides what to tell whom.
#[derive(Debug)]
pub enum Ending {
    /// The client sent Terminate or closed its socket. `reusable` when the
    /// server answered everything, is idle outside a transaction, and no
    /// partial message is in flight.
    ClientLeft {
        reusable: bool,
    },
    /// The server closed the connection; `said_fatal` when its FATAL was relayed.
    ServerClosed {
        said_fatal: bool,
    },
    /// The client broke the protocol; send it this and close.
    ClientViolation(ErrorFields),
    ClientIo(std::io::Error),
    ServerIo(std::io::Error),
    /// The gateway is shutting down and the session's grace time is over.
    Shutdown,
    /// The enforcer ended the session (a grant ended with `on_expiry = terminate`).
    Terminated(ErrorFields),
}

/// State shared by the two directions (same task; atomics only to stay `Send`).
#[derive(Default)]
struct Progress {
    sync_points_sent: AtomicU64,
    ready_seen: AtomicU64,
    last_status: AtomicU8,
    backend_clean: AtomicBool,
    server_fatal: AtomicBool,
    has_refusals: AtomicBool,
    refusals: Mutex<Vec<Refusal>>,
    /// Whether statements are kept to be run again (see `rerun.rs`).
    reruns: bool,
    rerun: Mutex<Rerun>,
    /// A refused statement is held: the client's next messages wait.
    held: AtomicBool,
    /// Set when a held statement is to be sent again; `wake` tells the
    /// client → server side, which owns the server's write half.
    resend: Mutex<Option<BytesMut>>,
    wake: tokio::sync::Notify,
    /// A statement that may change how the server lexes later ones is
    /// answered at this ReadyForQuery (see `Session::mark_lexing_change`).
    lexing_until: AtomicU64,
    /// The client → server side waits for the client's next message with
    /// nothing of a message read: a point where the session may end (drain).
    between_messages: AtomicBool,
}

struct Refusal {
    marker: String,
    error: BytesMut,
    /// The refusal's error comes before ReadyForQuery number `until`.
    until: u64,
}

pub struct Relay<'a> {
    pub session: &'a Arc<Session>,
    pub hook: &'a dyn StatementHook,
    pub limits: &'a Limits,
    /// Cancelled when the gateway drains: the session ends at its next
    /// transaction boundary (see [`Relay::drain_point`]).
    pub draining: &'a CancellationToken,
}

fn violation(e: WireError) -> ErrorFields {
    ErrorFields::fatal("08P01", format!("invalid frontend message: {e}"))
}

impl Relay<'_> {
    pub async fn run(
        &self,
        client: &mut Stream,
        server: &mut Stream,
        io: SessionIo,
        stop: &CancellationToken,
    ) -> Ending {
        let progress = Progress {
            last_status: AtomicU8::new(b'I'),
            backend_clean: AtomicBool::new(true),
            reruns: self.hook.runs_again(self.session),
            ..Progress::default()
        };
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let ending = tokio::select! {
            r = self.frontend(cr, sw, &progress) => match r {
                Ok(()) => Ending::ClientLeft { reusable: false },
                Err(e) => e,
            },
            r = self.backend(sr, cw, io, &progress) => r,
            _ = stop.cancelled() => Ending::Shutdown,
            _ = self.drain_point(&progress) => Ending::Shutdown,
            _ = self.session.killed().cancelled() => Ending::Terminated(
                self.session.ending_error().unwrap_or_else(|| {
                    ErrorFields::fatal("57P01", "terminating connection: ended by jitgate")
                }),
            ),
        };
        match ending {
            Ending::ClientLeft { .. } => Ending::ClientLeft {
                reusable: progress.sync_points_sent.load(Relaxed)
                    == progress.ready_seen.load(Relaxed)
                    && progress.last_status.load(Relaxed) == b'I'
                    && progress.backend_clean.load(Relaxed),
            },
            other => other,
        }
    }

    /// Completes once the gateway drains and the session is between
    /// transactions: every sync point answered, the last ReadyForQuery idle,
    /// nothing running or held, and the client → server side waiting for a
    /// new message with nothing of one read. So no statement is cut off: the
    /// next one goes to a replica that is not stopping. (Awaited once per
    /// session, beside the two directions: the statement path pays one
    /// atomic store per read.)
    async fn drain_point(&self, p: &Progress) {
        self.draining.cancelled().await;
        loop {
            let settled = p.between_messages.load(Relaxed)
                && p.sync_points_sent.load(Relaxed) == p.ready_seen.load(Relaxed)
                && p.last_status.load(Relaxed) == b'I'
                && !p.held.load(Relaxed)
                && !self.session.is_busy();
            if settled {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn refusal(&self, p: &Progress, error: ErrorFields, until: u64) -> String {
        let marker = format!("{MARKER_PREFIX}{:032x}", rand::random::<u128>());
        p.refusals.lock().unwrap().push(Refusal {
            marker: marker.clone(),
            error: error.to_bytes(),
            until,
        });
        p.has_refusals.store(true, Relaxed);
        marker
    }

    /// Asks the hook about one statement, awaiting a deferred answer. Before
    /// the first wait, `pending` (what precedes this message) is sent, so
    /// earlier statements of a pipeline run while this one is held.
    async fn ask(&self, statement: Statement<'_>, pending: &mut Pending<'_, '_>) -> Verdict {
        if let Some(err) = self.session.poison_error() {
            if !statement.text().is_some_and(is_plain_rollback) {
                return Verdict::Refuse(err);
            }
        }
        match self.hook.check(self.session, statement) {
            Check::Allow => Verdict::Allow,
            Check::Refuse(e) => Verdict::Refuse(e),
            Check::Wait(f) => {
                pending.flush().await;
                pending.await_watching_client(f).await
            }
        }
    }
}

/// The FATAL for a session the server put under settings the gateway cannot
/// read statements under.
pub fn unreadable_error(setting: &str, value: &str) -> ErrorFields {
    ErrorFields::fatal(
        "0A000",
        format!(
            "jitgate ends this session: the database set {setting} = {value}, under which the \
             gateway cannot read statements as PostgreSQL will (set outside the gateway: a role \
             or database default, or a function)"
        ),
    )
    .with_hint("remove the setting (ALTER ROLE/DATABASE ... RESET), then reconnect")
}

/// Bytes of the current read that precede the message being inspected; sent
/// before the hook's answer is awaited (see [`Relay::ask`]).
struct Pending<'w, 'b> {
    server: &'w mut WriteHalf<'b>,
    client: &'w mut ReadHalf<'b>,
    later: &'w mut BytesMut,
    client_gone: bool,
    out: &'w mut BytesMut,
    before: &'w [u8],
    progress: &'w Progress,
    session: &'w Session,
    syncs_before: u64,
    flushed: bool,
    error: Option<std::io::Error>,
}

/// While a statement is held, at most this much of what the client sends
/// next is read ahead (to notice it leaving); beyond it, reading pauses.
const HELD_READ_AHEAD: usize = 1 << 20;

impl Pending<'_, '_> {
    /// Awaits a deferred verdict while watching the client: if it leaves, the
    /// statement must not run later for nobody.
    async fn await_watching_client(&mut self, f: crate::hook::VerdictFuture) -> Verdict {
        self.session.set_holding(true);
        let v = self.watch(f).await;
        self.session.set_holding(false);
        v
    }

    async fn watch(&mut self, f: crate::hook::VerdictFuture) -> Verdict {
        tokio::pin!(f);
        loop {
            if self.later.len() >= HELD_READ_AHEAD {
                return f.await;
            }
            if self.later.capacity() - self.later.len() < 1024 {
                self.later.reserve(READ_CHUNK);
            }
            tokio::select! {
                v = &mut f => return v,
                r = self.client.read_buf(self.later) => match r {
                    Ok(0) | Err(_) => {
                        self.client_gone = true;
                        return Verdict::Refuse(ErrorFields::error("08006", "client left"));
                    }
                    Ok(_) => {}
                },
            }
        }
    }

    async fn flush(&mut self) {
        if self.flushed {
            return;
        }
        self.flushed = true;
        self.progress
            .sync_points_sent
            .store(self.syncs_before, Relaxed);
        if self.syncs_before > self.progress.ready_seen.load(Relaxed) {
            self.session.set_busy();
        }
        self.out.extend_from_slice(self.before);
        if let Err(e) = self.server.write_all(self.out).await {
            self.error = Some(e);
        }
        self.out.clear();
    }
}

/// `ROLLBACK` or `ABORT` (optionally `WORK`/`TRANSACTION`, a `;`), and nothing
/// else: the one statement a poisoned transaction may still run.
pub fn is_plain_rollback(text: &str) -> bool {
    let words: Vec<String> = text
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        words.as_slice(),
        ["rollback" | "abort"] | ["rollback" | "abort", "work" | "transaction"]
    )
}
