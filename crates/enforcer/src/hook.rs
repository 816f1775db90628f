//! The policy hook: what the gateway asks about every statement.
//!
//! The hot path is synchronous and allocation-free for the common case: a
//! cache lookup for the classification, a read of the in-memory grant table,
//! and the rules. Only a statement that needs something it does not have
//! becomes a deferred answer ([`Check::Wait`]): filing its request in the
//! store, and in `hold` mode waiting for the decision (see [`crate::filing`]).
//!
//! Fail closed: text the parser cannot read, identity changes, `deny` rules
//! and the privilege guard's refusals happen here, before the database sees
//! them. A statement whose effect the gateway cannot see counts as touching
//! whatever the rules cover (`policy::rules`); what no rule reserves goes to
//! PostgreSQL, which decides.

use crate::audit::{AuditSink, StatementRecord};
use crate::cache::{Cache, Classified};
use crate::grants::GrantTable;
use crate::reading::IDENTITY_REFUSAL;
use crate::texts::{fast_path_sql, statement_text};
use config::Config;
use policy::catalog::Builtins;
use policy::classify::{classify, Action, ActionKind, PreparedOp};
use policy::privilege::ManagedObjects;
use policy::rules::{Rules, Verdict as RuleVerdict};
use policy::{Clock, Policy, Time};
use proxy::{Check, Session, Statement, StatementHook, Verdict};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use store::Kind;
use store::{AuditEvent, Store};
use wire::backend::ErrorFields;

/// Everything the hook and the requests it files share.
pub struct HookState {
    pub config: Arc<Config>,
    pub policy: Arc<Policy>,
    pub rules: Rules,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub grants: Arc<GrantTable>,
    pub audit: AuditSink,
    /// Poked when a request is filed or a statement grant used (the enforcer listens).
    pub changed: Arc<store::Changes>,
    builtins: RwLock<HashMap<String, Arc<Builtins>>>,
    builtins_generation: std::sync::atomic::AtomicU64,
    /// Per database: what managed roles own (refreshed by the reconciler).
    pub managed_objects: RwLock<HashMap<String, Arc<ManagedObjects>>>,
    /// Set when something asks for a reconcile before the next interval.
    pub reconcile_requested: AtomicBool,
    /// Privileges changed through the gateway: which rules the database
    /// backs must be checked again at that reconcile.
    pub backing_stale: AtomicBool,
    /// The gateway serving with this hook (set once it is bound), for looks
    /// into the databases when PostgreSQL refuses something.
    pub gateway: std::sync::OnceLock<std::sync::Weak<proxy::Shared>>,
    /// One look into the catalog for a refused statement at a time: the admin
    /// connection also carries GRANT and REVOKE, which a flood of permission
    /// errors must not hold up (the others get the server's error as is).
    pub explaining: tokio::sync::Semaphore,
    /// What those looks found (see [`crate::denied::Looks`]).
    pub looks: crate::denied::Looks,
    alerts: crate::alerts::Alerts,
    cache: Cache,
    baseline: HashMap<String, BTreeSet<String>>,
}

impl HookState {
    pub fn new(
        config: Arc<Config>,
        policy: Arc<Policy>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        grants: Arc<GrantTable>,
        audit: AuditSink,
        changed: Arc<store::Changes>,
    ) -> HookState {
        let baseline = config
            .databases
            .iter()
            .map(|d| (d.name.clone(), d.baseline_roles.iter().cloned().collect()))
            .collect();
        HookState {
            rules: Rules::from_config(&config),
            alerts: crate::alerts::Alerts::new(&config.gateway),
            config,
            policy,
            store,
            clock,
            grants,
            audit,
            changed,
            builtins: RwLock::new(HashMap::new()),
            builtins_generation: std::sync::atomic::AtomicU64::new(1),
            managed_objects: RwLock::new(HashMap::new()),
            reconcile_requested: AtomicBool::new(false),
            backing_stale: AtomicBool::new(false),
            gateway: std::sync::OnceLock::new(),
            explaining: tokio::sync::Semaphore::new(1),
            looks: Default::default(),
            cache: Cache::new(10_000),
            baseline,
        }
    }

