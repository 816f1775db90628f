//! Running a statement again once PostgreSQL's refusal has been lifted
//! (`hold` mode): the bookkeeping, without I/O.
//!
//! When the database refuses a statement for lack of a privilege (42501) that
//! a managed role would give, `hold` mode files the request, waits for its
//! decision and, once approved, runs the statement again in the same call, so
//! the client sees one statement that succeeded. That is only sound when the
//! failed attempt left nothing behind and the client has seen nothing of it:
//!
//! - the client sent one *segment* while the connection was idle outside a
//!   transaction block: a simple `Query` holding one statement, or
//!   `Parse`(unnamed)/`Bind`/`Describe`/`Execute`(one)/`Sync` — nothing that
//!   creates or closes a named object, no `Flush`, nothing after it;
//! - PostgreSQL answered it with the permission error and `ReadyForQuery`
//!   saying idle (the implicit transaction rolled back);
//! - everything the server sent before the error was held back from the
//!   client (parse/bind completions, descriptions, notices, parameter
//!   statuses): once a row or a completion has gone out, nothing is re-run.
//!
//! [`Rerun`] follows both directions: the relay reports each client message
//! and each server message, and moves bytes where it says.

use bytes::BytesMut;
use wire::tag;

/// At most this much of a segment is kept to be sent again.
const MAX_SEGMENT: usize = 64 * 1024;
/// At most this much of the server's answer is held back from the client.
const MAX_HELD: usize = 64 * 1024;

#[derive(Debug, Default)]
enum State {
    /// Nothing recorded; the next segment may be.
    #[default]
    Idle,
    Recording {
        executes: u8,
    },
    /// The segment is complete and was sent; it ends at this ReadyForQuery.
    Sent {
        sync: u64,
    },
    /// Not re-runnable; recording starts again when the connection is idle.
    Spoiled,
}

/// What the relay does with a server message.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerStep {
    /// Forward it (after whatever is held back, via [`Rerun::release`]).
    Forward,
    /// Keep it back from the client for now.
    HoldBack,
    /// This ReadyForQuery ends a segment PostgreSQL refused outside a
    /// transaction block: ask the hook; it may be run again.
    Decide,
}

#[derive(Debug, Default)]
pub struct Rerun {
    state: State,
    /// The segment's bytes as the client sent them.
    segment: BytesMut,
    /// Offset and length of the statement text inside `segment`.
    text: Option<(usize, usize)>,
    /// The server's answer so far, held back from the client.
    held: BytesMut,
    /// The permission error's message, once it came.
    denied: Option<String>,
    /// The client's current segment has not reached its sync point yet.
    open: bool,
}

impl Rerun {
    /// A client message, whole (`frame`) or not; `idle`: no sync point
    /// outstanding and outside a transaction block (true all through a
    /// segment until its Sync); `syncs` counts sync points sent before it.
    pub fn client_message(&mut self, tag: u8, frame: Option<&[u8]>, idle: bool, syncs: u64) {
        if idle && !self.open {
            // Everything before was answered: whatever state it left is over.
            self.segment.clear();
            self.held.clear();
            self.text = None;
            self.denied = None;
            self.state = State::Recording { executes: 0 };
        }
        // Sync, a Query, a FunctionCall and the end of a COPY from the client
        // close what the server answers with one ReadyForQuery.
        self.open = !matches!(
            tag,
            tag::SYNC | tag::QUERY | tag::FUNCTION_CALL | b'c' | b'f'
        );
        let State::Recording { executes } = &mut self.state else {
            self.spoil();
            return;
        };
        let Some(frame) = frame.filter(|f| self.segment.len() + f.len() <= MAX_SEGMENT) else {
            self.spoil();
            return;
        };
        let body = &frame[wire::Header::SIZE..];
        let text = |bytes: &[u8]| {
            // `bytes` is a subslice of `body`: its place inside the frame.
            let at = bytes.as_ptr() as usize - frame.as_ptr() as usize;
            (at, bytes.len())
        };
        let first = self.segment.is_empty();
        let mut ends = false;
        match tag {
            tag::QUERY if first => match wire::frontend::query_bytes(body) {
                Ok(q) => {
                    self.text = Some(text(q));
                    ends = true;
                }
                Err(_) => return self.spoil(),
            },
            tag::PARSE => match wire::frontend::parse(body) {
                Ok(p) if p.statement.is_empty() && self.text.is_none() => {
                    let (at, len) = text(p.query);
                    self.text = Some((self.segment.len() + at, len));
                }
                _ => return self.spoil(),
            },
            tag::BIND | tag::DESCRIBE => {}
            tag::EXECUTE if *executes == 0 => *executes = 1,
            tag::SYNC => ends = true,
            _ => return self.spoil(),
        }
        self.segment.extend_from_slice(frame);
        if ends {
            self.state = State::Sent { sync: syncs + 1 };
        }
    }

