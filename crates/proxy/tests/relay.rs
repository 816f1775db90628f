//! The relay with real drivers and raw bytes: simple and extended protocol,
//! pipelines, COPY, NOTIFY, notices, FunctionCall, large rows, cancel, and the
//! statement hook refusing statements while the session stays usable.

mod common;

use common::*;
use futures_util::{pin_mut, StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::Duration;
use testkit::raw::{self, error_fields, tags, Raw};
use tokio_postgres::{AsyncMessage, NoTls};

async fn refusing_gateway() -> TestGateway {
    cluster();
    let oid: u32 = cluster()
        .psql("app", "SELECT 'pg_sleep'::regproc::oid")
        .unwrap()
        .parse()
        .unwrap();
    TestGateway::start_with(
        &config_text("", ""),
        Arc::new(RefuseForbidden {
            refused_function: oid,
        }),
    )
    .await
}

#[tokio::test]
async fn simple_and_multi_statement_queries_run_as_the_login_role() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    let row = c
        .query_one("SELECT current_user::text, count(*) FROM items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), gw.login_role("alice"));
    assert_eq!(row.get::<_, i64>(1), 100);
    let msgs = c
        .simple_query("SELECT 1; SELECT 2, 3; SELECT 'x;y'")
        .await
        .unwrap();
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec!["1", "2", "x;y"]);
    // The database still enforces the login role's own privileges.
    let err = c.execute("DELETE FROM items", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

#[tokio::test]
async fn extended_protocol_named_statements_portals_and_pipelining() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    let stmt = c
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    // Pipelined: all sent before any result is read.
    let futs = (1..=50).map(|i| {
        let c = &c;
        let stmt = &stmt;
        async move {
            c.query_one(stmt, &[&i])
                .await
                .map(|r| r.get::<_, String>(0))
        }
    });
    let names = futures_util::future::try_join_all(futs).await.unwrap();
    assert_eq!(names[0], "item 1");
    assert_eq!(names[49], "item 50");
    // A portal fetched in pieces.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    let portal = tx
        .bind("SELECT id FROM items ORDER BY id", &[])
        .await
        .unwrap();
    let first = tx.query_portal(&portal, 30).await.unwrap();
    let second = tx.query_portal(&portal, 100).await.unwrap();
    assert_eq!((first.len(), second.len()), (30, 70));
    assert_eq!(second[0].get::<_, i32>(0), 31);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn raw_pipeline_with_several_executes_before_sync_and_flush() {
    let gw = TestGateway::start().await;
    let mut r = Raw::login(gw.addr, "alice", ALICE_PW).await;
    let mut batch = Vec::new();
    batch.extend(raw::parse("s1", "SELECT 1"));
    batch.extend(raw::bind("p1", "s1"));
    batch.extend(raw::execute("p1"));
    batch.extend(raw::parse("", "SELECT 2"));
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::msg(b'H', &[])); // Flush: results before Sync
    r.send(&batch).await;
    let mut got = Vec::new();
    for _ in 0..8 {
        got.push(r.recv().await.unwrap());
    }
    assert_eq!(
        tags(&got),
        "12DC12DC",
        "both results arrive on Flush, before any Sync"
    );
    assert!(
        r.recv_within(Duration::from_millis(200)).await.is_err(),
        "no ReadyForQuery before Sync"
    );
    r.send(&raw::sync()).await;
    let rest = r.until_ready().await;
    assert_eq!(tags(&rest), "Z");
}

#[tokio::test]
async fn refused_simple_query_errors_and_session_stays_usable() {
    let gw = refusing_gateway().await;
    let c = gw.alice().await;
    let err = c
        .simple_query("SELECT * FROM forbidden_table")
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    assert_eq!(db.message(), "refused by the test policy");
    assert_eq!(db.hint(), Some("do not do that"));
    assert_eq!(
        c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0),
        7
    );
}

#[tokio::test]
async fn a_multi_statement_query_with_a_refusal_is_refused_whole_and_aborts_like_postgres() {
    let gw = refusing_gateway().await;
    let mut r = Raw::login(gw.addr, "alice", ALICE_PW).await;
    // PostgreSQL runs a Query as one implicit transaction: all or nothing.
    // Nothing of it is sent, not even the statement before the refused one.
    r.send(&raw::query(
        "INSERT INTO scratch VALUES (2, 'before'); SELECT * FROM forbidden_table; SELECT 'after'",
    ))
    .await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(error_fields(&got[0].1).0, "42501");
    assert_eq!(&got[1].1[..], b"I");
    assert_eq!(
        cluster()
            .psql("app", "SELECT count(*) FROM scratch WHERE id = 2")
            .unwrap(),
        "0"
    );
    // In an explicit transaction the refusal fails the transaction, as a real error would.
    r.send(&raw::query("BEGIN; INSERT INTO scratch VALUES (1, 'x')"))
        .await;
    assert_eq!(r.until_ready().await.last().unwrap().1[..], *b"T");
    r.send(&raw::query("SELECT * FROM forbidden_table")).await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(&got[1].1[..], b"E", "transaction is now failed");
    r.send(&raw::query("SELECT 1")).await;
    let got = r.until_ready().await;
    assert_eq!(error_fields(&got[0].1).0, "25P02");
    r.send(&raw::query("ROLLBACK")).await;
    r.until_ready().await;
    assert_eq!(
        cluster()
            .psql("app", "SELECT count(*) FROM scratch WHERE id = 1")
            .unwrap(),
        "0"
    );
}