    pub fn gateway(&self) -> Option<Arc<proxy::Shared>> {
        self.gateway.get()?.upgrade()
    }

    pub(crate) fn builtins(&self, database: &str) -> Option<Arc<Builtins>> {
        self.builtins.read().unwrap().get(database).cloned()
    }

    /// Replaces `database`'s built-ins (a new catalog snapshot).
    pub fn set_builtins(&self, database: &str, b: Builtins) {
        self.builtins
            .write()
            .unwrap()
            .insert(database.to_string(), Arc::new(b));
        self.builtins_changed();
    }

    /// Memos of "runs user code" made before this are stale.
    fn builtins_changed(&self) {
        self.builtins_generation.fetch_add(1, Relaxed);
    }

    /// Which snapshot of `database`'s built-ins is current (never 0).
    fn builtins_stamp(&self, database: &str) -> u64 {
        let index = self
            .config
            .databases
            .iter()
            .position(|d| d.name == database)
            .unwrap_or(63) as u64;
        self.builtins_generation.load(Relaxed) * 64 + (index % 64) + 1
    }

    /// The classification of `statement`, with calls of functions that are not
    /// built in raised to `call` (all functions count as such while the
    /// database's built-ins are unknown: fail closed).
    pub fn classify(&self, database: &str, statement: Statement<'_>) -> Classified {
        match statement {
            Statement::Simple(text) | Statement::Parse(text) => {
                let masked = crate::cache::mask_numbers(text);
                let mut c = self
                    .cache
                    .get_or(masked.as_deref().unwrap_or(text), |t| Arc::new(classify(t)));
                if c.is_err() && masked.is_some() {
                    c = Arc::new(classify(text));
                }
                // Only statements that call functions or use operators or
                // casts need the built-ins.
                let Ok(a) = &*c else { return c };
                if a.opaque
                    || (a.functions.is_empty() && a.operators.is_empty() && a.types.is_empty())
                {
                    return c;
                }
                // Looked up once per catalog snapshot and database.
                let stamp = self.builtins_stamp(database);
                if a.user_code.get(stamp) == Some(false) {
                    return c;
                }
                // Unknown built-ins (not read yet): everything is user code.
                let none = Builtins::default();
                let builtins = self.builtins(database);
                let b = builtins.as_deref().unwrap_or(&none);
                let runs = a.runs_user_code(b);
                a.user_code.set(stamp, runs);
                if runs {
                    return Arc::new(Ok(a.clone().with_calls(b)));
                }
                c
            }
            // Judged as `SELECT pg_catalog.fn(args)` with the arguments it
            // carries; a function that is not built in is opaque.
            Statement::FunctionCall(oid, args) => {
                let builtins = self.builtins(database);
                match builtins.as_ref().and_then(|b| b.by_oid.get(&oid)) {
                    Some(name) => Arc::new(classify(&fast_path_sql(name, args))),
                    None => Arc::new(Ok(Action::function_call(None))),
                }
            }
            // Judged by its values (see `PolicyHook::check`), never classified.
            Statement::Bind { text, .. } => self.classify(database, Statement::Parse(text)),
        }
    }

    pub fn refusal(&self, message: impl Into<String>) -> ErrorFields {
        ErrorFields::error("42501", message)
    }

