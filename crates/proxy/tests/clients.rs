//! Real clients through the gateway: psql (queries, \copy, a query cancelled
//! with Ctrl-C), pgbench (simple, extended and prepared protocol), psycopg 3.

mod common;

use common::*;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// pgbench tables in `app`, readable (and for TPC-B writable) by the baseline role.
fn with_pgbench_tables() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let c = cluster();
        let out = Command::new("pgbench")
            .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", &c.port().to_string(), "-U", "postgres", "app"])
            .env("PGPASSWORD", c.password())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        c.psql(
            "app",
            "GRANT SELECT, INSERT, UPDATE ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO app_read",
        )
        .unwrap();
    });
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_queries_and_copy_both_ways() {
    let gw = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.tsv");
    let output = dir.path().join("out.csv");
    let rows: String = (0..2000)
        .map(|i| format!("{}\tpsql row {i}\n", 700_000 + i))
        .collect();
    std::fs::write(&input, rows).unwrap();
    let script = format!(
        "SELECT current_user;\n\
         \\copy scratch (id, body) from '{}'\n\
         \\copy (SELECT id, body FROM scratch WHERE id >= 700000 ORDER BY id) to '{}' csv\n\
         DELETE FROM scratch WHERE id >= 700000;\n",
        input.display(),
        output.display()
    );
    let out = tokio::task::block_in_place(|| {
        let mut child = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .arg(format!(
                "host=127.0.0.1 port={} dbname=app user=alice",
                gw.addr.port()
            ))
            .env("PGPASSWORD", ALICE_PW)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    });
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&gw.login_role("alice")), "{t}");
    assert!(t.contains("COPY 2000"), "{t}");
    let copied = std::fs::read_to_string(&output).unwrap();
    assert_eq!(copied.lines().count(), 2000);
    assert_eq!(copied.lines().next(), Some("700000,psql row 0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_ctrl_c_cancels_the_running_query() {
    let gw = TestGateway::start().await;
    let out = tokio::task::block_in_place(|| {
        let child = Command::new("psql")
            .args(["-X", "-c", "SELECT pg_sleep(30)"])
            .arg(format!(
                "host=127.0.0.1 port={} dbname=app user=alice",
                gw.addr.port()
            ))
            .env("PGPASSWORD", ALICE_PW)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let started = Instant::now();
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        out
    });
    let t = text(&out);
    assert!(t.contains("canceling statement due to user request"), "{t}");
}

fn pgbench(gw: &TestGateway, args: &[&str]) -> Output {
    Command::new("pgbench")
        .args([
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            &gw.addr.port().to_string(),
            "-U",
            "alice",
        ])
        .args(args)
        .arg("app")
        .env("PGPASSWORD", ALICE_PW)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_simple_extended_prepared_and_tpcb() {
    with_pgbench_tables();
    let gw = TestGateway::start().await;
    for mode in [
        &["-S", "-M", "simple"][..],
        &["-S", "-M", "extended"],
        &["-S", "-M", "prepared"],
        &["-M", "prepared"], // TPC-B-like: transactions with UPDATE and INSERT
        &["-S", "-C"],       // a new connection per transaction
    ] {
        let mut args = vec!["-c", "4", "-j", "2", "-t", "200"];
        args.extend_from_slice(mode);
        let out = tokio::task::block_in_place(|| pgbench(&gw, &args));
        let t = text(&out);
        assert!(out.status.success(), "{mode:?}: {t}");
        assert!(
            t.contains("number of transactions actually processed: 800/800"),
            "{mode:?}: {t}"
        );
        assert!(
            t.contains("number of failed transactions: 0"),
            "{mode:?}: {t}"
        );
    }
}

const PSYCOPG: &str = r#"
import sys, psycopg
dsn = sys.argv[1]
with psycopg.connect(dsn, autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute("SELECT current_user, %s::int + 1", (41,))
    user, n = cur.fetchone()
    assert n == 42, n
    # Server-side prepared statements (prepare_threshold=0) and pipelining.
    with conn.pipeline():
        for i in range(1, 21):
            conn.execute("SELECT name FROM items WHERE id = %s", (i,), prepare=True)
    cur.execute("SELECT name FROM items WHERE id = %s", (7,), prepare=True)
    assert cur.fetchone()[0] == "item 7"
    with cur.copy("COPY scratch (id, body) FROM STDIN") as copy:
        for i in range(500):
            copy.write_row((800000 + i, f"psycopg {i}"))
    rows = []
    with cur.copy("COPY (SELECT id FROM scratch WHERE id >= 800000 ORDER BY id) TO STDOUT") as copy:
        for row in copy.rows():
            rows.append(row)
    assert len(rows) == 500, len(rows)
    cur.execute("DELETE FROM scratch WHERE id >= 800000")
    # A server-side (named) cursor.
    with conn.transaction():
        with conn.cursor(name="c1") as named:
            named.execute("SELECT id FROM items ORDER BY id")
            assert len(named.fetchmany(10)) == 10
    # Errors leave the connection usable.
    try:
        cur.execute("SELECT 1/0")
        raise SystemExit("division did not fail")
    except psycopg.errors.DivisionByZero:
        pass
    cur.execute("SELECT 'still here'")
    print(user, cur.fetchone()[0])
"#;

/// Runs a Python `script` with alice's connection string through `gw`.
fn python(script: &str, gw: &TestGateway) -> (Output, String) {
    let out = tokio::task::block_in_place(|| {
        Command::new("python3")
            .args(["-c", script])
            .arg(format!(
                "host=127.0.0.1 port={} dbname=app user=alice password={ALICE_PW}",
                gw.addr.port()
            ))
            .output()
            .unwrap()
    });
    let t = text(&out);
    (out, t)
}

#[tokio::test(flavor = "multi_thread")]
async fn psycopg3_from_python() {
    let gw = TestGateway::start().await;
    let (out, t) = python(PSYCOPG, &gw);
    assert!(
        out.status.success(),
        "psycopg failed (is it installed? .ci/run installs it): {t}"
    );
    assert!(
        t.contains(&format!("{} still here", gw.login_role("alice"))),
        "{t}"
    );
}

const PSYCOPG_LATIN9: &str = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute("SET client_encoding TO 'LATIN9'")
    assert conn.info.encoding == "iso8859-15", conn.info.encoding
    cur = conn.cursor()
    # Simple protocol, several statements, text in LATIN9 both ways.
    cur.execute("INSERT INTO scratch (id, body) VALUES (900001, 'café €uro'); SELECT 1", prepare=False)
    cur.execute("SELECT body FROM scratch WHERE id = 900001 AND body = 'café €uro'")
    assert cur.fetchone()[0] == "café €uro"
    # Extended protocol, a parameter and a literal.
    cur.execute("SELECT %s || ' ñ'", ("ü",), prepare=True)
    assert cur.fetchone()[0] == "ü ñ"
    cur.execute("DELETE FROM scratch WHERE id = 900001")
    print("latin9 ok")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn latin9_text_goes_both_ways() {
    let gw = TestGateway::start().await;
    let (out, t) = python(PSYCOPG_LATIN9, &gw);
    assert!(out.status.success() && t.contains("latin9 ok"), "{t}");
}

#[tokio::test(flavor = "multi_thread")]
async fn encodings_no_parser_can_lex_are_refused_at_startup() {
    let gw = TestGateway::start().await;
    let out = tokio::task::block_in_place(|| {
        Command::new("psql")
            .args([
                "-X",
                "-c",
                "SELECT 1",
                &format!(
                    "host=127.0.0.1 port={} dbname=app user=alice",
                    gw.addr.port()
                ),
            ])
            .env("PGPASSWORD", ALICE_PW)
            .env("PGCLIENTENCODING", "SJIS")
            .output()
            .unwrap()
    });
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("cannot read statements in client_encoding"),
        "{t}"
    );
}
