//! Helpers for end-to-end tests of the built binary.
#![allow(dead_code)]

pub mod browser;
pub mod oidc;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_jitgate");

pub fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn free_port() -> u16 {
    pgcluster::free_port().unwrap()
}

pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sigterm(child: &Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

pub fn cli(api_port: u16, args: &[&str], user: &str) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args([
            "--server",
            &format!("http://127.0.0.1:{api_port}"),
            "--user",
            user,
            "--password",
            &format!("{user}-pw"),
        ])
        .env_remove("JITGATE_SERVER")
        .output()
        .unwrap()
}

pub fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An interactive psql session: statements go in one by one, and each call
/// returns what psql printed for it (stdout and stderr, in order).
pub struct Psql {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    n: usize,
}

impl Psql {
    pub fn connect(port: u16, user: &str, password: &str) -> Psql {
        Psql::connect_db(port, "app", user, password)
    }

    pub fn connect_db(port: u16, db: &str, user: &str, password: &str) -> Psql {
        use std::io::BufRead;
        let mut child = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "exec psql -X -v VERBOSITY=default 'host=127.0.0.1 port={port} dbname={db} user={user}' 2>&1"
                ),
            ])
            .env("PGPASSWORD", password)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Psql {
            child,
            stdin,
            lines: rx,
            n: 0,
        }
    }

    /// Sends `sql` without waiting; returns the marker to wait for.
    pub fn send(&mut self, sql: &str) -> String {
        use std::io::Write;
        self.n += 1;
        let marker = format!("__done_{}__", self.n);
        writeln!(self.stdin, "{sql}\n\\echo {marker}").unwrap();
        self.stdin.flush().unwrap();
        marker
    }

    /// psql's output up to `marker` (waits up to `limit`).
    pub fn wait(&mut self, marker: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == marker => return out,
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                }
                Err(_) => panic!("psql did not reach {marker} within {limit:?}; so far: {out}"),
            }
        }
    }

    /// Runs `sql` and returns psql's output for it (waits up to `limit`).
    pub fn run_within(&mut self, sql: &str, limit: Duration) -> String {
        let marker = self.send(sql);
        self.wait(&marker, limit)
    }

    pub fn run(&mut self, sql: &str) -> String {
        self.run_within(sql, Duration::from_secs(20))
    }

    /// psql's output up to the first line containing `needle`.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                    if line.contains(needle) {
                        return out;
                    }
                }
                Err(_) => panic!("psql did not print {needle:?} within {limit:?}; so far: {out}"),
            }
        }
    }

    /// SIGINT, as Ctrl-C: psql sends a CancelRequest for the running statement.
    pub fn interrupt(&self) {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Output printed since the last call, without sending anything (notices).
    pub fn drain(&mut self, wait: Duration) -> String {
        let mut out = String::new();
        while let Ok(line) = self.lines.recv_timeout(wait) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

impl Drop for Psql {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