    /// Refusals that hold whatever the rules say: objects or default
    /// privileges handed to a managed role, and role and privilege management
    /// that would outlive a grant or reach past the login role.
    fn privilege_refusal(&self, s: &Session, action: &Action) -> Option<PrivilegeRefusal> {
        if let Some(role) = action.owners.iter().find(|r| self.policy.role(r).is_some()) {
            return Some(PrivilegeRefusal {
                message: format!(
                    "jitgate refuses handing objects or default privileges to managed role \
                     \"{role}\": its rights would outlive any grant"
                ),
                role: Some(role.clone()),
            });
        }
        if action.privileges.is_empty() {
            return None;
        }
        let prefix = &self.config.gateway.login_role_prefix;
        let owned = self
            .managed_objects
            .read()
            .unwrap()
            .get(&s.database)
            .cloned();
        let why = policy::privilege::guard(
            &action.privileges,
            &policy::privilege::Session {
                is_managed: &|n| self.policy.role(n).is_some(),
                is_login_role: &|n| n.starts_with(prefix.as_str()),
                in_force: self.grants.may_hold(&s.user, &s.database),
                // Not known yet: every object may be a managed role's.
                managed_may_own: &|o| owned.as_ref().is_none_or(|m| m.may_own(o)),
            },
        )?;
        Some(PrivilegeRefusal {
            message: why,
            role: None,
        })
    }

    /// Audits and returns a refusal.
    pub fn refuse(
        &self,
        s: &Session,
        text: &str,
        action: &str,
        role: Option<&str>,
        error: ErrorFields,
        alert: bool,
    ) -> ErrorFields {
        let redact = self.config.gateway.redact_literals;
        self.refuse_with(s, text, action, role, error, alert, redact)
    }

    /// [`Self::refuse`], redacting the text's literals when `redact`.
    #[allow(clippy::too_many_arguments)]
    fn refuse_with(
        &self,
        s: &Session,
        text: &str,
        action: &str,
        role: Option<&str>,
        error: ErrorFields,
        alert: bool,
        redact: bool,
    ) -> ErrorFields {
        let record = StatementRecord {
            session: s.id,
            user: &s.user,
            database: &s.database,
            text,
            role,
            grant: None,
            kind: action,
            idp: self.idp(&s.user),
        };
        let now = self.clock.now();
        self.audit
            .refused(now, &record, &error.message, alert, redact);
        error
    }

    /// `{"provider", "issuer", "subject"}` of a user from an identity
    /// provider, for their statement records.
    fn idp(&self, user: &str) -> Option<serde_json::Value> {
        self.policy.idp(user).map(|i| serde_json::json!(i))
    }

    /// Notes and audits a statement let through by a grant. The record is
    /// written ahead: let the statement go only once the returned receiver
    /// answers (see [`written_ahead`]).
    pub fn ran_under_grant(
        &self,
        s: &Session,
        text: &str,
        action: &str,
        role: &str,
        grant: i64,
    ) -> Recorded {
        {
            let mut notes = s.notes.lock().unwrap();
            if !notes.roles_in_transaction.contains(role) {
                notes.roles_in_transaction.insert(role.to_string());
            }
            if !notes.roles_used.contains(role) {
                notes.roles_used.insert(role.to_string());
            }
        }
        let record = StatementRecord {
            session: s.id,
            user: &s.user,
            database: &s.database,
            text,
            role: Some(role),
            grant: Some(grant),
            kind: action,
            idp: self.idp(&s.user),
        };
        let now = self.clock.now();
        let recorded = self
            .audit
            .ran(now, &record, self.config.gateway.redact_literals);
        if self.alerts.off_hours_use(grant, now) {
            self.audit.send(
                AuditEvent::new(
                    now,
                    Kind::AlertOffHours,
                    &s.user,
                    format!("grant:{grant}"),
                    json!({"role": role, "database": s.database, "session": s.id,
                           "working_hours": self.config.gateway.working_hours}),
                )
                .alert(),
            );
        }
        recorded
    }

    /// The rules' verdict for a user holding the database's baseline roles
    /// and `granted` (no allocation when nothing is granted: the common case).
    fn decide(&self, s: &Session, action: &Action, granted: &BTreeSet<String>) -> RuleVerdict {
        static NONE: BTreeSet<String> = BTreeSet::new();
        let baseline = self.baseline.get(&s.database).unwrap_or(&NONE);
        if granted.is_empty() {
            return self.rules.decide(&s.database, action, baseline);
        }
        let mut held = baseline.clone();
        held.extend(granted.iter().cloned());
        self.rules.decide(&s.database, action, &held)
    }

