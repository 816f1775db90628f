//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, a random
//! loopback port, fsync off, and removal afterwards — also when the process
//! that started it panics, aborts or is killed.
//!
//! Used by every integration test (one cluster per test binary via
//! [`Cluster::shared`]) and by `jitgate demo`.
//!
//! Why a watchdog: a cluster kept in a `static` is never dropped, and a test
//! binary that is killed runs no destructors at all. So each cluster gets a tiny
//! `sh` loop that polls the owning process and, once it is gone, shuts the server
//! down (immediate mode) and deletes the directory.
//!
//! Running as root: `initdb` and `postgres` refuse to run as root, so the server
//! runs as the unprivileged `postgres` user (the Debian package creates it) and
//! the directory is handed to that user.
#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What to set up besides the defaults.
#[derive(Default, Clone)]
pub struct Options {
    /// PEM certificate and key: turns on `ssl` in the server.
    pub tls: Option<(String, String)>,
    /// Lines prepended to pg_hba.conf (first match wins).
    pub hba: Vec<String>,
    /// Extra postgresql.conf lines.
    pub settings: Vec<String>,
}

pub struct Cluster {
    dir: PathBuf,
    port: u16,
    password: String,
    owner: Option<(u32, u32)>,
    bin: PathBuf,
    server: Option<Child>,
}

impl Cluster {
    /// The cluster shared by all tests of this process, started on first use.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start(Options::default()).expect("start PostgreSQL"))
    }

    pub fn start(options: Options) -> io::Result<Cluster> {
        let bin = find_bin_dir()?;
        let owner = if is_root() {
            Some(lookup_user("postgres").ok_or_else(|| {
                io::Error::other(
                    "running as root, and initdb refuses root: create an unprivileged \
                     'postgres' user (apt-get install postgresql does)",
                )
            })?)
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!("jitgate-pg-{}", random_hex(8)));
        fs::create_dir(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let password = random_hex(16);
        let mut cluster = Cluster {
            dir,
            port: free_port()?,
            password,
            owner,
            bin,
            server: None,
        };
        cluster.spawn_watchdog()?;
        cluster.init(&options)?;
        cluster.start_server()?;
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password (the superuser is `postgres`).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A URL for the superuser, e.g. for `admin_url`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log so far (for test failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn give(&self, path: &Path) -> io::Result<()> {
        if let Some((uid, gid)) = self.owner {
            chown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    fn init(&self, options: &Options) -> io::Result<()> {
        self.give(&self.dir)?;
        let pwfile = self.dir.join("pw");
        fs::write(&pwfile, &self.password)?;
        self.give(&pwfile)?;
        let out = self
            .cmd("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()?;
        check(out, "initdb")?;
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir().join("postgresql.conf"))?;
        writeln!(
            conf,
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 400\nshared_buffers = 64MB\n",
            self.port,
            self.dir.display()
        )?;
        for line in &options.settings {
            writeln!(conf, "{line}")?;
        }
        if let Some((cert, key)) = &options.tls {
            for (name, pem, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
                let p = self.data_dir().join(name);
                fs::write(&p, pem)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
                self.give(&p)?;
            }
            writeln!(conf, "ssl = on")?;
        }
        if !options.hba.is_empty() {
            let hba_path = self.data_dir().join("pg_hba.conf");
            let old = fs::read_to_string(&hba_path)?;
            fs::write(&hba_path, format!("{}\n{old}", options.hba.join("\n")))?;
        }
        Ok(())
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&mut self) -> io::Result<()> {
        let log = fs::File::create(self.dir.join("server.log"))?;
        self.give(&self.dir.join("server.log"))?;
        let child = self
            .cmd("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let pidfile = self.data_dir().join("postmaster.pid");
        loop {
            let ready = fs::read_to_string(&pidfile)
                .map(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if let Some(status) = self
                .server
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(io::Error::other(format!(
                    "postgres exited with {status}:\n{}",
                    self.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "postgres did not become ready:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server ("fast" shutdown: sessions get a FATAL, then the socket closes).
    pub fn stop_server(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.server.take() {
            let out = self
                .cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["stop", "-m", "fast", "-w"])
                .output()?;
            check(out, "pg_ctl stop")?;
            child.wait()?;
        }
        Ok(())
    }

    /// Runs SQL as the superuser with psql (ON_ERROR_STOP), returning stdout.
    pub fn psql(&self, db: &str, sql: &str) -> io::Result<String> {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .output()?;
        let out = check(out, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn spawn_watchdog(&self) -> io::Result<()> {
        // Polls the owner; when it is gone, stops the server and removes the dir.
        let script = r#"
            while kill -0 "$OWNER" 2>/dev/null; do sleep 0.3; done
            pid=$(head -n 1 "$DIR/data/postmaster.pid" 2>/dev/null)
            [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                [ -e "$DIR/data/postmaster.pid" ] || break; sleep 0.2
            done
            rm -rf "$DIR"
        "#;
        Command::new("sh")
            .args(["-c", script])
            .env("OWNER", std::process::id().to_string())
            .env("DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = self
                .cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["stop", "-m", "immediate", "-w"])
                .output();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn check(out: Output, what: &str) -> io::Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// `postgres` on PATH, else the newest /usr/lib/postgresql/*/bin.
fn find_bin_dir() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("postgres").is_file() && dir.join("initdb").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).ok_or_else(|| {
        io::Error::other(
            "no PostgreSQL server found on PATH or in /usr/lib/postgresql/*/bin; \
             install it (apt-get install postgresql)",
        )
    })
}

fn is_root() -> bool {
    // The owner of /proc/self is our effective uid.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// A port that was free a moment ago (the server binds it right after).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_cleans_up() {
        let dir;
        {
            let c = Cluster::start(Options::default()).unwrap();
            dir = c.dir.clone();
            assert_eq!(c.psql("postgres", "SELECT 40 + 2").unwrap(), "42");
            assert!(c.psql("postgres", "SELECT nonsense(").is_err());
        }
        assert!(!dir.exists(), "cluster directory must be removed on drop");
    }
}
