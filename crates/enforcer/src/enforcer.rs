//! The enforcer: makes the databases and the live sessions match the grants.
//!
//! One task, one loop (no races between its own steps). Each step:
//! 1. reads the active grants from the store;
//! 2. grants that ended (expired, revoked, relinquished): removed from the
//!    gateway's [`GrantTable`] first, then `REVOKE`d in the database (batched),
//!    then the sessions that used them are dealt with per `on_expiry`;
//! 3. new grants: `GRANT role TO login_role`, and only then published, so a
//!    statement let through never lacks the membership; the privilege guard
//!    treats the holder as holding the role from before that GRANT until a
//!    minute after the grant ends (`GrantTable::may_hold`), so nothing it
//!    guards slips through while the database and the table differ;
//! 4. warnings to sessions of grants ending within `expiry_warning`.
//!
//! It wakes when told something changed (a decision, a filed request), at the
//! next expiry or warning time to the millisecond, and at least once a second.
//! Every `reconcile_interval`, and before the gateway serves, memberships of
//! managed roles held by login roles without an active grant are revoked and
//! audited as drift (a gateway killed with -9, a DBA's manual GRANT).
//!
//! Replicas ([`store::Cluster`]): only the enforcing replica (the leader)
//! changes the databases — GRANT, REVOKE, drift, password rotation — and
//! writes the grant lifecycle's audit records. Every replica runs this loop
//! for its own gateway: it publishes a grant once the database shows its
//! membership (the leader's GRANT), withdraws it at `expires_at` by its own
//! clock, ends the role in its own sessions, warns them, and keeps its
//! catalog knowledge (built-ins, owned objects, backing) fresh.

use crate::database::{self, Membership};
use crate::grants::{ActiveGrant, GrantTable};
use crate::hook::HookState;
use policy::{GrantState, Time};
use proxy::Shared;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use store::Kind;
use store::{AuditEvent, GrantFilter};

mod sessions;

pub struct Enforcer {
    hook: Arc<HookState>,
    gateway: Arc<Shared>,
    cluster: Arc<store::Cluster>,
    /// Grants whose membership is in the database, by grant id.
    applied: HashMap<i64, ActiveGrant>,
    warned: HashSet<i64>,
    /// Per database: the unbacked rules last reported (reported again only
    /// when they change).
    unbacked: HashMap<String, Vec<String>>,
    /// When the rules were last compared with the databases.
    backing_checked: Option<tokio::time::Instant>,
    /// When each (user, database)'s last grant ended here: the privilege
    /// guard stays on for [`GUARD_AFTER_END`] after (the REVOKE, the
    /// leader's on another replica, or the reconciler's, may come later).
    ended_at: HashMap<crate::grants::Key, Time>,
}

/// How long after a grant's end its holder stays under the privilege guard.
const GUARD_AFTER_END: chrono::Duration = chrono::Duration::seconds(60);

/// How long a step waits for the store before ending grants by the clock alone.
const STORE_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("the state store did not answer within {STORE_WAIT:?}")]
    StoreTimeout,
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("database {database}: {source}")]
    Database {
        database: String,
        source: proxy::login_role::ProvisionError,
    },
}

impl Enforcer {
    pub fn new(
        hook: Arc<HookState>,
        gateway: Arc<Shared>,
        cluster: Arc<store::Cluster>,
    ) -> Enforcer {
        Enforcer {
            hook,
            gateway,
            cluster,
            applied: HashMap::new(),
            warned: HashSet::new(),
            ended_at: HashMap::new(),
            unbacked: HashMap::new(),
            backing_checked: None,
        }
    }

    fn grants(&self) -> &GrantTable {
        &self.hook.grants
    }

    /// Before serving: learn each database's built-in functions, apply the
    /// active grants and revoke every membership no grant backs. An error here
    /// stops the gateway from starting (fail closed).
    pub async fn prepare(&mut self) -> Result<(), EnforceError> {
        for db in &self.hook.config.databases {
            let admin = &self.gateway.databases[&db.name].admin;
            let b = database::builtins(admin)
                .await
                .map_err(|source| EnforceError::Database {
                    database: db.name.clone(),
                    source,
                })?;
            self.hook.set_builtins(&db.name, b);
        }
        let epoch = self.hook.store.credentials().await?;
        self.gateway.login_roles.credentials.set_epoch(epoch.number);
        self.fresh_passwords().await?;
        self.step().await?;
        self.reconcile().await
    }