    fn granted(&self, s: &Session, now: Time) -> BTreeSet<String> {
        if self.grants.has_any(&s.user, &s.database) {
            self.grants.roles(&s.user, &s.database, now)
        } else {
            BTreeSet::new()
        }
    }
}

/// The answer of the audit writer for one written-ahead record.
pub type Recorded = tokio::sync::oneshot::Receiver<bool>;

/// How long a privileged statement waits for its audit record before it is
/// refused (a store that stalls rather than fails).
const AUDIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Allows once every record is durable; refuses (fail closed) if the store
/// fails or does not answer within [`AUDIT_WAIT`].
pub async fn written_ahead(records: Vec<Recorded>) -> Verdict {
    let all = async {
        for r in records {
            if !r.await.unwrap_or(false) {
                return false;
            }
        }
        true
    };
    match tokio::time::timeout(AUDIT_WAIT, all).await {
        Ok(true) => Verdict::Allow,
        _ => Verdict::Refuse(
            ErrorFields::error("57P03", crate::audit::UNRECORDED)
                .with_hint("try again shortly; the audit log's failure is in the gateway's log"),
        ),
    }
}

struct PrivilegeRefusal {
    message: String,
    role: Option<String>,
}

impl PrivilegeRefusal {
    /// Audited as an alert; role management is recorded without its literals
    /// (`ALTER ROLE ... PASSWORD '...'` carries a secret).
    fn refuse(self, st: &HookState, s: &Session, text: &str, action: &Action) -> ErrorFields {
        let redact =
            st.config.gateway.redact_literals || !action.privileges.role_management.is_empty();
        let err = st.refusal(self.message);
        st.refuse_with(
            s,
            text,
            action.kind.as_str(),
            self.role.as_deref(),
            err,
            true,
            redact,
        )
    }
}

const HOLDABLE_REFUSAL: &str = "jitgate refuses WITH HOLD cursors that need a granted role: \
                                their rows would outlive the grant";

/// The [`StatementHook`] of `jitgate serve`.
pub struct PolicyHook {
    pub state: Arc<HookState>,
}

impl StatementHook for PolicyHook {
    fn explain_denied(
        &self,
        session: &Arc<Session>,
        denied: proxy::Denied<'_>,
    ) -> Option<proxy::hook::ExplainFuture> {
        crate::denied::object_of(denied.message)?;
        let refused = crate::denied::Refused {
            message: denied.message.to_string(),
            statement: denied.statement.map(str::to_string),
            rerunnable: denied.rerunnable,
        };
        Some(Box::pin(crate::denied::explain(
            self.state.clone(),
            session.clone(),
            refused,
        )))
    }

    fn unreadable_session(&self, session: &Arc<Session>, setting: &str, value: &str) {
        let st = &self.state;
        tracing::warn!(user = %session.user, database = %session.database, setting, value,
            "ending a session the database put under a setting the gateway cannot read under");
        st.audit.send(
            AuditEvent::new(
                st.clock.now(),
                Kind::AlertUnreadableSession,
                &session.user,
                format!("user:{}", session.user),
                json!({"database": session.database, "session": session.id,
                       "setting": setting, "value": value}),
            )
            .alert(),
        );
    }

    fn runs_again(&self, _session: &Arc<Session>) -> bool {
        self.state.config.gateway.on_missing_grant == config::OnMissingGrant::Hold
    }

