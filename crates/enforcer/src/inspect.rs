//! Read-only looks into a database through its admin connection: the
//! "permanent keyholders" report (`jitgate scan`, the web UI's scan page) and
//! the planner's estimate for a statement awaiting approval.

use config::Config;
use policy::Grant;
use serde_json::{json, Value};

const SCAN: &str = "
SELECT l.rolname::text,
       l.rolsuper, l.rolcreaterole, l.rolreplication, l.rolbypassrls,
       ARRAY(SELECT r.rolname::text FROM pg_roles r
             WHERE r.oid <> l.oid AND r.rolname = ANY($1) AND pg_has_role(l.oid, r.oid, 'MEMBER')
             ORDER BY 1) AS managed,
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND n.nspname NOT LIKE 'pg\\_%'
                 AND has_table_privilege(l.oid, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
                 AND NOT has_table_privilege('public', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) AS can_write,
       EXISTS (SELECT 1 FROM pg_namespace n
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
                 AND has_schema_privilege(l.oid, n.oid, 'CREATE')
                 AND NOT has_schema_privilege('public', n.oid, 'CREATE')) AS can_ddl
FROM pg_roles l
WHERE l.rolcanlogin
ORDER BY 1";

async fn connect(cfg: &Config, db: &str) -> Result<tokio_postgres::Client, String> {
    let database = cfg
        .database(db)
        .ok_or_else(|| format!("no [[database]] named `{db}` in the configuration"))?;
    let (config, tls) = proxy::tls::admin_connection(database).map_err(|e| e.to_string())?;
    let (client, conn) = config
        .connect(tls)
        .await
        .map_err(|e| format!("connecting to `{db}` as its admin role: {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// Every login on `db` with privileged access, with the reasons:
/// superuser, CREATEROLE, REPLICATION, BYPASSRLS, membership in a role the
/// policy manages, write privileges on tables, CREATE on a schema (beyond
/// what PUBLIC has: that is everyone's, and `policy check --live` names it). A login
/// role of the gateway's whose managed roles all come from `active` grants
/// is listed as holding them just in time (`"standing": false`, with each
/// grant and its end), not as a permanent keyholder.
pub async fn scan(cfg: &Config, db: &str, active: &[Grant]) -> Result<Vec<Value>, String> {
    let managed: Vec<String> = cfg
        .roles
        .iter()
        .filter(|r| r.database == db)
        .map(|r| r.name.clone())
        .collect();
    let client = connect(cfg, db).await?;
    let rows = client
        .query(SCAN, &[&managed])
        .await
        .map_err(|e| format!("reading roles: {e}"))?;
    let mut found = Vec::new();
    for r in rows {
        let (name, sup, cr, repl, bypass): (String, bool, bool, bool, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let managed: Vec<String> = r.get(5);
        let (mut write, mut ddl): (bool, bool) = (r.get(6), r.get(7));
        // Memberships an active grant of this database backs.
        let user = name.strip_prefix(cfg.gateway.login_role_prefix.as_str());
        let granted: Vec<&Grant> = active
            .iter()
            .filter(|g| Some(g.user.as_str()) == user && g.database == db)
            .filter(|g| managed.contains(&g.role))
            .collect();
        let (through, managed): (Vec<String>, Vec<String>) = managed
            .into_iter()
            .partition(|m| granted.iter().any(|g| &g.role == m));
        if !through.is_empty() && managed.is_empty() {
            // What it can write or create comes with the grant.
            (write, ddl) = (false, false);
        }
        let mut why: Vec<String> = [
            (sup, "superuser"),
            (cr, "createrole"),
            (repl, "replication"),
            (bypass, "bypassrls"),
        ]
        .into_iter()
        .filter(|(flag, _)| *flag)
        .map(|(_, label)| label.to_string())
        .collect();
        why.extend(
            managed
                .iter()
                .map(|m| format!("member of managed role {m}")),
        );
        if write {
            why.push("can write tables".into());
        }
        if ddl {
            why.push("can create in a schema".into());
        }
        let standing = !why.is_empty();
        why.extend(granted.iter().map(|g| {
            format!(
                "holds {} through grant {} until {} (just in time, not standing)",
                g.role,
                g.id,
                g.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        }));
        let grants: Vec<Value> = granted
            .iter()
            .map(|g| json!({"grant": g.id, "role": g.role, "until": g.expires_at}))
            .collect();
        if !why.is_empty() {
            found.push(
                json!({"login": name, "superuser": sup, "createrole": cr, "replication": repl,
                              "bypassrls": bypass, "managed_roles": managed, "can_write": write,
                              "can_ddl": ddl, "why": why, "standing": standing,
                              "grants": grants}),
            );
        }
    }
    found.extend(login_role_reach(cfg, &client).await);
    Ok(found)
}

/// The `pg_hba.conf` rules, in order, through which a login role
/// (`<prefix>...`) could log in other than from the gateway's own address,
/// as one scan entry; none if only the gateway can (or `pg_hba_file_rules`
/// is not readable: then an entry saying so).
async fn login_role_reach(cfg: &Config, client: &tokio_postgres::Client) -> Option<Value> {
    let prefix = &cfg.gateway.login_role_prefix;
    let login = format!("{prefix}* (jitgate login roles)");
    let rows = match client
        .query(
            "SELECT line_number, type, user_name::text[], address, netmask, auth_method, \
                    host(inet_client_addr()) \
             FROM pg_hba_file_rules WHERE error IS NULL ORDER BY line_number",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            return Some(json!({"login": login, "why": [format!(
                "unknown whether login roles can log in other than through the gateway: \
                 pg_hba_file_rules cannot be read by the admin role ({})",
                e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())
            )], "hba": []}));
        }
    };
    let mut why = Vec::new();
    let mut lines = Vec::new();
    for r in rows {
        let (line, kind): (i32, String) = (r.get(0), r.get(1));
        let users: Vec<String> = r.get::<_, Option<Vec<String>>>(2).unwrap_or_default();
        let (address, netmask): (Option<String>, Option<String>) = (r.get(3), r.get(4));
        let (method, gateway): (String, Option<String>) = (r.get(5), r.get(6));
        // `address` is an address (with a netmask) or a keyword (all, samenet, ...).
        let host = address
            .as_deref()
            .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
            .map(String::from);
        let bits = host.as_ref().map(|_| mask_bits(netmask.as_deref()));
        let keyword = if host.is_none() {
            address.clone()
        } else {
            None
        };
        let applies = users.iter().any(|u| {
            u == "all" || u.starts_with(prefix.as_str()) || u.starts_with('+') || u.starts_with('/')
        });
        if !applies {
            continue;
        }
        let from = match (kind.as_str(), &host, bits) {
            ("local", _, _) => "the local socket".to_string(),
            (_, Some(h), Some(b)) => format!("{h}/{b}"),
            _ => keyword.clone().unwrap_or_else(|| "any address".into()),
        };
        let only_gateway = kind != "local"
            && host.is_some()
            && host == gateway
            && matches!(bits, Some(32) | Some(128));
        if method == "reject" {
            // A reject for every address ends what later lines could allow.
            if matches!(bits, Some(0)) || keyword.as_deref() == Some("all") {
                break;
            }
            continue;
        }
        if !only_gateway {
            why.push(format!(
                "login roles can log in from {from} (pg_hba.conf line {line}, {method}), not only \
                 through the gateway (see docs/SECURITY.md)"
            ));
            lines.push(json!({"line": line, "type": kind, "from": from, "method": method}));
        }
    }
    (!why.is_empty()).then(|| json!({"login": login, "why": why, "hba": lines}))
}

/// The prefix length of a netmask (`255.255.255.0` → 24); none given: a host.
fn mask_bits(netmask: Option<&str>) -> i32 {
    match netmask.and_then(|m| m.parse::<std::net::IpAddr>().ok()) {
        Some(std::net::IpAddr::V4(m)) => u32::from(m).count_ones() as i32,
        Some(std::net::IpAddr::V6(m)) => u128::from(m).count_ones() as i32,
        None => 128,
    }
}

/// Whether `sql` is one statement EXPLAIN can plan without running anything
/// else: SELECT, INSERT, UPDATE, DELETE or MERGE.
pub fn explainable(sql: &str) -> bool {
    use pg_query::NodeEnum;
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return false;
    };
    let stmts = &parsed.protobuf.stmts;
    stmts.len() == 1
        && matches!(
            stmts[0].stmt.as_ref().and_then(|s| s.node.as_ref()),
            Some(
                NodeEnum::SelectStmt(_)
                    | NodeEnum::InsertStmt(_)
                    | NodeEnum::UpdateStmt(_)
                    | NodeEnum::DeleteStmt(_)
                    | NodeEnum::MergeStmt(_)
            )
        )
}

/// The planner's estimate for `sql` on `db`: EXPLAIN (never ANALYZE), sent
/// as one extended-protocol statement (nothing after it can run), with a
/// statement timeout, as `user`'s login role holding `role`: the planner folds
/// immutable functions while planning, and those must never run with the
/// admin connection's rights. The membership is granted inside the
/// transaction, which then turns READ ONLY and is rolled back: it is never
/// committed, and no other session ever sees it.
pub async fn blast_radius(
    cfg: &Config,
    db: &str,
    user: &str,
    role: &str,
    sql: &str,
) -> Result<(String, String), String> {
    if !explainable(sql) {
        return Err(
            "only a single SELECT, INSERT, UPDATE, DELETE or MERGE can be previewed".into(),
        );
    }
    let mut client = connect(cfg, db).await?;
    let login_role = format!("{}{user}", cfg.gateway.login_role_prefix);
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '3s'; {}; SET LOCAL ROLE {}; SET TRANSACTION READ ONLY",
        proxy::login_role::grant_sql(role, &login_role),
        proxy::login_role::quote_ident(&login_role),
    ))
    .await
    .map_err(|e| match e.as_db_error() {
        Some(d) => format!("cannot plan as {login_role} with {role}: {}", d.message()),
        None => e.to_string(),
    })?;
    let explain = |format: &str| format!("EXPLAIN (FORMAT {format}) {sql}");
    let err = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => e.to_string(),
    };
    let json_rows = tx.query(&explain("JSON"), &[]).await.map_err(err)?;
    let text_rows = tx.query(&explain("TEXT"), &[]).await.map_err(err)?;
    tx.rollback().await.map_err(|e| e.to_string())?;
    let plan_json: Value = json_rows
        .first()
        .map(|r| r.get::<_, Value>(0))
        .unwrap_or(Value::Null);
    let plan: Vec<String> = text_rows.iter().map(|r| r.get::<_, String>(0)).collect();
    Ok((summarize(&plan_json), plan.join("\n")))
}

/// "Delete on orders: about 1 row (planner estimate)".
pub fn summarize(plan: &Value) -> String {
    let top = &plan[0]["Plan"];
    let rows = |p: &Value| p["Plan Rows"].as_f64().unwrap_or(0.0);
    let (what, n) = match top["Node Type"].as_str() {
        Some("ModifyTable") => (
            format!(
                "{} on {}",
                top["Operation"].as_str().unwrap_or("Modify"),
                top["Relation Name"].as_str().unwrap_or("?")
            ),
            rows(&top["Plans"][0]),
        ),
        Some(node) => (format!("{node} (read)"), rows(top)),
        None => ("unknown plan".to_string(), 0.0),
    };
    let n = n.round() as i64;
    format!(
        "{what}: about {n} row{} (planner estimate)",
        if n == 1 { "" } else { "s" }
    )
}
