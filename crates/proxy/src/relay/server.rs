//! Server → client: forwarding, ReadyForQuery and ParameterStatus, the
//! errors the hook explains, and the server's side of a re-run.

use super::*;

/// How long a server's permission error waits for the hook's explanation.
const EXPLAIN_WAIT: Duration = Duration::from_secs(3);

impl Relay<'_> {
    pub(super) async fn backend(
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
