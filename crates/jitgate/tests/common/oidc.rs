//! Single sign-on tests' harness: a real OpenID Provider (node's
//! `oidc-provider`, `tests/oidc/provider.mjs`), gateways configured for it,
//! and a person's CLI environment and browser steps through the provider's
//! pages.

use super::*;
use fantoccini::{Client, Locator};
use pgcluster::Cluster;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CLIENT_ID: &str = "jitgate";
pub const CLIENT_SECRET: &str = "jitgate-test-secret";

/// The provider, listening on 127.0.0.1:`port`.
pub struct Provider {
    _child: Running,
    pub issuer: String,
}

impl Provider {
    pub fn start(redirect_uri: &str, device_flow: bool) -> Provider {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");
        assert!(
            std::path::Path::new(dir)
                .join("node_modules/oidc-provider")
                .exists(),
            "oidc-provider is missing: scripts/install-deps --tests installs it"
        );
        let port = free_port();
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .args([&port.to_string(), CLIENT_ID, CLIENT_SECRET, redirect_uri])
            .args((!device_flow).then_some("no-device"))
            .current_dir(dir)
            .stdout(Stdio::piped())
            // Its warnings (development adapter, Node version) go to a file.
            .stderr(
                std::fs::File::create(format!(
                    "{}/oidc-provider-{port}.log",
                    env!("CARGO_TARGET_TMPDIR")
                ))
                .unwrap(),
            )
            .spawn()
            .expect("node (scripts/install-deps --tests)");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let running = Running(child);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "provider said: {line}");
        // Kept open and read: node ends when it writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Provider {
            _child: running,
            issuer: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn admin(&self, path: &str) {
        let r = reqwest::get(format!("{}/admin/{path}", self.issuer))
            .await
            .unwrap();
        assert!(r.status().is_success(), "admin {path}: {}", r.status());
    }
}

/// Where one gateway listens and keeps its state.
pub struct Gateway {
    pub port: u16,
    pub api_port: u16,
    /// The address people reach the API at (a load balancer's, with replicas).
    pub public_api_port: u16,
    pub state: String,
}

impl Gateway {
    /// Its own ports and a SQLite store in `dir`.
    pub fn alone(dir: &tempfile::TempDir) -> Gateway {
        let (port, api_port) = (free_port(), free_port());
        Gateway {
            port,
            api_port,
            public_api_port: api_port,
            state: format!("sqlite://{}", dir.path().join("state.db").display()),
        }
    }
}

pub fn sso_config(
    admin_url: &str,
    dir: &tempfile::TempDir,
    g: &Gateway,
    issuer: &str,
    extra_gateway: &str,
) -> std::path::PathBuf {
    let text = testkit::config::App::new(admin_url)
        .no_people()
        .person("root", &["admins", "engineers"])
        .gateway(format!("listen = \"127.0.0.1:{}\"", g.port))
        .gateway(format!("api_listen = \"127.0.0.1:{}\"", g.api_port))
        .gateway(format!(
            "public_url = \"http://127.0.0.1:{}\"",
            g.public_api_port
        ))
        .gateway(format!("state = \"{}\"", g.state))
        .gateway("shutdown_timeout = \"1s\"")
        .gateway(extra_gateway)
        .default_duration("30m")
        .extra(&format!(
            "[[identity_provider]]\n\
             name = \"test\"\n\
             issuer = \"{issuer}\"\n\
             client_id = \"{CLIENT_ID}\"\n\
             client_secret = \"{CLIENT_SECRET}\"\n\
             scopes = [\"openid\", \"email\", \"groups\"]\n\
             group_map = {{ \"engineers\" = \"engineers\", \"dba\" = \"leads\" }}\n\
             allowed_domains = [\"example.com\"]\n"
        ))
        .toml();
    write(dir, &format!("jitgate-{}.toml", g.port), &text)
}

/// The roles the configuration names (cluster-wide; the tests of this binary
/// share the cluster, so whichever runs first creates them).
pub fn roles(cluster: &Cluster) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cluster
            .psql(
                "postgres",
                "CREATE ROLE app_read NOLOGIN; CREATE ROLE app_write NOLOGIN",
            )
            .unwrap();
    });
}