    fn check(&self, session: &Arc<Session>, statement: Statement<'_>) -> Check {
        let st = &self.state;
        if let Statement::Bind { text, values } = statement {
            return self.check_bind(session, text, values);
        }
        if let Some(refused) = self.unreadable(session, statement) {
            return refused;
        }
        let classified = st.classify(&session.database, statement);
        let action = match &*classified {
            Ok(a) => a,
            // PostgreSQL's own answer, without the text reaching it.
            Err(e) if e.syntax.is_some() => {
                let syntax = e.syntax.as_ref().expect("checked");
                return Check::Refuse(
                    ErrorFields::error("42601", syntax.message.clone())
                        .with_position(syntax.position),
                );
            }
            Err(e) => {
                let mut text = statement_text(statement, None);
                // Unreadable, so literals cannot be told apart: a text that
                // may carry a password is not recorded.
                if text.to_ascii_lowercase().contains("password") {
                    text = "<unreadable statement mentioning a password: not recorded>".into();
                }
                let err = st.refusal(format!(
                    "jitgate refuses statements its parser cannot read ({e})"
                ));
                return Check::Refuse(st.refuse(session, &text, "unknown", None, err, true));
            }
        };
        if let Some(refused) = self.lexical_settings(session, statement, action) {
            return refused;
        }
        if action.may_change_lexing {
            session.mark_lexing_change();
        }
        if !action.identity_params.is_empty() {
            match statement {
                // Decided at each Bind, by the values.
                Statement::Parse(_) => session.check_binds(),
                _ => {
                    let text = statement_text(statement, Some(action));
                    let err = st.refusal(format!("jitgate: {IDENTITY_REFUSAL}"));
                    return Check::Refuse(st.refuse(session, &text, "session", None, err, true));
                }
            }
        }
        if let Some(reason) = &action.sets_reason {
            session.notes.lock().unwrap().reason = Some(reason.clone());
        }
        if let Some(err) = st.privilege_refusal(session, action) {
            let text = statement_text(statement, Some(action));
            return Check::Refuse(err.refuse(st, session, &text, action));
        }
        // SQL-level prepared statements: EXECUTE is judged as what was prepared.
        let stored;
        let action = match &action.prepared {
            Some(PreparedOp::Execute(name)) => {
                stored = session.notes.lock().unwrap().prepared.get(name).cloned();
                match stored.as_deref() {
                    Some(prepared) => prepared,
                    None => action, // unknown: refused unless a rule allows it
                }
            }
            Some(PreparedOp::Prepare(name))
                if session.notes.lock().unwrap().prepared.contains_key(name) =>
            {
                // PostgreSQL refuses it too; one name, one meaning.
                return Check::Refuse(ErrorFields::error(
                    "42P05",
                    format!("prepared statement \"{name}\" already exists"),
                ));
            }
            _ => action,
        };
        if matches!(action.kind, ActionKind::Ddl | ActionKind::Privilege) {
            // Who may do what is changing: earlier looks may be stale.
            st.looks.invalidate();
        }
        if action.kind == ActionKind::Privilege || !action.privileges.is_empty() {
            // A GRANT may leave a rule unbacked: until checked again, none
            // of this database's rules counts as backed.
            st.rules.unback(&session.database);
            st.backing_stale.store(true, Relaxed);
            st.reconcile_requested.store(true, Relaxed);
            st.changed.changed();
        }
        if !action.defines.is_empty() {
            // A function, operator or type it creates may take a built-in's
            // name: until the next catalog snapshot, that name is user code.
            if let Some(b) = st.builtins(&session.database) {
                action.defines.iter().for_each(|n| b.shadow(n));
                st.builtins_changed();
            }
        }
        let check = self.verdict(session, statement, action);
        if action.prepared.is_none() {
            return check;
        }
        // Names are noted only once the statement is let through.
        match check {
            Check::Allow => {
                note_prepared(session, action);
                Check::Allow
            }
            Check::Wait(answer) => {
                let (s, a) = (session.clone(), action.clone());
                Check::Wait(Box::pin(async move {
                    let v = answer.await;
                    if v == Verdict::Allow {
                        note_prepared(&s, &a);
                    }
                    v
                }))
            }
            refused => refused,
        }
    }
}

