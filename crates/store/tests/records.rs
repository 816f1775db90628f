//! What sign-in keeps in the store, on both backends: API tokens (stored by
//! hash, revocable) and records (expiring named values: taken once, claimed
//! once).

use chrono::Duration;

#[macro_use]
mod common;
use common::*;

both!(tokens_are_stored_by_hash_and_revocable);
async fn tokens_are_stored_by_hash_and_revocable(kind: &str) {
    let (s, _b) = open(kind).await;
    s.insert_token("abc123", "alice", t0() + Duration::hours(1), vec![])
        .await
        .unwrap();
    let row = s.token("abc123").await.unwrap().unwrap();
    assert_eq!(row.user, "alice");
    assert!(!row.revoked);
    assert!(s.revoke_token("abc123", vec![]).await.unwrap());
    assert!(!s.revoke_token("abc123", vec![]).await.unwrap());
    assert!(s.token("abc123").await.unwrap().unwrap().revoked);
    assert!(s.token("nope").await.unwrap().is_none());
}

both!(records_expire_and_are_taken_once);
async fn records_expire_and_are_taken_once(kind: &str) {
    let (s, _b) = open(kind).await;
    let (now, later) = (t0(), t0() + Duration::minutes(10));
    s.put_record("sso-state:a", "one", now, later, vec![])
        .await
        .unwrap();
    s.put_record(
        "sso-state:b",
        "two",
        now,
        t0() + Duration::minutes(1),
        vec![],
    )
    .await
    .unwrap();
    s.put_record("identity:alice", "{}", now, later, vec![])
        .await
        .unwrap();
    assert_eq!(
        s.record("sso-state:a", now).await.unwrap().as_deref(),
        Some("one")
    );
    let listed = s.records("sso-state:", now).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Expired: invisible, and not taken.
    let after = t0() + Duration::minutes(2);
    assert_eq!(s.record("sso-state:b", after).await.unwrap(), None);
    assert_eq!(s.take_record("sso-state:b", after).await.unwrap(), None);
    // Taken once, by one of two concurrent takers.
    let (x, y) = tokio::join!(
        s.take_record("sso-state:a", now),
        s.take_record("sso-state:a", now)
    );
    let got: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
    assert_eq!(got, ["one"]);
    // Replacing keeps one value; a write drops what expired by its `now`.
    s.put_record("identity:alice", "{\"v\":2}", now, later, vec![])
        .await
        .unwrap();
    assert_eq!(
        s.records("identity:", now).await.unwrap(),
        [("identity:alice".to_string(), "{\"v\":2}".to_string())]
    );
    s.put_record(
        "x",
        "y",
        t0() + Duration::minutes(20),
        t0() + Duration::minutes(30),
        vec![],
    )
    .await
    .unwrap();
    assert!(s
        .records("", t0())
        .await
        .unwrap()
        .iter()
        .all(|(k, _)| k == "x"));
}

both!(a_record_is_claimed_once);
async fn a_record_is_claimed_once(kind: &str) {
    let (s, _b) = open(kind).await;
    let (now, kept) = (t0(), t0() + Duration::days(1));
    let claims = (0..8).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            s.claim_record("name:alice", &format!("subject {i}"), now, kept)
                .await
        })
    });
    let mut won = Vec::new();
    for c in claims {
        if c.await.unwrap().unwrap().is_none() {
            won.push(());
        }
    }
    assert_eq!(won.len(), 1, "exactly one claim wins");
    let owner = s.record("name:alice", now).await.unwrap().unwrap();
    assert_eq!(
        s.claim_record("name:alice", "someone else", now, kept)
            .await
            .unwrap()
            .as_deref(),
        Some(owner.as_str())
    );
    // An expired claim can be made again.
    let later = kept + Duration::seconds(1);
    assert_eq!(
        s.claim_record("name:alice", "new", later, later + Duration::days(1))
            .await
            .unwrap(),
        None
    );
}
