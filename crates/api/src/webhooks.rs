//! Webhooks: events pushed to where a team already looks.
//!
//! The outbox is the audit log itself. Each `[[webhook]]` has a durable cursor
//! in the store (the last audit sequence number it has dealt with); its
//! delivery task reads the events after it, turns the ones it subscribes to
//! into payloads, and POSTs them in order, retrying with backoff until the
//! receiver answers 2xx. The cursor moves only after a delivery succeeded, so
//! an event is never lost on restart (at least once; `X-Jitgate-Delivery` is
//! the event's sequence number, for receivers to de-duplicate). Deliveries run
//! in their own tasks: a slow or dead receiver never blocks a decision or a
//! statement, only the later deliveries to itself.
//!
//! A new webhook starts at the end of the log: it is not sent the history.

use config::{Webhook, WebhookFormat};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use store::{AuditRecord, Changes, Kind, Severity, Store};

/// The event a webhook receives for an audit record, if any.
pub fn event_name(r: &AuditRecord) -> Option<String> {
    let kind = r.event.kind.as_str();
    if r.event.severity == Severity::Alert {
        return Some(match kind.strip_prefix("alert.") {
            Some(_) => kind.to_string(),
            None => format!("alert.{}", kind.replace('.', "_")),
        });
    }
    let name = match Kind::parse(kind)? {
        Kind::RequestFiled
        | Kind::RequestEscalated
        | Kind::RequestApproved
        | Kind::RequestDenied
        | Kind::RequestExpired
        | Kind::RequestCancelled
        | Kind::GrantStarted
        | Kind::GrantEndingSoon => kind,
        Kind::GrantExpired | Kind::GrantRevoked | Kind::GrantRelinquished => "grant.ended",
        _ => return None,
    };
    Some(name.to_string())
}

/// `request.*`, `alert.drift`, `*`: a trailing `*` matches any rest.
pub fn matches(patterns: &[String], event: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => event.starts_with(prefix),
        None => p == event,
    })
}

/// The page a person should open for this event.
pub fn link(public_url: &str, subject: &str) -> String {
    match subject.split_once(':') {
        Some(("request", id)) => format!("{public_url}/ui/requests/{id}"),
        Some(("grant", _)) => format!("{public_url}/ui/grants"),
        _ => format!("{public_url}/ui/audit"),
    }
}

/// The body of one delivery.
pub fn payload(w: &Webhook, event: &str, r: &AuditRecord, public_url: &str) -> Value {
    let link = link(public_url, &r.event.subject);
    let mut text = crate::describe::line(r);
    if r.event.severity == Severity::Alert && !text.starts_with("ALERT") {
        // A refused statement, a failed sign-in: the page shows a badge; here, words.
        text = format!("ALERT {text}");
    }
    match w.format {
        WebhookFormat::Json => json!({
            "event": event, "id": r.seq, "at": r.event.at, "kind": r.event.kind,
            "severity": r.event.severity, "actor": r.event.actor,
            // The actor at their identity provider (provider, issuer, subject), if any.
            "actor_idp": r.event.detail["idp"], "subject": r.event.subject,
            "detail": r.event.detail, "text": text, "link": link,
        }),
        WebhookFormat::Slack => json!({ "text": format!("{text} <{link}|open in jitgate>") }),
    }
}

/// `sha256=<hex HMAC-SHA256 of the body with the webhook's secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Starts one delivery task per webhook, forever (abort the returned handles
/// to stop). Each webhook's starting point is settled before this returns, so
/// every event appended afterwards is delivered.
pub async fn start(
    store: Arc<dyn Store>,
    webhooks: Vec<Webhook>,
    public_url: String,
    changes: Arc<Changes>,
    leadership: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // reqwest's rustls needs a process-wide crypto provider (ring, as elsewhere).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let mut tasks = Vec::new();
    for w in webhooks {
        let d = Delivery {
            store: store.clone(),
            client: client.clone(),
            public_url: public_url.clone(),
            changes: changes.clone(),
            webhook: w,
            leadership: leadership.clone(),
        };
        tasks.push(tokio::spawn(d.run()));
    }
    tasks
}

struct Delivery {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    public_url: String,
    changes: Arc<Changes>,
    webhook: Webhook,
    /// Only the enforcing replica delivers: once per event across replicas.
    leadership: tokio::sync::watch::Receiver<bool>,
}

impl Delivery {
    fn cursor_name(&self) -> String {
        format!("webhook:{}", self.webhook.url)
    }

