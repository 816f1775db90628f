//! The client → server framing, sans I/O: where each message of a read
//! starts and ends, which bytes go upstream unchanged, which are replaced,
//! dropped or held for the hook, and how many sync points were sent. It reads
//! the buffer and is told what was decided; it decides nothing, reads and
//! writes nothing (`client.rs` does, and asks the hook).
//!
//! One read's bytes are walked once: `pos` is the next message, `start` the
//! first byte not yet copied to `out`. While nothing was replaced, `out`
//! stays empty and the read goes upstream as it came (`buf[..pos]`); after a
//! replacement, `out` collects what goes instead.

use super::{violation, FRONTEND_TAGS};
use bytes::BytesMut;
use std::collections::HashMap;
use wire::backend::ErrorFields;
use wire::{tag, Header};

#[derive(Default)]
pub(super) struct Frames {
    /// What goes upstream instead of the read, once something was replaced.
    pub out: BytesMut,
    /// Bytes of a message begun in an earlier read still to come through.
    passthrough: usize,
    /// After a refused message the server discards everything up to Sync;
    /// so do we (nothing is shown to the hook that the server won't run).
    pub skipping: bool,
    /// Whether the rest of a partly received message is dropped (skipping).
    discarding: bool,
    /// Sync points (Sync, Query, FunctionCall) sent upstream so far.
    pub syncs: u64,
    /// Prepared statements whose Binds the hook checks (by name; `""` is
    /// the unnamed one). Empty for nearly every session: Binds stream.
    pub bind_checks: HashMap<Vec<u8>, String>,
    /// This read: the next message, and the first byte not yet in `out`.
    pub pos: usize,
    pub start: usize,
    rewritten: bool,
}

/// What to do with the message at `pos`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// Dropped (the server would skip it): go on.
    Skipped,
    /// Whole in the buffer: ask the hook about `buf[pos + 5..end]`. A Query
    /// or FunctionCall is a sync point: counted already, `syncs_before` is
    /// the count without it.
    Inspect { end: usize, syncs_before: u64 },
    /// To be inspected but not whole yet: read more first.
    Incomplete,
    /// Sent as it is (streamed when it continues in later reads).
    Stream,
    /// The client says goodbye: send what came before, then end.
    Terminate,
}

impl Frames {
    /// A new read of `len` bytes begins (with what an earlier read left
    /// unconsumed): first the rest of a message already being streamed.
    pub fn begin(&mut self, len: usize) {
        (self.pos, self.start, self.rewritten) = (0, 0, false);
        if self.passthrough > 0 {
            self.pos = self.passthrough.min(len);
            self.passthrough -= self.pos;
            if self.discarding {
                self.start = self.pos;
                self.rewritten = true;
            }
        }
    }

    /// Whether a message is partly through (its rest still to come).
    pub fn mid_message(&self) -> bool {
        self.passthrough > 0
    }

