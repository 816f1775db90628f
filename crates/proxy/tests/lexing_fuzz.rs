//! Generated texts, read by the gateway and run by PostgreSQL, under each
//! value of `standard_conforming_strings`: where the gateway lets a text
//! through, it must split it into the same statements and read the same
//! literals as the server.
//!
//! The gateway reads with PostgreSQL's defaults (pg_query). Under `on` that
//! must agree with the server for every text; under `off` (which the gateway
//! never lets a session reach, but which a statement can be pipelined
//! behind), it must agree for every text `policy::lexing::reads_the_same`
//! accepts — the others are refused there.
//!
//! `JITGATE_FUZZ_CASES` sets the number of texts (256 by default; the run
//! recorded in docs/SECURITY.md used many more).

use pg_query::NodeEnum;
use pgcluster::Cluster;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// What one side made of a text: per statement, the values of its columns.
type Reading = Vec<Vec<Option<String>>>;

/// The gateway's reading: its split, and the literals pg_query parsed.
fn gateway(text: &str) -> Option<Reading> {
    let mut out = Vec::new();
    for (_, stmt) in proxy::split::statements(text) {
        let parsed = pg_query::parse(stmt, 0).ok()?;
        for raw in &parsed.protobuf.stmts {
            let Some(NodeEnum::SelectStmt(s)) = raw.stmt.as_ref().and_then(|n| n.node.as_ref())
            else {
                return None;
            };
            let mut row = Vec::new();
            for t in &s.target_list {
                let Some(NodeEnum::ResTarget(r)) = &t.node else {
                    return None;
                };
                match r.val.as_ref().and_then(|v| v.node.as_ref()) {
                    Some(NodeEnum::AConst(c)) => row.push(match &c.val {
                        Some(pg_query::protobuf::a_const::Val::Sval(s)) => Some(s.sval.clone()),
                        Some(pg_query::protobuf::a_const::Val::Ival(i)) => Some(i.ival.to_string()),
                        _ => None,
                    }),
                    _ => return None,
                }
            }
            out.push(row);
        }
    }
    Some(out)
}

/// PostgreSQL's reading: the rows it returned, one per statement.
async fn server(client: &tokio_postgres::Client, text: &str) -> Option<Reading> {
    let messages = client.simple_query(text).await.ok()?;
    let mut out = Vec::new();
    let mut row = None;
    for m in messages {
        match m {
            SimpleQueryMessage::Row(r) => {
                row = Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            SimpleQueryMessage::CommandComplete(_) => out.push(row.take().unwrap_or_default()),
            _ => {}
        }
    }
    Some(out)
}

/// `SELECT` statements whose literals are built from the pieces that move
/// literal boundaries: quotes, backslashes, `E` prefixes, dollar quotes,
/// semicolons and comment starters inside and around them.
fn texts() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "a", "'", "''", "\\", "\\'", "\\\\", ";", " ", "--", "\n", "/*", "*/", "$$", "E'", "x",
    ]);
    let literal = (
        prop::sample::select(vec!["'", "E'", "$$"]),
        prop::collection::vec(piece, 0..8),
    )
        .prop_map(|(open, body)| {
            let close = if open == "$$" { "$$" } else { "'" };
            format!("{open}{}{close}", body.concat())
        });
    let statement =
        prop::collection::vec(literal, 1..3).prop_map(|lits| format!("SELECT {}", lits.join(", ")));
    prop::collection::vec(statement, 1..4).prop_map(|s| s.join("; "))
}

#[test]
fn the_gateway_reads_texts_as_postgresql_does() {
    let cluster = Cluster::shared();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&cluster.url("postgres"), NoTls))
        .unwrap();
    rt.spawn(conn);
    let cases = std::env::var("JITGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let (agreed, refused) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    // Texts PostgreSQL runs that the gateway cannot read (it refuses them).
    let unread = std::cell::Cell::new(0u64);
    let started = std::time::Instant::now();
    runner
        .run(&texts(), |text| {
            let ours = gateway(&text);
            for setting in ["on", "off"] {
                rt.block_on(
                    client.batch_execute(&format!("SET standard_conforming_strings = {setting}")),
                )
                .unwrap();
                let theirs = rt.block_on(server(&client, &text));
                if setting == "off" && !policy::lexing::reads_the_same(&text) {
                    refused.set(refused.get() + 1);
                    continue;
                }
                // Both read it: the same statements, the same values. A text
                // the gateway cannot read is refused (nothing reaches the
                // server); one the server cannot run fails there.
                match (&ours, &theirs) {
                    (Some(ours), Some(theirs)) => {
                        prop_assert_eq!(ours, theirs, "{:?} under {}", text, setting);
                        agreed.set(agreed.get() + 1);
                    }
                    (None, Some(_)) => unread.set(unread.get() + 1),
                    (None, None) => refused.set(refused.get() + 1),
                    (Some(_), None) => {}
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "{cases} texts in {:?}: {} readings agreed with PostgreSQL; {} not the same under \
         standard_conforming_strings = off or unreadable to both (refused); {} run by \
         PostgreSQL but unreadable to the gateway (refused)",
        started.elapsed(),
        agreed.get(),
        refused.get(),
        unread.get()
    );
    assert!(agreed.get() > 0);
}