    /// The segment can no longer be run again (a message was replaced, more
    /// than one statement, ...).
    pub fn spoil(&mut self) {
        self.state = State::Spoiled;
        self.segment.clear();
        self.text = None;
    }

    /// Whether the server's messages now answer the recorded segment
    /// (`ready_seen` ReadyForQuery messages so far).
    pub fn answering(&self, ready_seen: u64) -> bool {
        matches!(self.state, State::Sent { sync } if sync == ready_seen + 1)
    }

    /// A server message (`frame` when whole); `denied` is the message of a
    /// 42501 error, `status` that of a ReadyForQuery.
    pub fn server_message(
        &mut self,
        tag: u8,
        frame: Option<&[u8]>,
        ready_seen: u64,
        denied: Option<&str>,
        status: u8,
    ) -> ServerStep {
        if !self.answering(ready_seen) {
            return ServerStep::Forward;
        }
        if tag == tag::READY_FOR_QUERY {
            if self.denied.is_some() && status == b'I' {
                return ServerStep::Decide;
            }
            self.state = State::Idle;
            return ServerStep::Forward;
        }
        let holdable = matches!(tag, b'1' | b'2' | b't' | b'T' | b'n' | b'N' | b'S')
            || (tag == tag::ERROR_RESPONSE && denied.is_some());
        match frame {
            Some(f)
                if holdable && self.denied.is_none() && self.held.len() + f.len() <= MAX_HELD =>
            {
                self.held.extend_from_slice(f);
                if let Some(m) = denied {
                    self.denied = Some(m.to_string());
                }
                ServerStep::HoldBack
            }
            _ => {
                self.state = State::Spoiled;
                self.segment.clear();
                ServerStep::Forward
            }
        }
    }

    /// What was held back, to go to the client before the current message
    /// (empty when nothing was).
    pub fn release(&mut self) -> BytesMut {
        self.denied = None;
        self.held.split()
    }

    /// The permission error of a segment to decide, and the statement's text
    /// (as the client encoded it).
    pub fn to_decide(&self) -> Option<(&str, Option<&[u8]>)> {
        let message = self.denied.as_deref()?;
        let text = self.text.map(|(at, len)| &self.segment[at..at + len]);
        Some((message, text))
    }

    /// The decision: the segment to send again (dropping what was held back
    /// and the ReadyForQuery), or, when refused, the held-back messages
    /// without the error, which the relay replaces.
    pub fn decided(&mut self, run_again: bool) -> BytesMut {
        self.state = State::Idle;
        self.denied = None;
        self.text = None;
        if run_again {
            self.held.clear();
            self.segment.split()
        } else {
            self.segment.clear();
            let mut held = self.held.split();
            // The error is the last held message.
            if let Some(at) = last_frame_start(&held) {
                held.truncate(at);
            }
            held
        }
    }
}