#[tokio::test]
async fn refused_parse_in_a_pipeline_skips_to_sync_like_postgres() {
    let gw = refusing_gateway().await;
    let mut r = Raw::login(gw.addr, "alice", ALICE_PW).await;
    let mut batch = Vec::new();
    batch.extend(raw::parse("", "SELECT 1"));
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::parse("bad", "SELECT * FROM forbidden_table"));
    batch.extend(raw::bind("", "bad"));
    batch.extend(raw::execute(""));
    batch.extend(raw::parse("", "SELECT 3")); // skipped: after the error, before Sync
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    batch.extend(raw::parse("", "SELECT 4"));
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    r.send(&batch).await;
    let first = r.until_ready().await;
    assert_eq!(tags(&first), "12DCEZ");
    let (code, message) = error_fields(&first[4].1);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("42501", "refused by the test policy")
    );
    let second = r.until_ready().await;
    assert_eq!(tags(&second), "12DCZ");
    assert_eq!(&second[2].1[6..], b"4");
    // The refused statement was never prepared on the server.
    r.send(&[raw::bind("", "bad"), raw::execute(""), raw::sync()].concat())
        .await;
    let got = r.until_ready().await;
    assert_eq!(error_fields(&got[0].1).0, "26000");
}

/// A deferred verdict (the hook awaits I/O, or holds the statement): what came
/// before it in the pipeline runs first, results stay in order, and a later
/// refusal still skips to Sync.
#[tokio::test]
async fn deferred_verdicts_keep_pipeline_order() {
    let gw = refusing_gateway().await;
    let mut r = Raw::login(gw.addr, "alice", ALICE_PW).await;
    let mut batch = Vec::new();
    batch.extend(raw::parse("", "SELECT 1"));
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::parse("", "SELECT 'slow_ok'"));
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    batch.extend(raw::parse("", "SELECT 'slow_no'"));
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::parse("", "SELECT 3")); // skipped
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    batch.extend(raw::query("SELECT 4; SELECT 'slow_ok'"));
    r.send(&batch).await;
    let first = r.until_ready().await;
    assert_eq!(tags(&first), "12DC12DCZ");
    assert_eq!(&first[6].1[6..], b"slow_ok");
    let second = r.until_ready().await;
    assert_eq!(tags(&second), "EZ");
    assert_eq!(
        error_fields(&second[0].1).1,
        "refused later by the test policy"
    );
    let third = r.until_ready().await;
    assert_eq!(tags(&third), "TDCTDCZ");
}

