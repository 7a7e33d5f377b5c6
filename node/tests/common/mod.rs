//! Shared by the end-to-end tests: `keel` processes on loopback ports and etcdctl (3.4) with
//! a deadline on every command. A member is killed when its handle drops; its standard error
//! goes to `<data dir>.log` (appended across restarts) and is shown when it fails to serve.

#![allow(dead_code)] // each test binary uses its own subset

pub mod grpc;
pub mod h2raw;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A free loopback port below Linux's ephemeral range (32768-60999 by default). A port the
/// kernel hands out for `127.0.0.1:0` could be given next to a client socket (etcdctl's, a
/// member's connection to a peer) before the member binds it, and the member would exit with
/// "address already in use"; ports in this range are never chosen that way. Each test process
/// walks the range from its own starting point, so test binaries run side by side do not
/// collide either.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let start = (u64::from(std::process::id()) * 7919 % u64::from(COUNT)) as u32;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    (0..COUNT)
        .map(|_| (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % COUNT) as u16)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free loopback port below the ephemeral range")
}

/// Runs etcdctl against `endpoints` (comma-separated) with a 10 s command timeout.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("20").arg("etcdctl").arg(format!("--endpoints={endpoints}")).arg("--command-timeout=10s").args(args);
    cmd.env("ETCDCTL_API", "3");
    cmd.output().expect("etcdctl runs (ci/setup installs etcd-client)")
}

/// etcdctl's standard output; the command must succeed.
pub fn ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args);
    assert!(out.status.success(), "etcdctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// etcdctl's standard error; the command must fail.
pub fn err(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args);
    assert!(!out.status.success(), "etcdctl {args:?} should fail");
    String::from_utf8(out.stderr).expect("utf-8")
}

/// Retries `f` every 100 ms until it returns true; panics with `what` after `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `keel` process; restartable on the same data directory and flags.
pub struct Keel {
    pub child: Child,
    /// Client URL.
    pub endpoint: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
}

impl Keel {
    /// Starts `keel` with `args` plus `--data-dir`.
    pub fn spawn(data_dir: &Path, endpoint: String, args: Vec<String>) -> Keel {
        let child = Keel::command(data_dir, &args).spawn().expect("keel starts");
        Keel { child, endpoint, data_dir: data_dir.to_path_buf(), args }
    }

    fn command(data_dir: &Path, args: &[String]) -> Command {
        let log_path = Keel::log_path(data_dir);
        std::fs::create_dir_all(log_path.parent().expect("a data directory has a parent")).expect("log directory");
        let log = OpenOptions::new().create(true).append(true).open(log_path).expect("member log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.arg("--data-dir").arg(data_dir).args(args).stdout(Stdio::null()).stderr(log);
        cmd
    }

    fn log_path(data_dir: &Path) -> PathBuf {
        data_dir.with_extension("log")
    }

    /// What the member wrote to its standard error so far (every run on this data directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(Keel::log_path(&self.data_dir)).unwrap_or_default()
    }

    /// A single-member cluster on free ports, serving once this returns.
    pub fn single(dir: &Path) -> Keel {
        Keel::single_with(dir, &[])
    }

    /// [`Keel::single`] with extra flags.
    pub fn single_with(dir: &Path, extra: &[&str]) -> Keel {
        let endpoint = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let mut args = vec![
            format!("--listen-client-urls={endpoint}"),
            format!("--advertise-client-urls={endpoint}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut keel = Keel::spawn(&dir.join("data"), endpoint, args);
        keel.wait_serving();
        keel
    }

    /// Waits until the member answers a linearizable read; panics with its log if it exits or
    /// does not serve within 20 s.
    pub fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !etcdctl(&self.endpoint, &["get", "ready"]).status.success() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("keel at {} exited ({status}) before serving; its log:\n{}", self.endpoint, self.log());
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting until keel at {} serves; its log:\n{}", self.endpoint, self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to `secs` seconds for the process to exit; panics if it does not.
    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "keel at {} did not exit in {secs} s", self.endpoint);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the exit status once it has stopped.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
        self.wait_exit(10)
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// Starts the member again with the same data directory and flags.
    pub fn restart(&mut self) {
        self.child = Keel::command(&self.data_dir, &self.args).spawn().expect("keel restarts");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Where the member listens for peers (`host:port`).
    pub fn peer_address(&self) -> String {
        let url = self.args.iter().find_map(|a| a.strip_prefix("--listen-peer-urls=")).expect("a peer URL");
        url.trim_start_matches("http://").to_string()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The member's resident memory, in MiB.
    pub fn resident_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("the member's status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line");
        kib / 1024
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Members started together with etcd's clustering flags.
pub struct Cluster {
    pub members: Vec<Keel>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts one member per name and waits until each serves.
    pub fn start(names: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = names.iter().map(|_| (free_port(), free_port())).collect();
        let initial_cluster = names
            .iter()
            .zip(&ports)
            .map(|(name, (_, peer))| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = names
            .iter()
            .zip(&ports)
            .map(|(name, (client, peer))| {
                let endpoint = format!("http://127.0.0.1:{client}");
                let peer = format!("http://127.0.0.1:{peer}");
                let args = vec![
                    format!("--name={name}"),
                    format!("--listen-client-urls={endpoint}"),
                    format!("--advertise-client-urls={endpoint}"),
                    format!("--listen-peer-urls={peer}"),
                    format!("--initial-advertise-peer-urls={peer}"),
                    format!("--initial-cluster={initial_cluster}"),
                    "--initial-cluster-state=new".to_string(),
                    "--initial-cluster-token=keel-test".to_string(),
                ];
                Keel::spawn(&dir.path().join(name), endpoint, args)
            })
            .collect();
        let mut cluster = Cluster { members, _dir: dir };
        for member in &mut cluster.members {
            member.wait_serving();
        }
        cluster
    }

    /// Every client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| m.endpoint.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The index of the member that says it leads, if one does.
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            let out = etcdctl(&m.endpoint, &["endpoint", "status", "-w", "fields"]);
            let text = String::from_utf8_lossy(&out.stdout);
            let field =
                |name: &str| text.lines().find_map(|l| l.strip_prefix(&format!("\"{name}\" : "))).map(str::to_owned);
            out.status.success() && field("MemberID").is_some() && field("MemberID") == field("Leader")
        })
    }
}

/// Sends one request (closing the connection) and returns the status code and body; a
/// streamed response is read for `read_for` and then cut.
pub fn http(endpoint: &str, method: &str, path: &str, body: &str, read_for: Duration) -> (u16, String) {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connects");
    stream.set_read_timeout(Some(read_for)).expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("sent");
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, body)
}

/// The payload of a chunked body (possibly cut short).
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Real etcd 3.4 on loopback, killed when dropped.
pub struct Etcd {
    pub child: Child,
    /// Client URL.
    pub endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts etcd 3.4 with its data in `dir`, on free ports; returns once it serves.
pub fn start_etcd(dir: &Path) -> Etcd {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .arg(format!("--initial-cluster=default={peer}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd runs (ci/setup installs etcd-server)");
    let etcd = Etcd { child, endpoint };
    wait_until(20, "etcd serves", || etcdctl(&etcd.endpoint, &["get", "ready"]).status.success());
    etcd
}