/// What a `PREPARE`, `DEALLOCATE` or `DISCARD ALL` let through does to the
/// session's SQL-level prepared statements.
fn note_prepared(session: &Session, action: &Action) {
    let mut notes = session.notes.lock().unwrap();
    match &action.prepared {
        Some(PreparedOp::Prepare(name)) => {
            notes
                .prepared
                .insert(name.clone(), Arc::new(action.clone()));
        }
        Some(PreparedOp::Deallocate(Some(name))) => {
            notes.prepared.remove(name);
        }
        Some(PreparedOp::Deallocate(None)) => notes.prepared.clear(),
        _ => {}
    }
}

impl PolicyHook {
    /// The rules' answer for `action`, with grants, filing and holding.
    pub(crate) fn verdict(
        &self,
        session: &Arc<Session>,
        statement: Statement<'_>,
        action: &Action,
    ) -> Check {
        let st = &self.state;
        let now = st.clock.now();
        let granted = st.granted(session, now);
        match st.decide(session, action, &granted) {
            RuleVerdict::Allow if granted.is_empty() => Check::Allow,
            RuleVerdict::Allow => {
                let lent: Vec<&str> = st
                    .rules
                    .roles_needed(&session.database, action)
                    .into_iter()
                    .filter(|r| granted.contains(*r))
                    .collect();
                if lent.is_empty() {
                    return Check::Allow;
                }
                if let Statement::Parse(_) = statement {
                    // Parsing runs nothing: each Bind is judged (and
                    // recorded) with the grants in force then.
                    session.check_binds();
                    return Check::Allow;
                }
                let text = statement_text(statement, Some(action));
                if action.holdable_cursor {
                    let err = st.refusal(HOLDABLE_REFUSAL);
                    return Check::Refuse(st.refuse(
                        session,
                        &text,
                        action.kind.as_str(),
                        Some(lent[0]),
                        err,
                        true,
                    ));
                }
                let records: Vec<Recorded> = lent
                    .into_iter()
                    .filter_map(|role| {
                        let id =
                            st.grants
                                .role_grant(&session.user, &session.database, role, now)?;
                        Some(st.ran_under_grant(session, &text, action.kind.as_str(), role, id))
                    })
                    .collect();
                Check::Wait(Box::pin(written_ahead(records)))
            }
            RuleVerdict::Deny(why) => {
                let text = statement_text(statement, Some(action));
                let err = st.refusal(format!("jitgate: {why}"));
                Check::Refuse(st.refuse(session, &text, action.kind.as_str(), None, err, true))
            }
            RuleVerdict::NeedsRole(role) if action.holdable_cursor => {
                // Never allowed under a grant: filing a request would be a lie.
                let text = statement_text(statement, Some(action));
                let err = st.refusal(HOLDABLE_REFUSAL);
                Check::Refuse(st.refuse(
                    session,
                    &text,
                    action.kind.as_str(),
                    Some(&role),
                    err,
                    true,
                ))
            }
            RuleVerdict::NeedsRole(role) => {
                let text = statement_text(statement, Some(action));
                crate::filing::missing_grant(
                    st.clone(),
                    session.clone(),
                    text,
                    action.kind,
                    role,
                    false,
                )
            }
            RuleVerdict::ApproveEach(_) if matches!(statement, Statement::Parse(_)) => {
                // Approved with its values: decided at each Bind.
                session.check_binds();
                Check::Allow
            }
            RuleVerdict::ApproveEach(role) => {
                let text = statement_text(statement, Some(action));
                if let Some(g) =
                    st.grants
                        .take_statement(&session.user, &session.database, &text, now)
                {
                    let recorded =
                        st.ran_under_grant(session, &text, action.kind.as_str(), &role, g.id);
                    crate::filing::end_statement_grant_when_idle(st.clone(), session.clone(), g.id);
                    return Check::Wait(Box::pin(written_ahead(vec![recorded])));
                }
                crate::filing::missing_grant(
                    st.clone(),
                    session.clone(),
                    text,
                    action.kind,
                    role,
                    true,
                )
            }
        }
    }
}