#[tokio::test]
async fn refused_prepare_through_a_driver() {
    let gw = refusing_gateway().await;
    let c = gw.alice().await;
    let err = c
        .prepare("SELECT * FROM forbidden_table")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let ok = c
        .prepare("SELECT id FROM items WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(c.query_one(&ok, &[&5]).await.unwrap().get::<_, i32>(0), 5);
}

/// FunctionCall (the fast-path interface): allowed ones run, refused ones error.
#[tokio::test]
async fn function_call_passes_the_hook() {
    let gw = refusing_gateway().await;
    let oid = |name: &str| -> i32 {
        cluster()
            .psql("app", &format!("SELECT '{name}'::regproc::oid"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let call = |oid: i32, args: &[&[u8]]| {
        let mut b = oid.to_be_bytes().to_vec();
        b.extend_from_slice(&0i16.to_be_bytes()); // argument formats: all text
        b.extend_from_slice(&(args.len() as i16).to_be_bytes());
        for a in args {
            b.extend_from_slice(&(a.len() as i32).to_be_bytes());
            b.extend_from_slice(a);
        }
        b.extend_from_slice(&0i16.to_be_bytes()); // result format: text
        raw::msg(b'F', &b)
    };
    let mut r = Raw::login(gw.addr, "alice", ALICE_PW).await;
    r.send(&call(oid("pg_backend_pid"), &[])).await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "VZ", "FunctionCallResponse then ReadyForQuery");
    r.send(&call(oid("pg_sleep"), &[b"0"])).await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(error_fields(&got[0].1).0, "42501");
}

#[tokio::test]
async fn copy_in_and_out() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    c.execute("DELETE FROM scratch WHERE id >= 1000", &[])
        .await
        .unwrap();
    let sink = c
        .copy_in("COPY scratch (id, body) FROM STDIN")
        .await
        .unwrap();
    pin_mut!(sink);
    use futures_util::SinkExt;
    let mut data = String::new();
    for i in 1000..6000 {
        data.push_str(&format!("{i}\tline {i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 5000);
    let out = c
        .copy_out("COPY (SELECT id FROM scratch WHERE id >= 1000 ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    let text: String = chunks
        .iter()
        .map(|b| String::from_utf8_lossy(b).to_string())
        .collect();
    assert_eq!(text.lines().count(), 5000);
    assert_eq!(text.lines().next(), Some("1000"));
    c.execute("DELETE FROM scratch WHERE id >= 1000", &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn rows_of_many_megabytes_pass_intact() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    let row = c
        .query_one(
            "SELECT repeat('ab', 6 * 1024 * 1024) AS big, md5(repeat('ab', 6 * 1024 * 1024))",
            &[],
        )
        .await
        .unwrap();
    let big: String = row.get(0);
    assert_eq!(big.len(), 12 * 1024 * 1024);
    let digest: String = row.get(1);
    assert_eq!(digest, format!("{:x}", md5_of(big.as_bytes())));
    // And a large value sent by the client (a streamed Bind, not buffered).
    let param = "z".repeat(8 * 1024 * 1024);
    let n: i32 = c
        .query_one("SELECT length($1::text)", &[&param])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, param.len());
}

fn md5_of(b: &[u8]) -> md5::Digest {
    md5::compute(b)
}

/// The first message `pick` accepts, within 5 s of each other.
async fn next<T>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
    pick: impl Fn(AsyncMessage) -> Option<T>,
) -> T {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(m)) => {
                if let Some(t) = pick(m) {
                    return t;
                }
            }
            _ => panic!("the expected asynchronous message never arrived"),
        }
    }
}

#[tokio::test]
async fn notify_reaches_an_idle_client_with_the_real_backend_pid() {
    let gw = TestGateway::start().await;
    let (client, mut conn) = tokio_postgres::connect(&gw.conn_string("alice", ALICE_PW), NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        pin_mut!(stream);
        while let Some(Ok(m)) = stream.next().await {
            let _ = tx.send(m);
        }
    });
    client.batch_execute("LISTEN jitgate_test").await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Another session notifies while this one is idle.
    let other = gw.connect("bob", BOB_PW).await.unwrap();
    other
        .batch_execute("NOTIFY jitgate_test, 'hello'")
        .await
        .unwrap();
    let note = next(&mut rx, |m| match m {
        AsyncMessage::Notification(n) => Some(n),
        _ => None,
    })
    .await;
    assert_eq!(note.payload(), "hello");
    assert_eq!(note.channel(), "jitgate_test");
    // A self-notification carries our own backend pid: the pid is real.
    client
        .batch_execute("NOTIFY jitgate_test, 'self'")
        .await
        .unwrap();
    let own = next(&mut rx, |m| match m {
        AsyncMessage::Notification(n) if n.payload() == "self" => Some(n),
        _ => None,
    })
    .await;
    assert_eq!(own.process_id(), pid);
    // Notices are relayed too.
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'careful'; END $$")
        .await
        .unwrap();
    let notice = next(&mut rx, |m| match m {
        AsyncMessage::Notice(n) => Some(n),
        _ => None,
    })
    .await;
    assert_eq!(notice.message(), "careful");
}

#[tokio::test]
async fn cancel_goes_through_the_gateway_key() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    let token = c.cancel_token();
    let started = std::time::Instant::now();
    let (res, _) = tokio::join!(c.query("SELECT pg_sleep(20)", &[]), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(NoTls).await.unwrap();
    });
    assert_eq!(sqlstate(&res.unwrap_err()), "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test]
async fn cancel_with_a_wrong_secret_does_nothing() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let q = tokio::spawn(async move {
        c.query_one("SELECT pg_sleep(1.5), 1", &[])
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for secret in [0, 1, -1, 12345] {
        let mut r = Raw::connect(gw.addr).await;
        r.send(&wire::startup::encode_cancel(pid, secret)).await;
    }
    assert!(
        q.await.unwrap().is_ok(),
        "a guessed secret must not cancel the query"
    );
}

/// After a refused Parse the server skips to Sync. The gateway drops those
/// messages itself, so even a Query it never showed the hook cannot run.
#[tokio::test]
async fn messages_after_a_refused_parse_never_reach_the_server() {
    let gw = refusing_gateway().await;
    let mut r = Raw::login(gw.addr, "alice", ALICE_PW).await;
    let big_bind = {
        // A Bind larger than one read, so it is dropped across reads.
        let mut b = b"\0\0\0\0\0\x01".to_vec();
        let v = vec![b'x'; 200_000];
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(&v);
        b.extend_from_slice(&[0, 0]);
        raw::msg(b'B', &b)
    };
    let mut batch = Vec::new();
    batch.extend(raw::parse("", "SELECT * FROM forbidden_table"));
    batch.extend(big_bind);
    batch.extend(raw::query("INSERT INTO scratch VALUES (515151, 'sneaky')"));
    batch.extend(raw::parse(
        "",
        "INSERT INTO scratch VALUES (515152, 'sneaky')",
    ));
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    r.send(&batch).await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(error_fields(&got[0].1).0, "42501");
    r.send(&raw::query(
        "SELECT count(*) FROM scratch WHERE id IN (515151, 515152)",
    ))
    .await;
    let got = r.until_ready().await;
    assert_eq!(tags(&got), "TDCZ");
    assert_eq!(&got[1].1[6..], b"0", "nothing after the refusal ran");
}