    /// At every start each login role gets a password only this process
    /// knows (one someone set meanwhile stops working); a login role whose user
    /// is no longer configured gets none at all.
    async fn fresh_passwords(&self) -> Result<(), EnforceError> {
        let prefix = &self.hook.config.gateway.login_role_prefix;
        for db in &self.hook.config.databases {
            let admin = &self.gateway.databases[&db.name].admin;
            let err = |source| EnforceError::Database {
                database: db.name.clone(),
                source,
            };
            for login_role in database::login_roles(admin, prefix).await.map_err(err)? {
                let user = &login_role[prefix.len()..];
                if self.hook.config.user(user).is_some() {
                    // A role that cannot be used (say it has CREATEROLE now)
                    // is refused at the user's connection, with the reason;
                    // meanwhile nobody logs in with an old password (fail closed).
                    if let Err(e) = self.gateway.login_roles.ensure(&db.name, admin, user).await {
                        tracing::warn!(%login_role, error = %e, "cannot set a fresh password; taking the old one away");
                        if let Err(e) = database::disable_password(admin, &login_role).await {
                            tracing::error!(%login_role, error = %e, "cannot take the login role's password away");
                        }
                    }
                } else {
                    database::disable_password(admin, &login_role)
                        .await
                        .map_err(err)?;
                }
            }
        }
        Ok(())
    }

