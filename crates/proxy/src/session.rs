//! One client connection, start to end: startup, authentication, login role,
//! upstream connection (pooled), relay, and return of the connection to the pool.

use crate::auth;
use crate::events::LoginFailure;
use crate::login_role::ProvisionError;
use crate::pool::PoolKey;
use crate::relay::{Ending, Relay};
use crate::sessions::{Session, SessionParts};
use crate::startup::{self, Opening, StartupError};
use crate::stream::Stream;
use crate::upstream::{ServerConn, UpstreamError};
use crate::Shared;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, warn, Instrument};
use wire::backend::{self, ErrorFields};
use wire::encoding::ClientEncoding;

/// Who a session is, once authenticated.
pub struct SessionInfo {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub login_role: String,
}

pub async fn serve(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", id, %peer);
    run(tcp, id, peer, shared).instrument(span).await
}

async fn say_fatal(stream: &mut Stream, e: &ErrorFields) {
    let _ = stream.write_all(&e.to_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn run(tcp: TcpStream, id: u64, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + shared.config.gateway.startup_timeout;
    let (mut client, request) = match startup::open(tcp, shared.tls.as_ref(), deadline).await {
        Ok(Opening::Startup(s, r)) => (s, r),
        Ok(Opening::Cancel { pid, secret }) => {
            shared.cancels.cancel(pid, secret).await;
            return;
        }
        Err((stream, e)) => {
            match (stream, &e) {
                (Some(mut s), StartupError::Fatal(f)) => {
                    info!(error = %f.message, "refused at startup");
                    say_fatal(&mut s, f).await;
                }
                _ => debug!(error = %e, "client left during startup"),
            }
            return;
        }
    };
    match start_session(&mut client, &request, id, peer, &shared, deadline).await {
        Ok((info, key, conn)) => relay(client, info, key, conn, &shared).await,
        Err(StartupError::Fatal(f)) => {
            info!(error = %f.message, code = f.code, "connection refused");
            say_fatal(&mut client, &f).await;
        }
        Err(StartupError::Io(e)) => debug!(error = %e, "client left during startup"),
    }
}

async fn start_session(
    client: &mut Stream,
    request: &startup::Request,
    id: u64,
    peer: SocketAddr,
    shared: &Shared,
    deadline: Instant,
) -> Result<(SessionInfo, PoolKey, ServerConn), StartupError> {
    let gateway = &shared.config.gateway;
    if gateway.require_tls && !client.is_tls() {
        return Err(StartupError::Fatal(
            ErrorFields::fatal("28000", "jitgate requires TLS for every connection")
                .with_hint("connect with sslmode=require"),
        ));
    }
    let checked = startup::check(request)?;
    if let Some(n) = startup::negotiation(request, &checked) {
        client.write_all(&n).await?;
    }
    authenticate(client, &checked.user, peer, shared, deadline).await?;
    let Some(db) = shared.databases.get(&checked.database) else {
        return Err(StartupError::Fatal(
            ErrorFields::fatal(
                "3D000",
                format!(
                    "database \"{}\" is not configured in jitgate",
                    checked.database
                ),
            )
            .with_hint("use the name of a [[database]] entry as dbname"),
        ));
    };
    let fatal = |code, msg: String| StartupError::Fatal(ErrorFields::fatal(code, msg));
    let mut retried = false;
    let (role, conn) = loop {
        let role = timeout_at(
            deadline,
            shared
                .login_roles
                .ensure(&checked.database, &db.admin, &checked.user),
        )
        .await
        .map_err(|_| fatal("08006", "timed out preparing the login role".into()))?
        .map_err(|e| {
            warn!(error = %e, "login role provisioning failed");
            // Unreachable database: a connection failure; anything else: the role.
            let code = match e {
                ProvisionError::AdminConnect(_) => "08006",
                _ => "28000",
            };
            fatal(
                code,
                format!(
                    "could not prepare the login role on \"{}\": {e}",
                    checked.database
                ),
            )
        })?;
        let key = PoolKey {
            database: checked.database.clone(),
            login_role: role.name.clone(),
            params: checked.upstream_params.clone(),
        };
        if let Some(c) = shared.pool.take(&key).await {
            break (role, c);
        }
        let connect_deadline = deadline.min(Instant::now() + gateway.upstream_connect_timeout);
        let connected = timeout_at(
            connect_deadline,
            db.target
                .connect(&role.name, &role.password, &checked.upstream_params),
        )
        .await
        .map_err(|_| {
            fatal(
                "08006",
                format!("timed out connecting to \"{}\"", checked.database),
            )
        })?;
        match connected {
            Ok(c) => break (role, c),
            // The database refused the password only the gateway should know:
            // someone changed it. Alert, set a new one, try once more.
            // After a rotation (another replica moved the epoch), the next
            // epoch's password; else someone changed it: alert, set it again.
            Err(UpstreamError::Server { code, .. }) if code == "28P01" && !retried => {
                if !shared.login_roles.rotated(&role).await {
                    warn!(login_role = %role.name, "the database refused the login role's password; setting it again");
                    shared.observer.upstream_login_failed(
                        &checked.database,
                        &checked.user,
                        &role.name,
                    );
                }
                shared.login_roles.forget(&checked.database, &checked.user);
                retried = true;
            }
            Err(e) => return Err(upstream_refused(&checked.database, e)),
        }
    };
    let key = PoolKey {
        database: checked.database.clone(),
        login_role: role.name.clone(),
        params: checked.upstream_params.clone(),
    };
    let info = SessionInfo {
        id,
        user: checked.user,
        database: checked.database,
        login_role: role.name.clone(),
    };
    Ok((info, key, conn))
}

/// SCRAM against the gateway's users, throttled per user name and per peer
/// address; failures are reported to the observer (audited, alerted).
async fn authenticate(
    client: &mut Stream,
    user: &str,
    peer: SocketAddr,
    shared: &Shared,
    deadline: Instant,
) -> Result<(), StartupError> {
    let now = chrono::Utc::now();
    let user_key = user;
    let peer_key = peer.ip().to_string();
    let logins = &shared.logins;
    if logins.by_user.throttled(user_key, now) || logins.by_peer.throttled(&peer_key, now) {
        // Not even checked: guessing stops, and the audit log is not flooded.
        return Err(StartupError::Fatal(
            ErrorFields::fatal(
                "28000",
                "too many failed logins for this user name or from this address; wait a minute",
            )
            .with_hint("jitgate throttles repeated failed logins"),
        ));
    }
    let found = auth::verifier(
        &shared.config,
        shared.secrets.get().map(|s| &**s as &dyn auth::Secrets),
        user,
    )
    .await;
    let result =
        auth::authenticate(client, found.as_ref(), &shared.scram_secret, user, deadline).await;
    match &result {
        Ok(()) => logins.by_user.succeeded(user_key),
        Err(StartupError::Fatal(f)) => {
            let by_user = logins.by_user.failed(user_key, now);
            let by_peer = logins.by_peer.failed(&peer_key, now);
            shared.observer.login_failed(&LoginFailure {
                user,
                peer: peer.ip(),
                reason: &f.message,
                throttled: by_user || by_peer,
            });
        }
        // The client left mid-exchange: no attempt was made.
        Err(StartupError::Io(_)) => {}
    }
    result
}

fn upstream_refused(database: &str, e: UpstreamError) -> StartupError {
    warn!(error = %e, database, "upstream connection failed");
    let code = match &e {
        UpstreamError::Server { code, .. } if code == "53300" => "53300",
        _ => "08006",
    };
    StartupError::Fatal(ErrorFields::fatal(
        code,
        format!("could not connect to database \"{database}\": {e}"),
    ))
}

async fn relay(
    mut client: Stream,
    info: SessionInfo,
    key: PoolKey,
    mut conn: ServerConn,
    shared: &Shared,
) {
    let addr = shared.databases[&info.database].target_addr();
    let (session, io) = Session::new(SessionParts {
        id: info.id,
        user: info.user.clone(),
        database: info.database.clone(),
        login_role: info.login_role.clone(),
        backend_pid: conn.pid,
        upstream_secret: conn.secret,
        upstream_addr: addr.clone(),
    });
    if let Some(encoding) = backend::find_parameter(&conn.parameter_status, "client_encoding") {
        session.set_encoding(encoding);
    }
    // Settings the database imposed (role or database defaults) under which
    // the gateway could not read statements as the server will: fail closed.
    let unreadable = |setting: &str, value: &str| match setting {
        "client_encoding" => ClientEncoding::of(value) == ClientEncoding::Unsafe,
        _ => !policy::lexing::standard_strings_on(value),
    };
    for setting in ["client_encoding", "standard_conforming_strings"] {
        let value = backend::find_parameter(&conn.parameter_status, setting).map(str::to_string);
        if let Some(value) = value {
            if unreadable(setting, &value) {
                shared.hook.unreadable_session(&session, setting, &value);
                conn.close().await;
                say_fatal(
                    &mut client,
                    &crate::relay::unreadable_error(setting, &value),
                )
                .await;
                return;
            }
        }
    }
    let _listed = shared.sessions.register(session.clone());
    let registration = shared
        .cancels
        .register(conn.pid, conn.secret, addr, Some(&session));
    let mut hello = BytesMut::with_capacity(conn.parameter_status.len() + 32);
    hello.extend_from_slice(&conn.parameter_status);
    backend::backend_key_data(&mut hello, conn.pid, registration.secret());
    backend::ready_for_query(&mut hello, b'I');
    if client.write_all(&hello).await.is_err() {
        return;
    }
    info!(user = %info.user, database = %info.database, login_role = %info.login_role, "session started");
    let relay = Relay {
        session: &session,
        hook: shared.hook.as_ref(),
        limits: &shared.limits,
        draining: &shared.draining,
    };
    let ending = relay
        .run(&mut client, &mut conn.stream, io, &shared.closing)
        .await;
    drop(registration);
    let reuse = shared
        .config
        .database(&info.database)
        .is_some_and(|d| d.reuse_backends);
    // A client that vanished mid-statement must not leave it running, as
    // with a direct connection: cancel it before the backend is closed.
    let left_busy = matches!(
        ending,
        Ending::ClientLeft { reusable: false } | Ending::ClientIo(_)
    ) && session.is_busy();
    if left_busy {
        session.cancel_statement().await;
    }
    match ending {
        Ending::ClientLeft { reusable } => {
            debug!(reusable, "client left");
            if reusable && reuse {
                shared.pool.put(key, conn).await;
            } else {
                conn.close().await;
            }
        }
        Ending::ServerClosed { said_fatal } => {
            info!("database closed the connection");
            if !said_fatal {
                let e =
                    ErrorFields::fatal("08006", "the database closed the connection unexpectedly");
                say_fatal(&mut client, &e).await;
            }
        }
        Ending::ClientViolation(e) => {
            warn!(error = %e.message, "protocol violation by client");
            say_fatal(&mut client, &e).await;
        }
        Ending::ServerIo(e) => {
            warn!(error = %e, "database connection failed");
            let e = ErrorFields::fatal("08006", format!("connection to the database failed: {e}"));
            say_fatal(&mut client, &e).await;
        }
        Ending::ClientIo(e) => {
            debug!(error = %e, "client connection failed");
            conn.close().await;
        }
        Ending::Terminated(e) => {
            info!(error = %e.message, "session ended by jitgate");
            conn.close().await;
            say_fatal(&mut client, &e).await;
        }
        Ending::Shutdown => {
            let e = ErrorFields::fatal("57P01", "terminating connection: jitgate is shutting down")
                .with_hint("connect again: another jitgate replica, or this one once restarted, takes the session");
            say_fatal(&mut client, &e).await;
        }
    }
}
