//! Shared by the end-to-end tests: `keel` processes on loopback ports and etcdctl (3.4) with
//! a deadline on every command. A member is killed when its handle drops.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (another process may take it before it is used; tests live with that).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.arg("--data-dir").arg(data_dir).args(args).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    /// A single-member cluster on free ports, serving once this returns.
    pub fn single(dir: &Path) -> Keel {
        let endpoint = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let args = vec![
            format!("--listen-client-urls={endpoint}"),
            format!("--advertise-client-urls={endpoint}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
        ];
        let keel = Keel::spawn(&dir.join("data"), endpoint, args);
        keel.wait_serving();
        keel
    }

    /// Waits until the member answers a linearizable read.
    pub fn wait_serving(&self) {
        wait_until(20, "keel serves", || etcdctl(&self.endpoint, &["get", "ready"]).status.success());
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