    /// Runs until `stop` completes.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let reconcile_every = self.hook.config.gateway.reconcile_interval;
        let mut next_reconcile = tokio::time::Instant::now() + reconcile_every;
        let mut leading = self.cluster.is_leader();
        loop {
            if let Err(e) = self.step().await {
                tracing::warn!(error = %e, "enforcer step failed; retrying");
            }
            let asked = self.hook.reconcile_requested.swap(false, Ordering::Relaxed);
            // A new leader first makes the databases match the store.
            let took_over = !leading && self.cluster.is_leader();
            leading = self.cluster.is_leader();
            if asked || took_over || tokio::time::Instant::now() >= next_reconcile {
                if let Err(e) = self.reconcile().await {
                    tracing::warn!(error = %e, "reconcile failed; retrying");
                }
                next_reconcile = tokio::time::Instant::now() + reconcile_every;
            }
            let wake = self.next_wake().min(next_reconcile);
            tokio::select! {
                _ = &mut stop => return,
                _ = self.hook.changed.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// The next expiry or warning, at most a second away.
    fn next_wake(&self) -> tokio::time::Instant {
        let now = self.hook.clock.now();
        let lead =
            chrono::Duration::from_std(self.hook.config.gateway.expiry_warning).unwrap_or_default();
        let mut next = now + chrono::Duration::seconds(1);
        for g in self.applied.values() {
            next = next.min(g.expires_at);
            if !self.warned.contains(&g.id) && g.expires_at - lead > now {
                next = next.min(g.expires_at - lead);
            }
        }
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + wait
    }

    /// The grants active in the store at `now`, by id.
    async fn active_in_store(&self, now: Time) -> Result<HashMap<i64, ActiveGrant>, EnforceError> {
        let filter = GrantFilter {
            user: None,
            active_only: true,
        };
        Ok(self
            .hook
            .store
            .grants(&filter)
            .await?
            .iter()
            .filter(|g| g.is_active(now))
            .map(|g| (g.id, ActiveGrant::from(g)))
            .collect())
    }

    pub async fn step(&mut self) -> Result<(), EnforceError> {
        let now = self.hook.clock.now();
        // A store that hangs must not hold up the end of a grant either.
        let desired = match tokio::time::timeout(STORE_WAIT, self.active_in_store(now)).await {
            Ok(r) => r,
            Err(_) => Err(EnforceError::StoreTimeout),
        };
        // An extension moves an applied grant's end: follow it before judging
        // what has ended, so nothing is withdrawn at the old end.
        if let Ok(desired) = &desired {
            self.follow_extensions(desired);
        }
        // Time ends grants even while the store cannot be read: fail closed.
        let expired: Vec<ActiveGrant> = self
            .applied
            .values()
            .filter(|g| g.expires_at <= now)
            .cloned()
            .collect();
        self.withdraw(&expired, now).await;
        let desired = desired?;
        // Before any GRANT below: whoever may hold a managed role now or
        // soon, or held one lately, is under the privilege guard.
        self.ended_at.retain(|_, t| now - *t < GUARD_AFTER_END);
        let guarded = desired
            .values()
            .chain(self.applied.values())
            .map(|g| (g.user.clone(), g.database.clone()))
            .chain(self.ended_at.keys().cloned())
            .collect();
        self.grants().set_guarded(guarded);
        let ended: Vec<ActiveGrant> = self
            .applied
            .values()
            .filter(|g| !desired.contains_key(&g.id))
            .cloned()
            .collect();
        self.withdraw(&ended, now).await;
        let mut added = false;
        let new: Vec<ActiveGrant> = desired
            .into_values()
            .filter(|g| !self.applied.contains_key(&g.id))
            .collect();
        let granted = if self.cluster.is_leader() {
            HashSet::new()
        } else {
            self.granted_by_leader(&new).await
        };
        for g in new {
            let ready = if self.cluster.is_leader() {
                self.apply(&g).await
            } else {
                granted.contains(&(g.database.clone(), self.membership(&g)))
            };
            if ready {
                self.applied.insert(g.id, g);
                added = true;
            }
        }
        if added {
            self.grants().publish(self.applied.values().cloned());
            if self.cluster.is_leader() && self.cluster.index() != 0 {
                // The other replicas publish it once they see the membership.
                if let Err(e) = self.hook.store.announce("granted").await {
                    tracing::warn!(error = %e, "cannot tell the other replicas of a GRANT");
                }
            }
        } else {
            // Held statements re-read their request (it may have been denied).
            self.grants().touch();
        }
        self.warn(now);
        Ok(())
    }

    /// A follower publishes a grant once the leader's GRANT is in the
    /// database: the memberships of `new` grants found there, by database.
    async fn granted_by_leader(&self, new: &[ActiveGrant]) -> HashSet<(String, Membership)> {
        let mut found = HashSet::new();
        let prefix = &self.hook.config.gateway.login_role_prefix;
        let databases: HashSet<&str> = new.iter().map(|g| g.database.as_str()).collect();
        for db in databases {
            let Some(runtime) = self.gateway.databases.get(db) else {
                continue;
            };
            let roles: Vec<String> = new
                .iter()
                .filter(|g| g.database == db)
                .map(|g| g.role.clone())
                .collect();
            match database::memberships(&runtime.admin, &roles, prefix).await {
                Ok(ms) => found.extend(ms.into_iter().map(|m| (db.to_string(), m))),
                Err(e) => tracing::warn!(database = db, error = %e, "cannot read memberships"),
            }
        }
        found
    }

    /// Applied grants whose end the store has moved (extensions) take the
    /// new end; a warning already given is given again before it.
    fn follow_extensions(&mut self, desired: &HashMap<i64, ActiveGrant>) {
        let mut moved = false;
        for (id, g) in self.applied.iter_mut() {
            if let Some(d) = desired.get(id) {
                if d.expires_at != g.expires_at {
                    g.expires_at = d.expires_at;
                    self.warned.remove(id);
                    moved = true;
                }
            }
        }
        if moved {
            self.grants().publish(self.applied.values().cloned());
        }
    }

    /// Takes ended grants out of the gateway's table, then out of the database.
    async fn withdraw(&mut self, ended: &[ActiveGrant], now: Time) {
        if ended.is_empty() {
            return;
        }
        for g in ended {
            self.applied.remove(&g.id);
            self.warned.remove(&g.id);
            self.ended_at
                .insert((g.user.clone(), g.database.clone()), now);
        }
        self.grants().publish(self.applied.values().cloned());
        self.end(ended, now).await;
    }

    fn membership(&self, g: &ActiveGrant) -> Membership {
        Membership {
            role: g.role.clone(),
            login_role: self.gateway.login_roles.name_for(&g.user),
        }
    }

    /// GRANT in the database; false (retried next step) on failure.
    async fn apply(&self, g: &ActiveGrant) -> bool {
        let Some(db) = self.gateway.databases.get(&g.database) else {
            return false;
        };
        let m = self.membership(g);
        let result = match self
            .gateway
            .login_roles
            .ensure(&g.database, &db.admin, &g.user)
            .await
        {
            Ok(_) => database::grant(&db.admin, &m).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.audit(AuditEvent::new(
                    self.hook.clock.now(),
                    Kind::GrantApplied,
                    "jitgate",
                    format!("grant:{}", g.id),
                    json!({"role": g.role, "database": g.database, "login_role": m.login_role}),
                ));
                true
            }
            Err(e) => {
                tracing::warn!(grant = g.id, error = %e, "GRANT failed; will retry");
                false
            }
        }
    }

    /// Revokes ended grants (unless another active grant still needs the
    /// same membership) and ends the role in the sessions that used it.
    async fn end(&mut self, ended: &[ActiveGrant], now: Time) {
        let still: HashSet<(String, String, String)> = self
            .applied
            .values()
            .map(|g| (g.user.clone(), g.database.clone(), g.role.clone()))
            .collect();
        let mut by_db: BTreeMap<&str, Vec<Membership>> = BTreeMap::new();
        for g in ended {
            if !still.contains(&(g.user.clone(), g.database.clone(), g.role.clone())) {
                by_db
                    .entry(g.database.as_str())
                    .or_default()
                    .push(self.membership(g));
            }
        }
        let leader = self.cluster.is_leader();
        for (db, ms) in by_db.iter().filter(|_| leader) {
            let admin = &self.gateway.databases[*db].admin;
            if let Err(e) = database::revoke(admin, ms).await {
                // The reconciler revokes it on its next pass; the gateway
                // already refuses (the grant left the table above).
                tracing::error!(database = db, error = %e, "REVOKE failed");
            }
        }
        for g in ended {
            let how = self.how_it_ended(g, now).await;
            if leader {
                self.audit(AuditEvent::new(
                    now,
                    Kind::GrantRemoved,
                    "jitgate",
                    format!("grant:{}", g.id),
                    json!({"role": g.role, "database": g.database, "ended": how}),
                ));
            }
            if g.statement.is_none() {
                self.end_in_sessions(g, how);
            }
        }
    }

    async fn how_it_ended(&self, g: &ActiveGrant, now: Time) -> &'static str {
        match self.hook.store.grant(g.id).await {
            Ok(Some(v)) if v.value.state != GrantState::Active => v.value.state.as_str(),
            _ if now >= g.expires_at => "expired",
            _ => "ended",
        }
    }