    /// Delivers while this replica leads; a new leader resumes at the stored
    /// cursor (an event whose delivery the old one did not record is sent
    /// again: receivers deduplicate by `x-jitgate-delivery`).
    async fn run(mut self) {
        loop {
            if self.leadership.wait_for(|leads| *leads).await.is_err() {
                return;
            }
            let cursor = loop {
                match self.start_cursor().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::warn!(url = %self.webhook.url, error = %e, "webhook cursor unavailable");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            self.deliver_while_leading(cursor).await;
        }
    }

    async fn deliver_while_leading(&mut self, mut cursor: i64) {
        let mut changes = self.changes.subscribe();
        while *self.leadership.borrow() {
            let batch = match self.store.audit_after(cursor, 100).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the audit log for webhooks");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = self.leadership.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            for r in &batch {
                if !*self.leadership.borrow() {
                    return;
                }
                if let Some(event) = event_name(r).filter(|e| matches(&self.webhook.events, e)) {
                    self.deliver(&event, r).await;
                }
                cursor = r.seq;
                self.save(cursor).await;
            }
        }
    }

    /// Where a webhook resumes: its saved cursor, or the end of the log when new.
    /// (Stored plus one, so that 0 means "never started", not "position 0".)
    async fn start_cursor(&self) -> Result<i64, store::StoreError> {
        let saved = self.store.cursor(&self.cursor_name()).await?;
        if saved > 0 {
            return Ok(saved - 1);
        }
        let last = self
            .store
            .audit(&store::AuditFilter {
                limit: Some(1),
                ..Default::default()
            })
            .await?
            .first()
            .map_or(0, |r| r.seq);
        self.save(last).await;
        Ok(last)
    }

    async fn save(&self, cursor: i64) {
        while let Err(e) = self.store.set_cursor(&self.cursor_name(), cursor + 1).await {
            tracing::warn!(error = %e, "saving a webhook cursor; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Delivers until the receiver accepts (2xx), backing off up to a minute.
    async fn deliver(&self, event: &str, r: &AuditRecord) {
        let body =
            serde_json::to_vec(&payload(&self.webhook, event, r, &self.public_url)).expect("JSON");
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1u32;
        loop {
            let mut req = self
                .client
                .post(&self.webhook.url)
                .header("content-type", "application/json")
                .header("x-jitgate-event", event)
                .header("x-jitgate-delivery", r.seq.to_string())
                .header("x-jitgate-attempt", attempt.to_string());
            if let Some(secret) = &self.webhook.secret {
                req = req.header("x-jitgate-signature", signature(secret, &body));
            }
            match req.body(body.clone()).send().await {
                Ok(resp) if resp.status().is_success() => return,
                Ok(resp) => {
                    tracing::warn!(url = %self.webhook.url, event, status = %resp.status(), attempt, "webhook refused; retrying")
                }
                Err(e) => {
                    tracing::warn!(url = %self.webhook.url, event, error = %e, attempt, "webhook unreachable; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(60));
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_signatures() {
        let p = vec!["request.*".to_string(), "alert.drift".to_string()];
        assert!(matches(&p, "request.filed"));
        assert!(matches(&p, "alert.drift"));
        assert!(!matches(&p, "alert.statement_refused"));
        assert!(!matches(&p, "grant.started"));
        assert!(matches(&["*".to_string()], "grant.started"));
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn alerts_say_so_in_words() {
        let text =
            "[gateway]\n[[webhook]]\nurl = \"https://h/x\"\nformat = \"slack\"\nevents = [\"*\"]\n";
        let w = &config::Config::from_toml(text).unwrap().webhooks[0];
        let record = |ev: store::AuditEvent| AuditRecord {
            seq: 7,
            event: ev,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let failed = record(
            store::AuditEvent::new(
                chrono::Utc::now(),
                Kind::AuthFailed,
                "bob",
                "user:bob".into(),
                json!({}),
            )
            .alert(),
        );
        let event = event_name(&failed).unwrap();
        assert_eq!(event, "alert.auth_failed");
        let body = payload(w, &event, &failed, "https://j");
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with("ALERT failed sign-in as bob"),
            "{body}"
        );
        let filed = record(store::AuditEvent::new(
            chrono::Utc::now(),
            Kind::RequestFiled,
            "alice",
            "request:1".into(),
            json!({"role": "r", "database": "d"}),
        ));
        let body = payload(w, "request.filed", &filed, "https://j");
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with("alice asks for r on d"),
            "{body}"
        );
    }

    #[test]
    fn deliveries_name_the_actor_at_their_provider() {
        let text =
            "[gateway]\n[[webhook]]\nurl = \"https://h/x\"\nsecret = \"s\"\nevents = [\"*\"]\n";
        let w = &config::Config::from_toml(text).unwrap().webhooks[0];
        let idp = json!({"provider": "corp", "issuer": "https://idp", "subject": "00u7"});
        let vote = AuditRecord {
            seq: 3,
            event: store::AuditEvent::new(
                chrono::Utc::now(),
                Kind::DecisionApprove,
                "bob",
                "request:1".into(),
                json!({"stage": 0, "comment": "", "idp": idp}),
            ),
            prev_hash: String::new(),
            hash: String::new(),
        };
        let body = payload(w, "decision.approve", &vote, "https://j");
        assert_eq!(body["actor"], "bob");
        assert_eq!(body["actor_idp"], idp);
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with("bob (00u7 at https://idp) approves"),
            "{body}"
        );
    }
}
