//! Hostile and broken clients: each gets a clear error or a closed connection,
//! the gateway never panics, and other sessions carry on.

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::raw::{self, error_fields, tags, Raw};

/// Small limits and short timeouts so the tests are quick.
async fn strict_gateway() -> TestGateway {
    cluster();
    let g = "max_query_bytes = 4096\nmax_message_bytes = 65536\nmessage_timeout = \"1s\"\nstartup_timeout = \"1s\"";
    TestGateway::start_with(&config_text(g, ""), Arc::new(proxy::AllowAll)).await
}

/// A bystander session opened before the abuse must still work after it.
async fn bystander(gw: &TestGateway) -> tokio_postgres::Client {
    let c = gw.connect("bob", BOB_PW).await.unwrap();
    c.query_one("SELECT 1", &[]).await.unwrap();
    c
}

async fn still_fine(gw: &TestGateway, c: &tokio_postgres::Client) {
    assert_eq!(
        c.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
    let fresh = gw.alice().await;
    assert_eq!(
        fresh
            .query_one("SELECT 3", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        3
    );
}

/// Sends `bytes` on a fresh connection; returns what came back until close.
async fn before_login(gw: &TestGateway, bytes: &[u8]) -> Vec<(u8, bytes::Bytes)> {
    let mut r = Raw::connect(gw.addr).await;
    let _ = r.try_send(bytes).await;
    r.until_closed().await
}

fn assert_fatal(msgs: &[(u8, bytes::Bytes)], code: &str) {
    let last = msgs
        .last()
        .unwrap_or_else(|| panic!("no error before close"));
    assert_eq!(last.0, b'E', "got {}", tags(msgs));
    assert!(last.1.starts_with(b"SFATAL\0"), "not FATAL");
    assert_eq!(error_fields(&last.1).0, code);
}

#[tokio::test]
async fn garbage_startup_packets() {
    let gw = strict_gateway().await;
    let by = bystander(&gw).await;
    assert_fatal(
        &before_login(&gw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "08P01",
    );
    assert_fatal(&before_login(&gw, &[0xff, 0xff, 0xff, 0xff]).await, "08P01");
    assert_fatal(&before_login(&gw, &[0, 0, 0, 3]).await, "08P01");
    assert_fatal(
        &before_login(&gw, &raw::with_len(&[0, 9, 9, 9, 1, 2])).await,
        "08P01",
    );
    // Protocol 2.0.
    assert_fatal(
        &before_login(&gw, &raw::startup_packet(&[("user", "alice")], 2 << 16)).await,
        "08P01",
    );
    // Unterminated parameter list.
    let mut p = raw::startup_packet(&[("user", "alice")], 3 << 16);
    p.pop();
    let len = (p.len() as i32).to_be_bytes();
    p[..4].copy_from_slice(&len);
    assert_fatal(&before_login(&gw, &p).await, "08P01");
    // No user.
    assert_fatal(
        &before_login(&gw, &raw::startup_packet(&[("database", "app")], 3 << 16)).await,
        "28000",
    );
    still_fine(&gw, &by).await;
}

#[tokio::test]
async fn truncated_startup_and_vanishing_clients() {
    let gw = strict_gateway().await;
    let by = bystander(&gw).await;
    for cut in [1, 3, 7, 12] {
        let p = raw::startup_packet(&[("user", "alice"), ("database", "app")], 3 << 16);
        let mut r = Raw::connect(gw.addr).await;
        r.send(&p[..cut]).await;
        drop(r); // vanishes mid-packet
    }
    // Vanishes in the middle of SCRAM.
    let mut r = Raw::connect(gw.addr).await;
    r.send(&raw::startup_packet(
        &[("user", "alice"), ("database", "app")],
        3 << 16,
    ))
    .await;
    assert_eq!(r.recv().await.unwrap().0, b'R');
    drop(r);
    // Vanishes while its query runs.
    let mut r = Raw::login(gw.addr, "alice", ALICE_PW).await;
    r.send(&raw::query("SELECT pg_sleep(0.5)")).await;
    drop(r);
    still_fine(&gw, &by).await;
}

#[tokio::test]
async fn a_stalled_startup_is_dropped_after_startup_timeout() {
    let gw = strict_gateway().await;
    let by = bystander(&gw).await;
    let p = raw::startup_packet(&[("user", "alice"), ("database", "app")], 3 << 16);
    let mut r = Raw::connect(gw.addr).await;
    r.send(&p[..10]).await;
    let t = Instant::now();
    let got = r.until_closed().await;
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_fatal(&got, "08P01");
    still_fine(&gw, &by).await;
}

#[tokio::test]
async fn malformed_sasl_messages() {
    let gw = strict_gateway().await;
    let by = bystander(&gw).await;
    let start = raw::startup_packet(&[("user", "alice"), ("database", "app")], 3 << 16);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (raw::query("SELECT 1"), "08P01"), // not a SASL message
        (raw::msg(b'p', b"SCRAM-SHA-256\0\0\0\0\x05abc"), "08P01"), // data shorter than declared
        (raw::msg(b'p', b"MD5\0\xff\xff\xff\xff"), "28000"), // unsupported mechanism
        (raw::msg(b'p', b"SCRAM-SHA-256\0\0\0\0\x03n,,"), "08P01"), // truncated client-first
        (raw::msg(b'p', &[b'x'; 9000]), "08P01"), // oversized
    ];
    for (bad, code) in cases {
        let mut r = Raw::connect(gw.addr).await;
        r.send(&start).await;
        assert_eq!(r.recv().await.unwrap().0, b'R');
        let _ = r.try_send(&bad).await;
        assert_fatal(&r.until_closed().await, code);
    }
    still_fine(&gw, &by).await;
}

#[tokio::test]
async fn oversized_and_impossible_messages_after_login() {
    let gw = strict_gateway().await;
    let by = bystander(&gw).await;
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (raw::query(&"x".repeat(5000)), "54000"), // over max_query_bytes
        (vec![b'd', 0x7f, 0xff, 0xff, 0xff], "08P01"), // over max_message_bytes
        (vec![b'Q', 0, 0, 0, 2], "08P01"),        // length below 4
        (vec![b'Q', 0xff, 0xff, 0xff, 0xf0], "08P01"), // negative length
        (raw::msg(b'Y', b"hello"), "08P01"),      // unknown type
        (raw::msg(b'Q', b"SELECT 1"), "08P01"),   // unterminated string
        (raw::msg(b'P', b"s\0SELECT 1\0\0\x09"), "08P01"), // lying parameter count
    ];
    cases.push((raw::msg(b'p', b"password\0"), "08P01")); // startup-only message
    for (bad, code) in cases {
        let mut r = Raw::login(gw.addr, "alice", ALICE_PW).await;
        r.send(&bad).await;
        let got = r.until_closed().await;
        assert_fatal(&got, code);
    }
    still_fine(&gw, &by).await;
}

#[tokio::test]
async fn a_client_stalling_mid_message_is_dropped_after_message_timeout() {
    let gw = strict_gateway().await;
    let by = bystander(&gw).await;
    let mut r = Raw::login(gw.addr, "alice", ALICE_PW).await;
    let q = raw::query("SELECT 'this message never finishes'");
    r.send(&q[..12]).await;
    let t = Instant::now();
    let got = r.until_closed().await;
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5));
    assert_fatal(&got, "08P01");
    // An idle client (between messages) is not a stalled one.
    let mut idle = Raw::login(gw.addr, "alice", ALICE_PW).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    idle.send(&raw::query("SELECT 1")).await;
    assert_eq!(tags(&idle.until_ready().await), "TDCZ");
    still_fine(&gw, &by).await;
}

#[tokio::test]
async fn many_abusive_clients_at_once_do_not_disturb_others() {
    let gw = strict_gateway().await;
    let by = bystander(&gw).await;
    let abuse = (0..40).map(|i| {
        let addr = gw.addr;
        async move {
            let mut r = Raw::connect(addr).await;
            let junk: Vec<u8> = (0..(i * 37 % 200 + 1))
                .map(|j| (i * 31 + j * 7) as u8)
                .collect();
            let _ = r.try_send(&junk).await;
            let _ = r.recv_within(Duration::from_secs(3)).await;
        }
    });
    let work = async {
        for _ in 0..20 {
            by.query_one("SELECT 1", &[]).await.unwrap();
        }
    };
    tokio::join!(futures_util::future::join_all(abuse), work);
    still_fine(&gw, &by).await;
}