    /// Revokes memberships of managed roles that no active grant backs (active
    /// in the store: gateways sharing a store never revoke what another one
    /// has just granted).
    pub async fn reconcile(&mut self) -> Result<(), EnforceError> {
        let now = self.hook.clock.now();
        let leader = self.cluster.is_leader();
        self.follow_epoch(now, leader).await?;
        let backed: HashSet<Membership> = self
            .active_in_store(now)
            .await?
            .values()
            .map(|g| self.membership(g))
            .collect();
        let prefix = self.hook.config.gateway.login_role_prefix.clone();
        for db in &self.hook.config.databases {
            let managed: Vec<String> = self
                .hook
                .policy
                .roles()
                .filter(|r| r.database == db.name)
                .map(|r| r.name.clone())
                .collect();
            if managed.is_empty() {
                continue;
            }
            let admin = &self.gateway.databases[&db.name].admin;
            let err = |source| EnforceError::Database {
                database: db.name.clone(),
                source,
            };
            let drift: Vec<Membership> = if leader {
                database::memberships(admin, &managed, &prefix)
                    .await
                    .map_err(err)?
                    .into_iter()
                    .filter(|m| !backed.contains(m))
                    .collect()
            } else {
                Vec::new()
            };
            database::revoke(admin, &drift).await.map_err(err)?;
            for m in &drift {
                tracing::warn!(database = %db.name, role = %m.role, login_role = %m.login_role, "revoked a membership no grant backs");
                self.drift(
                    now,
                    format!("role:{}", m.role),
                    json!({"database": db.name, "role": m.role, "login_role": m.login_role,
                           "drift": "membership", "action": "revoked"}),
                );
            }
            // The built-ins, afresh: user objects created since may have
            // taken a built-in's name.
            let b = database::builtins(admin).await.map_err(err)?;
            self.hook.set_builtins(&db.name, b);
            // What the managed roles own: the hook's guard reads it.
            let owned = database::managed_objects(admin, &managed)
                .await
                .map_err(err)?;
            self.hook
                .managed_objects
                .write()
                .unwrap()
                .insert(db.name.clone(), Arc::new(owned));
            // DDL made outside the gateway may have moved privileges.
            self.hook.looks.invalidate();
            // Privileges handed to login roles or PUBLIC on the managed roles'
            // objects outlive every grant: take them back.
            if !leader {
                continue;
            }
            let direct = database::direct_privileges(admin, &managed, &prefix)
                .await
                .map_err(err)?;
            for (p, result) in database::revoke_direct(admin, &direct).await {
                let action = match &result {
                    Ok(()) => "revoked".to_string(),
                    Err(e) => format!("revoke failed: {e}"),
                };
                tracing::warn!(database = %db.name, object = %p.object, grantee = %p.grantee, %action, "privilege on a managed role's object held directly");
                self.drift(
                    now,
                    format!("role:{}", p.owner),
                    json!({"database": db.name, "drift": "privilege", "object_kind": p.object_kind,
                           "object": p.object, "owner": p.owner, "grantee": p.grantee,
                           "action": action}),
                );
            }
        }
        self.report_backing(now).await;
        if leader {
            self.reconcile_settings(now).await?;
        }
        Ok(())
    }

