//! Client → server: framing, the hook's questions, refusals, and the client's
//! side of a held statement.

use super::frames::{Frames, Route};
use super::*;

impl Relay<'_> {
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
                    return Ok(Some(self.refuse_extended_at(p, err, syncs, skipping)));
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
                    return Ok(Some(self.refuse_extended_at(p, err, syncs, skipping)));
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
    fn refuse_extended(&self, p: &Progress, err: ErrorFields, f: &mut Frames) -> BytesMut {
        self.refuse_extended_at(p, err, f.syncs, &mut f.skipping)
    }

    fn refuse_extended_at(
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
    /// The reading, the hook's questions and the writing happen here; where
    /// each message starts and what goes upstream is `Frames`' (sans I/O).
    pub(super) async fn frontend(
        &self,
        mut client: ReadHalf<'_>,
        mut server: WriteHalf<'_>,
        p: &Progress,
    ) -> Result<(), Ending> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        // Bytes the client sent while a statement was held.
        let mut later = BytesMut::new();
        let mut f = Frames::default();
        loop {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            let mid_message = f.mid_message() || !buf.is_empty();
            let read = if p.reruns {
                tokio::select! {
                    _ = p.wake.notified() => {
                        self.resend(&mut server, p, &mut f.syncs).await?;
                        continue;
                    }
                    r = self.read_client(&mut client, &mut buf, p, mid_message) => r?,
                }
            } else {
                self.read_client(&mut client, &mut buf, p, mid_message)
                    .await?
            };
            match read {
                // Gone between messages: the server is in a clean state.
                Ok(0) if !mid_message => return Ok(()),
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
                self.while_held(&mut client, &mut buf, &mut server, p, &mut f.syncs)
                    .await?;
            }
            f.begin(buf.len());
            let mut terminated = false;
            while let Some(h) = f
                .header(&buf, self.limits.max_message_bytes)
                .map_err(Ending::ClientViolation)?
            {
                if p.reruns {
                    let idle = !f.skipping
                        && f.syncs == p.ready_seen.load(Relaxed)
                        && p.last_status.load(Relaxed) == b'I';
                    p.rerun
                        .lock()
                        .unwrap()
                        .client_message(h.tag, f.frame(&buf, &h), idle, f.syncs);
                }
                if !f.skipping && (h.tag == tag::BIND || h.tag == tag::EXECUTE) {
                    // While the transaction is poisoned, a statement prepared
                    // earlier must not commit it either: refuse, skip to Sync.
                    if let Some(err) = self.session.poison_error() {
                        if p.reruns {
                            p.rerun.lock().unwrap().spoil();
                        }
                        let r = self.refuse_extended(p, err, &mut f);
                        f.refuse_at(&buf, &r);
                    }
                }
                let (end, syncs_before) = match f
                    .route(&buf, &h, self.limits.max_query_bytes)
                    .map_err(Ending::ClientViolation)?
                {
                    Route::Skipped | Route::Stream => continue,
                    Route::Incomplete => {
                        buf.reserve(f.pos + h.frame_len() - buf.len());
                        break;
                    }
                    Route::Terminate => {
                        terminated = true;
                        break;
                    }
                    Route::Inspect { end, syncs_before } => (end, syncs_before),
                };
                let body = &buf[f.pos + Header::SIZE..end];
                // Behind a statement that may change lexing: the hook reads
                // this one knowing it.
                self.session
                    .set_lexing_unsure(p.ready_seen.load(Relaxed) < p.lexing_until.load(Relaxed));
                let mut pending = Pending {
                    server: &mut server,
                    client: &mut client,
                    later: &mut later,
                    client_gone: false,
                    out: &mut f.out,
                    before: &buf[f.start..f.pos],
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
                        f.syncs,
                        &mut f.skipping,
                        &mut pending,
                        &mut f.bind_checks,
                    )
                    .await
                    .map_err(Ending::ClientViolation)?;
                if self.session.take_lexing_change() {
                    // Answered at this message's sync point (a Parse's is
                    // the next Sync).
                    let until = if h.tag == tag::PARSE {
                        f.syncs + 1
                    } else {
                        f.syncs
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
                if replacement.is_some() && p.reruns {
                    p.rerun.lock().unwrap().spoil();
                }
                f.inspected(&buf, end, flushed, replacement.as_deref());
            }
            p.sync_points_sent.store(f.syncs, Relaxed);
            if f.syncs > p.ready_seen.load(Relaxed) {
                self.session.set_busy();
            }
            let upstream = f.upstream(&buf);
            if !upstream.is_empty() {
                server.write_all(upstream).await.map_err(Ending::ServerIo)?;
            }
            buf.advance(f.consumed());
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
        p: &Progress,
        mid_message: bool,
    ) -> Result<std::io::Result<usize>, Ending> {
        if !mid_message {
            p.between_messages.store(true, Relaxed);
            let r = client.read_buf(buf).await;
            p.between_messages.store(false, Relaxed);
            return Ok(r);
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
}
