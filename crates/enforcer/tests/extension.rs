//! Extensions: a grant extended while active lives to its *new* end, in the
//! gateway, in the database and in open transactions, whatever `on_expiry`
//! says; and no grant outlives its role's `max_total_duration`.

mod common;

use common::*;
use std::time::Duration;

/// In `mode`: alice holds a 3 s grant with a transaction open over its old
/// end; an extension approved before that end keeps everything going; at the
/// new end the role goes as usual.
async fn extension_carries_an_open_transaction(mode: &str, row: i32) {
    let j = Jitgate::start(&format!("on_expiry = \"{mode}\"\nexpiry_warning = \"1s\"")).await;
    let (alice, mut notices) = j.connect("alice").await;
    let id = j.request("alice", chrono::Duration::seconds(3)).await;
    let first = j.approve(id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    alice
        .batch_execute(&format!(
            "BEGIN; UPDATE orders SET total = -1 WHERE id = {row}"
        ))
        .await
        .unwrap();
    // The extension is filed while the grant is active: it continues it.
    let ext = j.request("alice", chrono::Duration::seconds(4)).await;
    let pending = j.pending().await;
    let r = pending.iter().find(|r| r.id == ext).unwrap();
    assert_eq!(r.extends_grant, Some(first.id));
    let extended = j.approve(ext, "bob").await;
    assert_eq!(extended.id, first.id, "the same grant, extended");
    assert_eq!(
        extended.expires_at,
        first.expires_at + chrono::Duration::seconds(4)
    );
    // Past the old end (plus margin): still a member, the transaction goes on.
    let old_end = first.expires_at;
    while chrono::Utc::now() < old_end + chrono::Duration::milliseconds(700) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(j.member("alice"), "{mode}: not revoked at the old end");
    alice
        .batch_execute(&format!(
            "UPDATE orders SET total = -2 WHERE id = {row}; COMMIT"
        ))
        .await
        .unwrap_or_else(|e| panic!("{mode}: transaction cut at the old end: {e}"));
    let total: i32 = alice
        .query_one(&format!("SELECT total FROM orders WHERE id = {row}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, -2);
    // Notices so far: at most the warning before the old end, never an end.
    while let Ok(n) = notices.try_recv() {
        assert!(!n.contains("has expired"), "{mode}: ended early: {n}");
    }
    // The warning comes again before the new end, then the end itself.
    alice
        .batch_execute(&format!(
            "BEGIN; UPDATE orders SET total = -3 WHERE id = {row}"
        ))
        .await
        .unwrap();
    let mut saw_warning = false;
    let ended = loop {
        let n = tokio::time::timeout(Duration::from_secs(8), notices.recv())
            .await
            .expect("a notice before the new end");
        match n {
            Some(n) if n.contains("ends in") => saw_warning = true,
            Some(n) if n.contains("has expired") => break Some(n),
            Some(_) => {}
            // terminate: the session may close before the notice is read
            None if mode == "terminate" => break None,
            None => panic!("{mode}: session closed"),
        }
    };
    assert!(saw_warning, "{mode}: warned before the new end");
    if let Some(ended) = ended {
        assert!(ended.contains(&format!("grant {}", first.id)), "{ended}");
    }
    assert!(chrono::Utc::now() >= extended.expires_at);
    assert!(j.until(Duration::from_secs(2), || !j.member("alice")).await);
    // The transaction that used the role at the new end does not commit.
    match mode {
        "terminate" => {
            assert!(j.until(Duration::from_secs(3), || alice.is_closed()).await)
        }
        _ => {
            assert!(alice.batch_execute("COMMIT").await.is_err());
            alice.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    cluster()
        .psql(
            "app",
            &format!("UPDATE orders SET total = {row} WHERE id = {row}"),
        )
        .unwrap();
    let audit = j.audit_kinds().await;
    let removed: Vec<_> = audit
        .iter()
        .filter(|(k, _, _)| k == "grant.removed")
        .collect();
    assert_eq!(removed.len(), 1, "{mode}: the role was removed once");
    j.stop().await;
}

#[tokio::test]
async fn extension_in_cancel_mode() {
    extension_carries_an_open_transaction("cancel", 101).await;
}

#[tokio::test]
async fn extension_in_terminate_mode() {
    extension_carries_an_open_transaction("terminate", 102).await;
}

#[tokio::test]
async fn extension_in_finish_statement_mode() {
    extension_carries_an_open_transaction("finish_statement", 103).await;
}

#[tokio::test]
async fn extensions_stop_at_max_total_duration() {
    // max_duration 1h, so max_total_duration defaults to 4h.
    let j = Jitgate::start("").await;
    let id = j.request("alice", chrono::Duration::minutes(60)).await;
    let g = j.approve(id, "bob").await;
    for _ in 0..3 {
        let ext = j.request("alice", chrono::Duration::minutes(60)).await;
        j.approve(ext, "bob").await;
    }
    let err = store::service::file(
        &*j.store,
        &j.policy,
        "alice",
        "app_write",
        "app",
        "more",
        Some(chrono::Duration::minutes(1)),
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_total_duration") && err.contains(&format!("grant {}", g.id)),
        "{err}"
    );
    let now = j.store.grant(g.id).await.unwrap().unwrap().value;
    assert_eq!(now.expires_at, g.starts_at + chrono::Duration::hours(4));
    j.stop().await;
}