    /// Login-role passwords follow the store's epoch. The leader rotates when
    /// `credential_rotation` has passed and sets every login role's password
    /// for a new epoch; every replica forgets the old ones (its next
    /// connections derive the new; pooled ones stay logged in).
    async fn follow_epoch(&mut self, now: Time, leader: bool) -> Result<(), EnforceError> {
        let store = &self.hook.store;
        let mut epoch = store.credentials().await?;
        let every = chrono::Duration::from_std(self.hook.config.gateway.credential_rotation)
            .unwrap_or(chrono::Duration::MAX);
        // Without a cluster secret every start sets new passwords anyway.
        let shared_secret = self.hook.config.gateway.cluster_secret_file.is_some()
            || std::env::var_os(config::CLUSTER_SECRET_ENV).is_some();
        let due = epoch.since.is_none_or(|since| now - since >= every);
        if leader && shared_secret && due {
            let why = if epoch.since.is_some() {
                "schedule"
            } else {
                "first start"
            };
            let event = AuditEvent::new(
                now,
                Kind::CredentialsRotated,
                "jitgate",
                "credentials".into(),
                json!({"why": why}),
            );
            epoch.number = store.rotate_credentials(event).await?;
        }
        if self.gateway.login_roles.credentials.set_epoch(epoch.number) {
            tracing::info!(
                epoch = epoch.number,
                "login-role passwords moved to a new epoch"
            );
            self.gateway.login_roles.forget_all();
            if leader {
                self.fresh_passwords().await?;
            }
        }
        Ok(())
    }