/// Where the last of a run of whole messages begins.
fn last_frame_start(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    let mut last = None;
    while let Ok(Some(h)) = wire::Header::parse(&buf[pos..], usize::MAX) {
        last = Some(pos);
        pos += h.frame_len();
        if pos >= buf.len() {
            break;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::frontend;

    fn frame(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut b = BytesMut::new();
        f(&mut b);
        b
    }

    fn server(tag: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[tag]);
        b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn a_lone_query_refused_outside_a_block_is_run_again() {
        let mut r = Rerun::default();
        let q = frame(|b| frontend::write_query(b, "SELECT bump(5)"));
        r.client_message(tag::QUERY, Some(&q), true, 0);
        let t = server(b'T', b"row description");
        let n = server(b'N', b"notice");
        let e = server(b'E', b"SERROR\0C42501\0");
        assert_eq!(
            r.server_message(b'T', Some(&t), 0, None, 0),
            ServerStep::HoldBack
        );
        assert_eq!(
            r.server_message(b'N', Some(&n), 0, None, 0),
            ServerStep::HoldBack
        );
        let denied = "permission denied for table orders";
        assert_eq!(
            r.server_message(b'E', Some(&e), 0, Some(denied), 0),
            ServerStep::HoldBack
        );
        assert_eq!(
            r.server_message(b'Z', None, 0, None, b'I'),
            ServerStep::Decide
        );
        let (m, text) = r.to_decide().unwrap();
        assert_eq!(m, denied);
        assert_eq!(text, Some(&b"SELECT bump(5)"[..]));
        assert_eq!(&r.decided(true)[..], &q[..]);
        // The next statement is recorded afresh.
        r.client_message(tag::QUERY, Some(&q), true, 1);
        assert!(r.answering(1));
    }

    #[test]
    fn an_extended_segment_is_kept_whole() {
        let mut r = Rerun::default();
        let parse = server(b'P', b"\0SELECT bump($1)\0\0\0");
        let bind = server(b'B', b"\0\0\0\0\0\0\0\0\0\0");
        let exec = server(b'E', b"\0\0\0\0\0");
        let sync = server(b'S', b"");
        // Idle throughout: no sync point goes out before the Sync.
        for (t, f) in [(b'P', &parse), (b'B', &bind), (b'E', &exec), (b'S', &sync)] {
            r.client_message(t, Some(f), true, 0);
        }
        assert!(r.answering(0));
        let e = server(b'E', b"SERROR\0C42501\0");
        r.server_message(b'E', Some(&e), 0, Some("permission denied"), 0);
        assert_eq!(
            r.server_message(b'Z', None, 0, None, b'I'),
            ServerStep::Decide
        );
        assert_eq!(r.to_decide().unwrap().1, Some(&b"SELECT bump($1)"[..]));
        let again = r.decided(true);
        assert_eq!(
            again.len(),
            parse.len() + bind.len() + exec.len() + sync.len()
        );
    }

    #[test]
    fn refused_the_held_back_messages_go_out_without_the_error() {
        let mut r = Rerun::default();
        let q = frame(|b| frontend::write_query(b, "SELECT bump(5)"));
        r.client_message(tag::QUERY, Some(&q), true, 0);
        let t = server(b'T', b"rows");
        let e = server(b'E', b"SERROR\0C42501\0");
        r.server_message(b'T', Some(&t), 0, None, 0);
        r.server_message(b'E', Some(&e), 0, Some("permission denied"), 0);
        assert_eq!(
            r.server_message(b'Z', None, 0, None, b'I'),
            ServerStep::Decide
        );
        assert_eq!(&r.decided(false)[..], &t[..]);
    }

    #[test]
    fn inside_a_transaction_block_or_after_rows_nothing_is_run_again() {
        let mut r = Rerun::default();
        let q = frame(|b| frontend::write_query(b, "SELECT bump(5)"));
        r.client_message(tag::QUERY, Some(&q), true, 0);
        let e = server(b'E', b"SERROR\0C42501\0");
        r.server_message(b'E', Some(&e), 0, Some("permission denied"), 0);
        // 'E': the failed statement was in a block the client opened.
        assert_eq!(
            r.server_message(b'Z', None, 0, None, b'E'),
            ServerStep::Forward
        );
        assert_eq!(&r.release()[..], &e[..]);

        let mut r = Rerun::default();
        r.client_message(tag::QUERY, Some(&q), true, 0);
        let d = server(b'D', b"a row");
        assert_eq!(
            r.server_message(b'D', Some(&d), 0, None, 0),
            ServerStep::Forward
        );
        assert_eq!(
            r.server_message(b'E', Some(&e), 0, Some("permission denied"), 0),
            ServerStep::Forward
        );
    }

    #[test]
    fn segments_that_cannot_be_sent_again_are_not_recorded() {
        let named = frame(|b| {
            b.extend_from_slice(b"P");
            b.extend_from_slice(&(4u32 + 3 + 9 + 2).to_be_bytes());
            b.extend_from_slice(b"s1\0SELECT 1\0\0\0");
        });
        let q = frame(|b| frontend::write_query(b, "SELECT 1"));
        let sync = server(b'S', b"");
        let flush = server(b'H', b"");
        let exec = server(b'E', b"\0\0\0\0\0");
        for (tags, frames) in [
            // A named statement would exist already the second time.
            (
                vec![tag::PARSE, tag::SYNC],
                vec![named.clone(), sync.clone()],
            ),
            // The client wants answers before Sync.
            (vec![tag::EXECUTE, b'H'], vec![exec.clone(), flush]),
            // Two statements run, one might commit.
            (
                vec![tag::EXECUTE, tag::EXECUTE, tag::SYNC],
                vec![exec.clone(), exec.clone(), sync.clone()],
            ),
        ] {
            let mut r = Rerun::default();
            for (t, f) in tags.iter().zip(&frames) {
                r.client_message(*t, Some(f), true, 0);
            }
            assert!(!r.answering(0), "{tags:?}");
        }
        // Not idle when it began, or more sent after it.
        let mut r = Rerun::default();
        r.client_message(tag::QUERY, Some(&q), false, 0);
        assert!(!r.answering(0));
        let mut r = Rerun::default();
        r.client_message(tag::QUERY, Some(&q), true, 0);
        r.client_message(tag::QUERY, Some(&q), false, 1);
        assert!(!r.answering(0));
        // A spoiled segment's answer goes out as it comes; idle again after.
        assert_eq!(
            r.server_message(b'Z', None, 1, None, b'I'),
            ServerStep::Forward
        );
        r.client_message(tag::QUERY, Some(&q), true, 2);
        assert!(r.answering(2));
    }
}
