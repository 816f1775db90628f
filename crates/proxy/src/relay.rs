//! The relay: bytes between a client and its upstream connection, in both
//! directions at once, inside one task.
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

    /// Checks one inspected message; returns its replacement if refused.
    // The frontend loop's state passes through here; making the relay a
    // sans-I/O state machine (one type owning these) is the way out.
    #[allow(clippy::too_many_arguments)]
    async fn inspect(
        &self,
        tag: u8,
        body: &[u8],
        p: &Progress,
        syncs: u64,
        skipping: &mut bool,
        pending: &mut Pending<'_, '_>,
        bind_checks: &mut HashMap<Vec<u8>, String>,
    ) -> Result<Option<BytesMut>, ErrorFields> {
        let mut out = BytesMut::new();
        match tag {
            tag::QUERY => {
                let encoding = self.session.encoding();
                let bytes = frontend::query_bytes(body).map_err(violation)?;
                let Some(text) = encoding.decode(bytes) else {
                    let marker = self.refusal(p, encoding.unreadable(bytes), syncs);
                    frontend::write_query(&mut out, &format!("EXECUTE {marker}"));
                    return Ok(Some(out));
                };
                let mut count = 0;
                for (offset, stmt) in split::statements(&text) {
                    count += 1;
                    if let Verdict::Refuse(mut err) =
                        self.ask(Statement::Simple(stmt), pending).await
                    {
                        // Positions count from the start of the whole Query.
                        if let Some(p) = err.position.as_mut() {
                            *p += text[..offset].chars().count() as u32;
                        }
                        // PostgreSQL runs a Query as one implicit
                        // transaction: all of it or none. None of it is sent.
                        let marker = self.refusal(p, err, syncs);
                        frontend::write_query(&mut out, &format!("EXECUTE {marker}"));
                        return Ok(Some(out));
                    }
                }
                if p.reruns && count != 1 {
                    // Another statement of it might commit: never run twice.
                    p.rerun.lock().unwrap().spoil();
                }
            }
            tag::PARSE => {
                let encoding = self.session.encoding();
                let parse = frontend::parse(body).map_err(violation)?;
                let name = parse.statement;
                let verdict = match encoding.decode(parse.query) {
                    Some(text) => self.ask(Statement::Parse(&text), pending).await,
                    None => Verdict::Refuse(encoding.unreadable(parse.query)),
                };
                // The hook may want to judge this statement's Binds.
                match (&verdict, self.session.take_bind_check()) {
                    (Verdict::Allow, true) => {
                        let text = encoding.decode(parse.query).unwrap_or_default();
                        bind_checks.insert(name.to_vec(), text.into_owned());
                    }
                    _ if !bind_checks.is_empty() => {
                        bind_checks.remove(name);
                    }
                    _ => {}
                }
                if let Verdict::Refuse(err) = verdict {
                    return Ok(Some(self.refuse_extended(p, err, syncs, skipping)));
                }
            }
            tag::BIND => {
                let bind = frontend::bind(body).map_err(violation)?;
                let Some(text) = bind_checks.get(bind.statement) else {
                    return Ok(None);
                };
                let encoding = self.session.encoding();
                let decoded: Vec<Option<std::borrow::Cow<'_, str>>> = bind
                    .params
                    .iter()
                    .map(|v| match v {
                        frontend::Value::Text(b) => encoding.decode(b),
                        _ => None,
                    })
                    .collect();
                let values: Vec<Bound<'_>> = bind
                    .params
                    .iter()
                    .zip(&decoded)
                    .map(|(v, d)| match (v, d) {
                        (_, Some(t)) => Bound::Text(t),
                        (frontend::Value::Null, None) => Bound::Null,
                        (frontend::Value::Text(b) | frontend::Value::Binary(b), None) => {
                            Bound::Bytes(b)
                        }
                    })
                    .collect();
                let statement = Statement::Bind {
                    text,
                    values: &values,
                };
                if let Verdict::Refuse(err) = self.ask(statement, pending).await {
                    return Ok(Some(self.refuse_extended(p, err, syncs, skipping)));
                }
            }
            _ => {
                let call = frontend::function_call(body).map_err(violation)?;
                let statement = Statement::FunctionCall(call.oid, &call.args);
                if let Verdict::Refuse(err) = self.ask(statement, pending).await {
                    let marker = self.refusal(p, err, syncs);
                    frontend::write_query(&mut out, &format!("EXECUTE {marker}"));
                    return Ok(Some(out));
                }
            }
        }
        Ok(None)
    }

    /// The replacement of a refused extended-protocol message: a Describe the
    /// server fails on, after which it (and we) skip to Sync.
    fn refuse_extended(
        &self,
        p: &Progress,
        err: ErrorFields,
        syncs: u64,
        skipping: &mut bool,
    ) -> BytesMut {
        let mut out = BytesMut::new();
        let marker = self.refusal(p, err, syncs + 1);
        frontend::write_describe_statement(&mut out, &marker);
        *skipping = true;
        out
    }

    /// Client → server. `Ok(())` when the client left (Terminate or EOF).
    async fn frontend(
        &self,
        mut client: ReadHalf<'_>,
        mut server: WriteHalf<'_>,
        p: &Progress,
    ) -> Result<(), Ending> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = BytesMut::new();
        // Bytes the client sent while a statement was held.
        let mut later = BytesMut::new();
        let mut passthrough = 0usize;
        // After a refused Parse the server discards everything up to Sync;
        // so do we (nothing is shown to the hook that the server won't run).
        let mut skipping = false;
        // Whether the rest of a partly received message is dropped (skipping).
        let mut discarding = false;
        let mut syncs = 0u64;
        // Prepared statements whose Binds the hook checks (by name; `""` is
        // the unnamed one). Empty for nearly every session: Binds stream.
        let mut bind_checks: HashMap<Vec<u8>, String> = HashMap::new();
        loop {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            let mid_message = passthrough > 0 || !buf.is_empty();
            let read = if p.reruns {
                tokio::select! {
                    _ = p.wake.notified() => {
                        self.resend(&mut server, p, &mut syncs).await?;
                        continue;
                    }
                    r = self.read_client(&mut client, &mut buf, mid_message) => r?,
                }
            } else {
                self.read_client(&mut client, &mut buf, mid_message).await?
            };
            match read {
                // Gone between messages: the server is in a clean state.
                Ok(0) if passthrough == 0 && buf.is_empty() => return Ok(()),
                // Gone mid-message: part of it may be upstream already.
                Ok(0) => {
                    return Err(Ending::ClientIo(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "client closed the connection in the middle of a message",
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(Ending::ClientIo(e)),
            }
            if p.reruns {
                self.while_held(&mut client, &mut buf, &mut server, p, &mut syncs)
                    .await?;
            }
            let (mut pos, mut start) = (0usize, 0usize);
            let mut rewritten = false;
            let mut terminated = false;
            if passthrough > 0 {
                pos = passthrough.min(buf.len());
                passthrough -= pos;
                if discarding {
                    start = pos;
                    rewritten = true;
                }
            }
            while pos < buf.len() {
                let h = match Header::parse(&buf[pos..], self.limits.max_message_bytes) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => return Err(Ending::ClientViolation(violation(e))),
                };
                let end = pos + h.frame_len();
                if !FRONTEND_TAGS.contains(&h.tag) {
                    return Err(Ending::ClientViolation(ErrorFields::fatal(
                        "08P01",
                        format!("invalid frontend message type {:?}", h.tag as char),
                    )));
                }
                if p.reruns {
                    let idle = !skipping
                        && syncs == p.ready_seen.load(Relaxed)
                        && p.last_status.load(Relaxed) == b'I';
                    let frame = (end <= buf.len()).then(|| &buf[pos..end]);
                    p.rerun
                        .lock()
                        .unwrap()
                        .client_message(h.tag, frame, idle, syncs);
                }
                if !skipping && (h.tag == tag::BIND || h.tag == tag::EXECUTE) {
                    // While the transaction is poisoned, a statement prepared
                    // earlier must not commit it either: refuse, skip to Sync.
                    if let Some(err) = self.session.poison_error() {
                        if p.reruns {
                            p.rerun.lock().unwrap().spoil();
                        }
                        out.extend_from_slice(&buf[start..pos]);
                        let r = self.refuse_extended(p, err, syncs, &mut skipping);
                        out.extend_from_slice(&r);
                        start = pos;
                        rewritten = true;
                    }
                }
                if skipping && h.tag != tag::SYNC && h.tag != tag::TERMINATE {
                    // The server ignores everything up to Sync after an error;
                    // drop it here, so nothing the hook has not seen is sent.
                    out.extend_from_slice(&buf[start..pos]);
                    rewritten = true;
                    if end <= buf.len() {
                        pos = end;
                    } else {
                        passthrough = end - buf.len();
                        discarding = true;
                        pos = buf.len();
                    }
                    start = pos;
                    continue;
                }
                let inspected = matches!(h.tag, tag::QUERY | tag::PARSE | tag::FUNCTION_CALL)
                    || (h.tag == tag::BIND && !bind_checks.is_empty());
                match h.tag {
                    _ if inspected => {
                        if h.tag != tag::BIND && h.body_len > self.limits.max_query_bytes {
                            return Err(Ending::ClientViolation(ErrorFields::fatal(
                                "54000",
                                format!(
                                    "statement of {} bytes exceeds max_query_bytes ({})",
                                    h.body_len, self.limits.max_query_bytes
                                ),
                            )));
                        }
                        if end > buf.len() {
                            buf.reserve(end - buf.len());
                            break;
                        }
                        let syncs_before = syncs;
                        if h.tag == tag::QUERY || h.tag == tag::FUNCTION_CALL {
                            syncs += 1;
                        }
                        let body = &buf[pos + Header::SIZE..end];
                        // Behind a statement that may change lexing: the
                        // hook reads this one knowing it.
                        self.session.set_lexing_unsure(
                            p.ready_seen.load(Relaxed) < p.lexing_until.load(Relaxed),
                        );
                        let mut pending = Pending {
                            server: &mut server,
                            client: &mut client,
                            later: &mut later,
                            client_gone: false,
                            out: &mut out,
                            before: &buf[start..pos],
                            progress: p,
                            session: self.session,
                            syncs_before,
                            flushed: false,
                            error: None,
                        };
                        let replacement = self
                            .inspect(
                                h.tag,
                                body,
                                p,
                                syncs,
                                &mut skipping,
                                &mut pending,
                                &mut bind_checks,
                            )
                            .await
                            .map_err(Ending::ClientViolation)?;
                        if self.session.take_lexing_change() {
                            // Answered at this message's sync point (a
                            // Parse's is the next Sync).
                            let until = if h.tag == tag::PARSE {
                                syncs + 1
                            } else {
                                syncs
                            };
                            p.lexing_until.fetch_max(until, Relaxed);
                        }
                        let (flushed, error) = (pending.flushed, pending.error.take());
                        if let Some(e) = error {
                            return Err(Ending::ServerIo(e));
                        }
                        if pending.client_gone {
                            // Never run a held statement for a client that left.
                            return Err(Ending::ClientIo(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "client left while its statement was held",
                            )));
                        }
                        // What the client sent while we waited comes after
                        // everything already in the buffer.
                        if !later.is_empty() {
                            buf.extend_from_slice(&later);
                            later.clear();
                        }
                        if flushed {
                            start = pos;
                            rewritten = true;
                        }
                        if let Some(r) = replacement {
                            if p.reruns {
                                p.rerun.lock().unwrap().spoil();
                            }
                            out.extend_from_slice(&buf[start..pos]);
                            out.extend_from_slice(&r);
                            start = end;
                            rewritten = true;
                        }
                        pos = end;
                        continue;
                    }
                    tag::SYNC => {
                        syncs += 1;
                        skipping = false;
                    }
                    tag::TERMINATE => {
                        terminated = true;
                        break;
                    }
                    // Bind, Close, CopyData, CopyDone, CopyFail, Describe,
                    // Execute, Flush: streamed through.
                    _ => {}
                }
                if end <= buf.len() {
                    pos = end;
                } else {
                    passthrough = end - buf.len();
                    discarding = false;
                    pos = buf.len();
                }
            }
            p.sync_points_sent.store(syncs, Relaxed);
            if syncs > p.ready_seen.load(Relaxed) {
                self.session.set_busy();
            }
            let write = if rewritten {
                out.extend_from_slice(&buf[start..pos]);
                let r = server.write_all(&out).await;
                out.clear();
                r
            } else if pos > 0 {
                server.write_all(&buf[..pos]).await
            } else {
                Ok(())
            };
            write.map_err(Ending::ServerIo)?;
            buf.advance(pos);
            if terminated {
                return Ok(());
            }
        }
    }

    /// One read from the client; a message left half-sent is bounded by
    /// `message_timeout`.
    async fn read_client(
        &self,
        client: &mut ReadHalf<'_>,
        buf: &mut BytesMut,
        mid_message: bool,
    ) -> Result<std::io::Result<usize>, Ending> {
        if !mid_message {
            return Ok(client.read_buf(buf).await);
        }
        tokio::time::timeout(self.limits.message_timeout, client.read_buf(buf))
            .await
            .map_err(|_| {
                Ending::ClientViolation(ErrorFields::fatal(
                    "08P01",
                    format!(
                        "client stopped sending in the middle of a message for {:?}",
                        self.limits.message_timeout
                    ),
                ))
            })
    }

    /// While the server side holds a refused statement, what the client sends
    /// next waits (read ahead, to notice the client leaving).
    async fn while_held(
        &self,
        client: &mut ReadHalf<'_>,
        buf: &mut BytesMut,
        server: &mut WriteHalf<'_>,
        p: &Progress,
        syncs: &mut u64,
    ) -> Result<(), Ending> {
        while p.held.load(Relaxed) {
            tokio::select! {
                _ = p.wake.notified() => {}
                r = client.read_buf(buf), if buf.len() < HELD_READ_AHEAD => match r {
                    Ok(0) | Err(_) => {
                        return Err(Ending::ClientIo(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "client left while its statement was held",
                        )))
                    }
                    Ok(_) => {}
                },
            }
        }
        if buf.first() == Some(&tag::TERMINATE) {
            // The client said goodbye while its statement was held: it must
            // not run for nobody.
            p.resend.lock().unwrap().take();
            return Ok(());
        }
        self.resend(server, p, syncs).await
    }

    /// Sends again a statement the server side released (see `rerun.rs`);
    /// that side already counted its sync point.
    async fn resend(
        &self,
        server: &mut WriteHalf<'_>,
        p: &Progress,
        syncs: &mut u64,
    ) -> Result<(), Ending> {
        let Some(segment) = p.resend.lock().unwrap().take() else {
            return Ok(());
        };
        *syncs += 1;
        self.session.set_busy();
        server.write_all(&segment).await.map_err(Ending::ServerIo)
    }

    async fn backend(
        &self,
        mut server: ReadHalf<'_>,
        mut client: WriteHalf<'_>,
        mut io: SessionIo,
        p: &Progress,
    ) -> Ending {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = BytesMut::new();
        let mut passthrough = 0usize;
        let mut notices_open = true;
        loop {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            // Notices from the gateway go out only between whole server
            // messages; read_buf is cancel-safe, so losing the race loses nothing.
            let at_boundary = buf.is_empty() && passthrough == 0;
            let read = tokio::select! {
                biased;
                r = server.read_buf(&mut buf) => r,
                n = io.notices.recv(), if at_boundary && notices_open => {
                    match n {
                        Some(notice) => {
                            if let Err(e) = client.write_all(&notice).await {
                                return Ending::ClientIo(e);
                            }
                        }
                        None => notices_open = false,
                    }
                    continue;
                }
            };
            match read {
                Ok(0) => {
                    return Ending::ServerClosed {
                        said_fatal: p.server_fatal.load(Relaxed),
                    }
                }
                Ok(_) => {}
                Err(e) => return Ending::ServerIo(e),
            }
            p.backend_clean.store(false, Relaxed);
            let (mut pos, mut start) = (0usize, 0usize);
            let mut rewritten = false;
            if passthrough > 0 {
                pos = passthrough.min(buf.len());
                passthrough -= pos;
            }
            while pos < buf.len() {
                let h = match Header::parse(&buf[pos..], SERVER_MESSAGE_LIMIT) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => {
                        return Ending::ServerIo(std::io::Error::other(format!(
                            "invalid message from the database: {e}"
                        )))
                    }
                };
                let end = pos + h.frame_len();
                if p.reruns
                    && p.rerun
                        .lock()
                        .unwrap()
                        .answering(p.ready_seen.load(Relaxed))
                {
                    // The answer to a statement that may run again: looked
                    // at whole, perhaps held back (see `rerun.rs`).
                    if end > buf.len() && h.frame_len() <= INSPECT_ERROR_LIMIT {
                        buf.reserve(end - buf.len());
                        break;
                    }
                    let whole = (end <= buf.len()).then(|| &buf[pos..end]);
                    let step = {
                        let body = whole.map(|f| &f[Header::SIZE..]);
                        let denied = body
                            .filter(|b| h.tag == tag::ERROR_RESPONSE && b.starts_with(b"SERROR\0"))
                            .and_then(|b| error_code_and_message(b).ok())
                            .filter(|(code, _)| *code == "42501")
                            .map(|(_, m)| m);
                        let status = match (h.tag, body) {
                            (tag::READY_FOR_QUERY, Some(b)) => b.first().copied().unwrap_or(0),
                            _ => 0,
                        };
                        p.rerun.lock().unwrap().server_message(
                            h.tag,
                            whole,
                            p.ready_seen.load(Relaxed),
                            denied,
                            status,
                        )
                    };
                    match step {
                        ServerStep::HoldBack => {
                            if h.tag == tag::PARAMETER_STATUS {
                                if let Some(ending) =
                                    self.parameter_status(&buf[pos + Header::SIZE..end])
                                {
                                    return ending;
                                }
                            }
                            out.extend_from_slice(&buf[start..pos]);
                            start = end;
                            pos = end;
                            rewritten = true;
                            continue;
                        }
                        ServerStep::Forward => {
                            let held = p.rerun.lock().unwrap().release();
                            if !held.is_empty() {
                                out.extend_from_slice(&buf[start..pos]);
                                out.extend_from_slice(&held);
                                start = pos;
                                rewritten = true;
                            }
                        }
                        ServerStep::Decide => {
                            if let Err(e) = send_now(&mut out, &buf[start..pos], &mut client).await
                            {
                                return Ending::ClientIo(e);
                            }
                            start = pos;
                            rewritten = true;
                            match self.decide(p, &mut io, &mut client).await {
                                Err(ending) => return ending,
                                // Held back, and the hook's error: before
                                // the ReadyForQuery, handled below.
                                Ok(Some(before_ready)) => out.extend_from_slice(&before_ready),
                                // Sent again: this ReadyForQuery is dropped.
                                Ok(None) => {
                                    self.ready(p, b'I');
                                    start = end;
                                    pos = end;
                                    continue;
                                }
                            }
                        }
                    }
                }
                let inspect = match h.tag {
                    tag::READY_FOR_QUERY | tag::PARAMETER_STATUS => true,
                    tag::ERROR_RESPONSE => h.body_len <= INSPECT_ERROR_LIMIT,
                    _ => false,
                };
                if inspect {
                    if end > buf.len() {
                        break;
                    }
                    let body = &buf[pos + Header::SIZE..end];
                    if h.tag == tag::READY_FOR_QUERY {
                        self.ready(p, body.first().copied().unwrap_or(b'I'));
                    } else if h.tag == tag::PARAMETER_STATUS {
                        if let Some(ending) = self.parameter_status(body) {
                            return ending;
                        }
                    } else if let Some(replacement) = self.server_error(p, body) {
                        out.extend_from_slice(&buf[start..pos]);
                        out.extend_from_slice(&replacement);
                        start = end;
                        rewritten = true;
                    } else if let Some(explain) = self.denied(body) {
                        // What precedes goes out now; the error waits for
                        // the hook's look (bounded), then comes in its place.
                        if let Err(e) = send_now(&mut out, &buf[start..pos], &mut client).await {
                            return Ending::ClientIo(e);
                        }
                        start = pos;
                        rewritten = true;
                        if let Ok(Some(Explained::Refuse(own))) =
                            tokio::time::timeout(EXPLAIN_WAIT, explain).await
                        {
                            own.write(&mut out);
                            start = end;
                        }
                    }
                }
                if end <= buf.len() {
                    pos = end;
                } else {
                    passthrough = end - buf.len();
                    pos = buf.len();
                }
            }
            let write = if rewritten {
                out.extend_from_slice(&buf[start..pos]);
                let r = client.write_all(&out).await;
                out.clear();
                r
            } else if pos > 0 {
                client.write_all(&buf[..pos]).await
            } else {
                Ok(())
            };
            if let Err(e) = write {
                return Ending::ClientIo(e);
            }
            buf.advance(pos);
            p.backend_clean
                .store(buf.is_empty() && passthrough == 0, Relaxed);
        }
    }

    fn ready(&self, p: &Progress, status: u8) {
        let seen = p.ready_seen.fetch_add(1, Relaxed) + 1;
        p.last_status.store(status, Relaxed);
        self.session
            .ready(status, p.sync_points_sent.load(Relaxed) > seen);
        if p.has_refusals.load(Relaxed) {
            let mut list = p.refusals.lock().unwrap();
            list.retain(|r| r.until > seen);
            p.has_refusals.store(!list.is_empty(), Relaxed);
        }
    }

    /// A setting the server reports: the encoding texts are read in; a
    /// setting under which no outside parser reads statements as the server
    /// does ends the session (it was set outside the gateway).
    fn parameter_status(&self, body: &[u8]) -> Option<Ending> {
        let (name, value) = backend::parameter_status(body).ok()?;
        let unreadable = match name {
            "client_encoding" => {
                self.session.set_encoding(value);
                ClientEncoding::of(value) == ClientEncoding::Unsafe
            }
            "standard_conforming_strings" => !policy::lexing::standard_strings_on(value),
            _ => false,
        };
        if !unreadable {
            return None;
        }
        self.hook.unreadable_session(self.session, name, value);
        Some(Ending::Terminated(unreadable_error(name, value)))
    }

    /// A `42501` from the server for a statement the hook let through: the
    /// hook's look at it, if it wants one.
    fn denied(&self, body: &[u8]) -> Option<crate::hook::ExplainFuture> {
        if !body.starts_with(b"SERROR\0") {
            return None;
        }
        let (code, message) = error_code_and_message(body).ok()?;
        if code != "42501" {
            return None;
        }
        let denied = Denied {
            message,
            statement: None,
            rerunnable: false,
        };
        self.hook.explain_denied(self.session, denied)
    }

    /// A statement PostgreSQL refused, which may run again: the hook's
    /// answer, awaited for as long as it holds the statement (the client's
    /// next messages wait meanwhile; the gateway's notices go out). `None`:
    /// sent again; else what goes to the client before the ReadyForQuery.
    async fn decide(
        &self,
        p: &Progress,
        io: &mut SessionIo,
        client: &mut WriteHalf<'_>,
    ) -> Result<Option<BytesMut>, Ending> {
        let (message, statement) = {
            let r = p.rerun.lock().unwrap();
            let (m, text) = r.to_decide().expect("a segment to decide has its error");
            let text = text.and_then(|t| self.session.encoding().decode(t).map(|c| c.into_owned()));
            (m.to_string(), text)
        };
        let denied = Denied {
            message: &message,
            statement: statement.as_deref(),
            rerunnable: true,
        };
        let outcome = match self.hook.explain_denied(self.session, denied) {
            None => None,
            Some(f) => {
                p.held.store(true, Relaxed);
                self.session.set_holding(true);
                let o = with_notices(f, io, client).await;
                self.session.set_holding(false);
                p.held.store(false, Relaxed);
                o?
            }
        };
        // The client side goes on (and sends the statement again, if so).
        p.wake.notify_one();
        let mut rerun = p.rerun.lock().unwrap();
        Ok(match outcome {
            Some(Explained::RunAgain) => {
                p.sync_points_sent.fetch_add(1, Relaxed);
                *p.resend.lock().unwrap() = Some(rerun.decided(true));
                None
            }
            Some(Explained::Refuse(err)) => {
                let mut before_ready = rerun.decided(false);
                err.write(&mut before_ready);
                Some(before_ready)
            }
            None => Some(rerun.release()),
        })
    }

    /// Notes FATALs; returns the hook's error if this is a refusal's marker error.
    fn server_error(&self, p: &Progress, body: &[u8]) -> Option<BytesMut> {
        if body.starts_with(b"SFATAL\0") || body.starts_with(b"SPANIC\0") {
            p.server_fatal.store(true, Relaxed);
        }
        if !p.has_refusals.load(Relaxed) {
            return None;
        }
        let (code, message) = error_code_and_message(body).ok()?;
        if code != "26000" || !message.contains(MARKER_PREFIX) {
            return None;
        }
        let mut list = p.refusals.lock().unwrap();
        let i = list.iter().position(|r| message.contains(&r.marker))?;
        let refusal = list.remove(i);
        p.has_refusals.store(!list.is_empty(), Relaxed);
        Some(refusal.error)
    }
}

/// Sends what was gathered and what precedes the message being looked at,
/// before an answer that may take a while.
async fn send_now(
    out: &mut BytesMut,
    before: &[u8],
    client: &mut WriteHalf<'_>,
) -> std::io::Result<()> {
    out.extend_from_slice(before);
    let r = client.write_all(out).await;
    out.clear();
    r
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

/// Awaits `f` while the session's notices (the gateway's own, such as "holding
/// this statement") go to the client.
async fn with_notices<T>(
    f: impl std::future::Future<Output = T>,
    io: &mut SessionIo,
    client: &mut WriteHalf<'_>,
) -> Result<T, Ending> {
    tokio::pin!(f);
    loop {
        tokio::select! {
            o = &mut f => return Ok(o),
            n = io.notices.recv() => match n {
                Some(notice) => client.write_all(&notice).await.map_err(Ending::ClientIo)?,
                None => return Ok(f.await),
            },
        }
    }
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

/// How long a server's permission error waits for the hook's explanation.
const EXPLAIN_WAIT: Duration = Duration::from_secs(3);

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