    /// The header of the message at `pos`, if the buffer holds it.
    pub fn header(
        &self,
        buf: &[u8],
        max_message_bytes: usize,
    ) -> Result<Option<Header>, ErrorFields> {
        if self.pos >= buf.len() {
            return Ok(None);
        }
        let h = match Header::parse(&buf[self.pos..], max_message_bytes) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(e) => return Err(violation(e)),
        };
        if !FRONTEND_TAGS.contains(&h.tag) {
            return Err(ErrorFields::fatal(
                "08P01",
                format!("invalid frontend message type {:?}", h.tag as char),
            ));
        }
        Ok(Some(h))
    }

    /// The whole frame at `pos`, if it is in the buffer.
    pub fn frame<'b>(&self, buf: &'b [u8], h: &Header) -> Option<&'b [u8]> {
        let end = self.pos + h.frame_len();
        (end <= buf.len()).then(|| &buf[self.pos..end])
    }

    /// Where `h` goes. `max_query_bytes` bounds what is buffered for the hook.
    pub fn route(
        &mut self,
        buf: &[u8],
        h: &Header,
        max_query_bytes: usize,
    ) -> Result<Route, ErrorFields> {
        let end = self.pos + h.frame_len();
        if self.skipping && h.tag != tag::SYNC && h.tag != tag::TERMINATE {
            // The server ignores everything up to Sync after an error; drop
            // it here, so nothing the hook has not seen is sent.
            self.out.extend_from_slice(&buf[self.start..self.pos]);
            self.rewritten = true;
            self.pos = if end <= buf.len() {
                end
            } else {
                self.passthrough = end - buf.len();
                self.discarding = true;
                buf.len()
            };
            self.start = self.pos;
            return Ok(Route::Skipped);
        }
        let inspected = matches!(h.tag, tag::QUERY | tag::PARSE | tag::FUNCTION_CALL)
            || (h.tag == tag::BIND && !self.bind_checks.is_empty());
        if inspected {
            if h.tag != tag::BIND && h.body_len > max_query_bytes {
                return Err(ErrorFields::fatal(
                    "54000",
                    format!(
                        "statement of {} bytes exceeds max_query_bytes ({max_query_bytes})",
                        h.body_len
                    ),
                ));
            }
            if end > buf.len() {
                return Ok(Route::Incomplete);
            }
            let syncs_before = self.syncs;
            if h.tag == tag::QUERY || h.tag == tag::FUNCTION_CALL {
                self.syncs += 1;
            }
            return Ok(Route::Inspect { end, syncs_before });
        }
        match h.tag {
            tag::SYNC => {
                self.syncs += 1;
                self.skipping = false;
            }
            tag::TERMINATE => return Ok(Route::Terminate),
            // Bind, Close, CopyData, CopyDone, CopyFail, Describe, Execute,
            // Flush: streamed through.
            _ => {}
        }
        self.pos = if end <= buf.len() {
            end
        } else {
            self.passthrough = end - buf.len();
            self.discarding = false;
            buf.len()
        };
        Ok(Route::Stream)
    }

    /// In place of the message at `pos` (a refusal the server fails on),
    /// `replacement` goes; the message itself is then skipped to Sync.
    pub fn refuse_at(&mut self, buf: &[u8], replacement: &[u8]) {
        self.out.extend_from_slice(&buf[self.start..self.pos]);
        self.out.extend_from_slice(replacement);
        self.start = self.pos;
        self.rewritten = true;
    }

    /// After the hook's answer on the message ending at `end`: everything
    /// before it was already sent (`flushed`, while the answer was awaited),
    /// and `replacement` goes instead of it if it was refused.
    pub fn inspected(&mut self, buf: &[u8], end: usize, flushed: bool, replacement: Option<&[u8]>) {
        if flushed {
            self.start = self.pos;
            self.rewritten = true;
        }
        if let Some(r) = replacement {
            self.out.extend_from_slice(&buf[self.start..self.pos]);
            self.out.extend_from_slice(r);
            self.start = end;
            self.rewritten = true;
        }
        self.pos = end;
    }

    /// What goes upstream for this read (call once, after the walk).
    pub fn upstream<'a>(&'a mut self, buf: &'a [u8]) -> &'a [u8] {
        if self.rewritten {
            self.out.extend_from_slice(&buf[self.start..self.pos]);
            &self.out
        } else {
            &buf[..self.pos]
        }
    }

    /// The bytes of the read that were dealt with; `out` is emptied.
    pub fn consumed(&mut self) -> usize {
        self.out.clear();
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Walks one read, refusing every Parse; returns (upstream, routes).
    fn walk(f: &mut Frames, buf: &[u8]) -> (Vec<u8>, Vec<Route>) {
        f.begin(buf.len());
        let mut routes = Vec::new();
        while let Some(h) = f.header(buf, 1 << 20).unwrap() {
            let r = f.route(buf, &h, 1 << 20).unwrap();
            match r {
                Route::Inspect { end, .. } if h.tag == tag::PARSE => {
                    f.inspected(buf, end, false, Some(b"REFUSED"));
                    f.skipping = true;
                }
                Route::Inspect { end, .. } => f.inspected(buf, end, false, None),
                Route::Incomplete | Route::Terminate => {
                    routes.push(r);
                    break;
                }
                _ => {}
            }
            routes.push(r);
        }
        let up = f.upstream(buf).to_vec();
        f.consumed();
        (up, routes)
    }

    #[test]
    fn an_untouched_read_goes_up_as_it_came() {
        let mut f = Frames::default();
        let buf = [msg(b'Q', b"SELECT 1\0"), msg(b'S', b"")].concat();
        let (up, routes) = walk(&mut f, &buf);
        assert_eq!(up, buf);
        assert_eq!(
            routes,
            [
                Route::Inspect {
                    end: 14,
                    syncs_before: 0
                },
                Route::Stream
            ]
        );
        assert_eq!(f.syncs, 2);
    }

    #[test]
    fn after_a_refusal_everything_up_to_sync_is_dropped() {
        let mut f = Frames::default();
        let buf = [
            msg(b'P', b"\0DELETE\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
            msg(b'Q', b"SELECT 1\0"),
        ]
        .concat();
        let (up, _) = walk(&mut f, &buf);
        let expected = [
            b"REFUSED".to_vec(),
            msg(b'S', b""),
            msg(b'Q', b"SELECT 1\0"),
        ]
        .concat();
        assert_eq!(up, expected);
        assert!(!f.skipping);
    }

    #[test]
    fn messages_split_across_reads_stream_or_wait_whole() {
        let mut f = Frames::default();
        // A large Execute-like message streams in pieces.
        let copy = msg(b'd', &[7u8; 100]);
        let (up, _) = walk(&mut f, &copy[..40]);
        assert_eq!(up, &copy[..40]);
        let (up, _) = walk(&mut f, &copy[40..]);
        assert_eq!(up, &copy[40..]);
        // A Query is inspected only once whole: nothing of it goes up before.
        let q = msg(b'Q', b"SELECT 2\0");
        f.begin(6);
        let h = f.header(&q[..6], 1 << 20).unwrap().unwrap();
        assert_eq!(f.route(&q[..6], &h, 1 << 20).unwrap(), Route::Incomplete);
        assert!(f.upstream(&q[..6]).is_empty());
        assert_eq!(f.consumed(), 0);
    }

    #[test]
    fn a_message_dropped_while_skipping_stays_dropped_in_later_reads() {
        let mut f = Frames {
            skipping: true,
            ..Frames::default()
        };
        let big = msg(b'd', &[1u8; 50]);
        let (up, _) = walk(&mut f, &big[..20]);
        assert!(up.is_empty());
        let rest = [&big[20..], &msg(b'S', b"")[..]].concat();
        let (up, _) = walk(&mut f, &rest);
        assert_eq!(up, msg(b'S', b""));
    }

    #[test]
    fn oversized_statements_and_unknown_messages_are_violations() {
        let f = Frames::default();
        let q = msg(b'Q', &[b'x'; 64]);
        let h = f.header(&q, 1 << 20).unwrap().unwrap();
        let mut f = Frames::default();
        let e = f.route(&q, &h, 10).unwrap_err();
        assert_eq!(e.code, "54000");
        let e = f.header(&msg(b'Z', b""), 1 << 20).unwrap_err();
        assert_eq!(e.code, "08P01");
    }
}