    /// Rules the database does not back (see [`crate::backing`]): a log line
    /// and an `alert.unbacked_rule` audit event each, at start and whenever
    /// the set changes.
    async fn report_backing(&mut self, now: Time) {
        // A catalog-wide look: at start, then at most once a minute.
        // Sooner when privileges changed through the gateway.
        let stale = self.hook.backing_stale.swap(false, Ordering::Relaxed);
        if !stale
            && self
                .backing_checked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.backing_checked = Some(tokio::time::Instant::now());
        for db in &self.hook.config.databases {
            let admin = &self.gateway.databases[&db.name].admin;
            let config = self.hook.config.clone();
            let name = db.name.clone();
            let checked = admin
                .with_client(async |c| {
                    crate::backing::check(&config, &name, c)
                        .await
                        .map_err(proxy::login_role::ProvisionError::from)
                })
                .await;
            let checked = match checked {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(database = %db.name, error = %e, "cannot check whether the database backs the rules");
                    continue;
                }
            };
            // What the gateway cannot see (a function body) counts only
            // against rules the database does not enforce itself.
            for r in &checked {
                let backed = r.backed() && r.gateway_only.is_empty();
                self.hook.rules.set_backed(r.index, backed);
            }
            let unbacked: Vec<_> = checked.iter().filter(|r| !r.backed()).collect();
            let key: Vec<String> = unbacked
                .iter()
                .map(|r| format!("{}:{}", r.index, r.gaps.len()))
                .collect();
            if self.unbacked.get(&db.name) == Some(&key) {
                continue;
            }
            self.unbacked.insert(db.name.clone(), key);
            for r in unbacked.into_iter().filter(|_| self.cluster.is_leader()) {
                let revokes: Vec<&String> = r.gaps.iter().flat_map(|g| &g.revoke).collect();
                tracing::warn!(database = %db.name, rule = r.index, "rule[{}] ({}) is not backed by the database: only the gateway stands in the way; jitgate policy check --live lists the REVOKEs that would back it", r.index, r.rule);
                self.audit(
                    AuditEvent::new(
                        now,
                        Kind::AlertUnbackedRule,
                        "jitgate",
                        format!("rule:{}", r.index),
                        json!({"database": db.name, "rule": r.rule,
                               "gaps": r.gaps.iter().map(|g| json!({"principal": g.principal,
                                   "privilege": g.privilege, "object": g.object})).collect::<Vec<_>>(),
                               "revoke": revokes}),
                    )
                    .alert(),
                );
            }
        }
    }

    /// Role defaults on login roles (`ALTER ROLE jit_x SET ...`): the gateway
    /// sets none, so every one found is removed and audited as drift.
    async fn reconcile_settings(&mut self, now: Time) -> Result<(), EnforceError> {
        let prefix = self.hook.config.gateway.login_role_prefix.clone();
        let mut seen = HashSet::new();
        for db in &self.hook.config.databases {
            let runtime = &self.gateway.databases[&db.name];
            // Settings live in the cluster: one pass per server.
            if !seen.insert(runtime.target_addr()) {
                continue;
            }
            let err = |source| EnforceError::Database {
                database: db.name.clone(),
                source,
            };
            let found = database::login_role_settings(&runtime.admin, &prefix)
                .await
                .map_err(err)?;
            for (in_db, name) in database::identity_defaults(&runtime.admin)
                .await
                .map_err(err)?
            {
                let action =
                    match database::reset_identity_default(&runtime.admin, in_db.as_deref(), &name)
                        .await
                    {
                        Ok(()) => "reset".to_string(),
                        Err(e) => format!("reset failed: {e}"),
                    };
                tracing::warn!(setting = %name, database = ?in_db, %action, "a default for every role sets the identity");
                self.drift(
                    now,
                    format!("setting:{name}"),
                    json!({"database": db.name, "drift": "identity_default", "setting": name,
                           "in_database": in_db, "action": action}),
                );
            }
            for (login_role, in_db) in found {
                let action =
                    match database::reset_settings(&runtime.admin, &login_role, in_db.as_deref())
                        .await
                    {
                        Ok(()) => "reset".to_string(),
                        Err(e) => format!("reset failed: {e}"),
                    };
                tracing::warn!(%login_role, database = ?in_db, %action, "login role has role defaults");
                self.drift(
                    now,
                    format!("login_role:{login_role}"),
                    json!({"database": db.name, "drift": "role_setting", "login_role": login_role,
                           "in_database": in_db, "action": action}),
                );
            }
        }
        Ok(())
    }

    fn drift(&self, now: Time, subject: String, detail: serde_json::Value) {
        self.audit(AuditEvent::new(now, Kind::AlertDrift, "jitgate", subject, detail).alert());
    }

    fn audit(&self, ev: AuditEvent) {
        self.hook.audit.send(ev);
    }
}