pub fn serve(cfg: &std::path::Path, port: u16) -> Running {
    let log = cfg.with_extension("log");
    let mut r = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(cfg)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if r.0.try_wait().unwrap().is_some() || Instant::now() > deadline {
            panic!(
                "jitgate serve did not start: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

/// Clicks through the provider's pages as `user` (login form, consent,
/// device confirmation) until `done` says the flow is over.
pub async fn through_provider(b: &Client, user: &str, done: impl Fn(&str, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = b.current_url().await.unwrap().to_string();
        let body = match b.find(Locator::Css("body")).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if done(&url, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "stuck at {url}: {body}");
        if let Ok(login) = b.find(Locator::Css("input[name=login]")).await {
            login.send_keys(user).await.unwrap();
            let pw = b.find(Locator::Css("input[name=password]")).await.unwrap();
            pw.send_keys("any password").await.unwrap();
            let _ = b
                .find(Locator::Css("button[type=submit]"))
                .await
                .unwrap()
                .click()
                .await;
        } else if let Ok(button) = b
            .find(Locator::XPath("//button[normalize-space(.)='Continue']"))
            .await
        {
            let _ = button.click().await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Bob, carol... sign in to the web UI; returns the page they end on.
pub async fn web_sign_in(b: &Client, base: &str, user: &str) -> String {
    b.goto(&format!("{base}/ui/login")).await.unwrap();
    b.find(Locator::LinkText("Sign in with test"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let base = base.to_string();
    // Signed in (the inbox), or refused (the login page at the callback).
    through_provider(b, user, move |url, body| {
        url.starts_with(&format!("{base}/ui/inbox"))
            || (url.starts_with(&format!("{base}/ui/login/oidc/test/callback"))
                && body.contains("Sign in with test"))
    })
    .await
}

/// A person's own CLI environment: their saved token and their ~/.pgpass.
pub fn person_cli(home: &std::path::Path, api_port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("JITGATE_SERVER", format!("http://127.0.0.1:{api_port}"))
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env_remove("PGPASSFILE")
        .env_remove("JITGATE_USER")
        .env_remove("JITGATE_PASSWORD");
    c
}

/// `jitgate login --sso ...` running in a person's environment, with the
/// address it asked them to open.
pub struct CliSignIn {
    child: std::process::Child,
    stderr: BufReader<std::process::ChildStderr>,
    pub url: String,
}

impl CliSignIn {
    pub fn start(home: &std::path::Path, api_port: u16, args: &[&str]) -> CliSignIn {
        let mut child = person_cli(home, api_port, args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("To sign in, open ")
            .unwrap_or_else(|| panic!("{line}"))
            .to_string();
        CliSignIn { child, stderr, url }
    }

    /// Waits for it to end well; what it printed last.
    pub async fn finish(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "jitgate login --sso did not finish"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stderr, &mut rest).unwrap();
        assert!(status.success(), "{rest}");
        rest
    }
}

pub async fn audit(base: &str, kind: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{base}/api/v1/login"))
        .json(&serde_json::json!({"user": "root", "password": "root-pw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let all: Value = http
        .get(format!("{base}/api/v1/audit?kind={kind}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all["events"].as_array().cloned().unwrap_or_default()
}

pub fn saved_token(home: &std::path::Path) -> String {
    let text = std::fs::read_to_string(home.join(".config/jitgate/tokens.json")).unwrap();
    let all: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    all.values().next().unwrap().as_str().unwrap().to_string()
}

/// Which provider a gateway is configured with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Running, with the device authorization grant.
    DeviceFlow,
    /// Running, without it (sign-in through the browser only).
    BrowserOnly,
    /// Configured but never reachable (providers are discovered on first use).
    Unreachable,
}

/// One gateway on a SQLite store, configured for a provider (started too,
/// unless unreachable): the common start of the single-gateway tests.
pub struct Alone {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub api_port: u16,
    /// `http://127.0.0.1:<api_port>`.
    pub base: String,
    pub op: Option<Provider>,
    pub issuer: String,
    pub cfg: std::path::PathBuf,
    _serve: Running,
}

impl Alone {
    /// `extra` holds more `[gateway]` lines (a `login_role_prefix` of its
    /// own: the binary's tests share the cluster).
    pub fn start(admin_url: &str, kind: ProviderKind, extra: &str) -> Alone {
        let dir = tempfile::tempdir().unwrap();
        let g = Gateway::alone(&dir);
        let base = format!("http://127.0.0.1:{}", g.api_port);
        let op = (kind != ProviderKind::Unreachable).then(|| {
            Provider::start(
                &format!("{base}/ui/login/oidc/test/callback"),
                kind == ProviderKind::DeviceFlow,
            )
        });
        let issuer = op
            .as_ref()
            .map(|o| o.issuer.clone())
            .unwrap_or_else(|| "http://127.0.0.1:9".into());
        let cfg = sso_config(admin_url, &dir, &g, &issuer, extra);
        let serve = serve(&cfg, g.port);
        Alone {
            port: g.port,
            api_port: g.api_port,
            base,
            op,
            issuer,
            cfg,
            dir,
            _serve: serve,
        }
    }

    /// A person's own home directory (their saved token and ~/.pgpass).
    pub fn home(&self, person: &str) -> std::path::PathBuf {
        let home = self.dir.path().join(person);
        std::fs::create_dir_all(&home).unwrap();
        home
    }

    pub fn op(&self) -> &Provider {
        self.op.as_ref().expect("a running provider")
    }
}

/// The shared cluster with the roles the configuration names; reqwest's
/// crypto provider installed.
pub fn prepare() -> &'static Cluster {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::shared();
    roles(cluster);
    cluster
}
