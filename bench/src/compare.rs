//! Keel against etcd, side by side: starts each as a real cluster on loopback (one after the
//! other, never both at once), drives the same workloads through the same client, and writes
//! the ratios (Keel / etcd) as a markdown table.
//!
//! Both systems get the same flags (etcd's), the same fresh data directory layout and the same
//! client; only the server binary differs.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use etcd_client::{Client, ConnectOptions};
use serde::Serialize;

use crate::load::{self, Consistency, LoadArgs, Workload};
use crate::report::{micros, Report};

/// Where the servers are, what to run and where to write it.
#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// The keel binary.
    #[arg(long, default_value = "target/release/keel")]
    pub keel: PathBuf,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd: PathBuf,
    /// The markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Every report, as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where the servers keep their data and logs, on the disk under test (by default a fresh
    /// directory in the system's temporary folder).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Seconds each workload runs.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Cluster sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub members: Vec<usize>,
    /// Rounds per cluster size, each starting etcd and then keel afresh; the table reports
    /// each figure's median over the rounds (this machine's noise is per run, not per system).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Keys the workloads use (reads run on all of them, prefilled).
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Keys (256-byte values) loaded for the memory and restart measurement; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_keys: u64,
}

/// A server implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
enum System {
    Etcd,
    Keel,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Keel => "keel",
        }
    }
}

/// One workload of the comparison.
struct Case {
    workload: Workload,
    clients: usize,
    consistency: Consistency,
}

const CASES: [Case; 7] = [
    Case { workload: Workload::Put, clients: 1, consistency: Consistency::L },
    Case { workload: Workload::Put, clients: 64, consistency: Consistency::L },
    Case { workload: Workload::Put, clients: 256, consistency: Consistency::L },
    Case { workload: Workload::Range, clients: 64, consistency: Consistency::L },
    Case { workload: Workload::Range, clients: 64, consistency: Consistency::S },
    Case { workload: Workload::Txn, clients: 64, consistency: Consistency::L },
    Case { workload: Workload::Watch, clients: 4, consistency: Consistency::L },
];

/// Watchers in the fan-out case, and the puts per second they watch.
const WATCHERS: usize = 100;
const WATCH_PUT_RATE: f64 = 200.0;

/// What one system measured on one cluster size in one round.
#[derive(Serialize)]
struct Measured {
    system: System,
    members: usize,
    round: u32,
    reports: Vec<Report>,
}

/// One workload's figures on one system: each the median over the rounds, errors summed.
struct Medians {
    throughput: f64,
    p50: u64,
    p99: u64,
    errors: u64,
}

impl Medians {
    fn of(rounds: &[&Measured], case: usize) -> Result<Medians, String> {
        let reports: Vec<&Report> = rounds
            .iter()
            .map(|m| m.reports.get(case).ok_or("a round is missing a workload"))
            .collect::<Result<_, _>>()?;
        Ok(Medians {
            throughput: median(reports.iter().map(|r| r.throughput).collect()),
            p50: median(reports.iter().map(|r| r.latency_us.p50).collect()),
            p99: median(reports.iter().map(|r| r.latency_us.p99).collect()),
            errors: reports.iter().map(|r| r.errors).sum(),
        })
    }
}

/// The middle value (the lower of the two middle ones for an even count).
fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("figures are never NaN"));
    values[(values.len() - 1) / 2]
}

/// Memory and restart with many keys on one member.
#[derive(Serialize)]
struct Footprint {
    system: System,
    keys: u64,
    resident_bytes: u64,
    restart_secs: f64,
}

/// Runs everything and writes the report.
pub async fn run(args: &CompareArgs) -> Result<(), String> {
    let scratch;
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => {
            scratch = tempfile::Builder::new().prefix("keel-bench").tempdir().map_err(|e| e.to_string())?;
            scratch.path().to_path_buf()
        }
    };
    fs::create_dir_all(&work_dir).map_err(|e| format!("creating {}: {e}", work_dir.display()))?;
    let work_dir = fs::canonicalize(&work_dir).map_err(|e| e.to_string())?;
    let mut ports = PortPlan::default();

    eprintln!("measuring the fdatasync floor in {}", work_dir.display());
    let floor = crate::fsync::measure(&work_dir, 1000, 256)?;

    let mut measured = Vec::new();
    for &members in &args.members {
        for (round, system) in (0..args.rounds).flat_map(|round| [(round, System::Etcd), (round, System::Keel)]) {
            let cluster = Cluster::start(system, args, &work_dir, members, &mut ports)?;
            cluster.wait_ready().await?;
            let mut reports = Vec::new();
            for case in &CASES {
                let report = load::run(case.workload, &case_args(case, &cluster.endpoints, args), false).await?;
                eprintln!(
                    "{} {members} member(s), round {}: {} x{}: {:.0}/s p50 {} p99 {} errors {}",
                    system.name(),
                    round + 1,
                    report.workload,
                    report.clients,
                    report.throughput,
                    micros(report.latency_us.p50),
                    micros(report.latency_us.p99),
                    report.errors
                );
                reports.push(report);
            }
            cluster.stop();
            measured.push(Measured { system, members, round, reports });
        }
    }

    let mut footprints = Vec::new();
    if args.memory_keys > 0 {
        for system in [System::Etcd, System::Keel] {
            footprints.push(footprint(system, args, &work_dir, &mut ports).await?);
        }
    }

    let markdown = render(&floor, &measured, &footprints, args)?;
    fs::write(&args.out, markdown).map_err(|e| format!("writing {}: {e}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    if let Some(path) = &args.json {
        let all = serde_json::json!({ "fdatasync": floor, "runs": measured, "footprints": footprints });
        fs::write(path, serde_json::to_string_pretty(&all).expect("serializable")).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The load for one case against one cluster.
fn case_args(case: &Case, endpoints: &[String], compare: &CompareArgs) -> LoadArgs {
    let mut args = LoadArgs::against(endpoints.to_vec());
    args.clients = case.clients;
    args.conns = case.clients.div_ceil(8);
    args.consistency = case.consistency;
    args.duration = Some(compare.seconds);
    args.key_space = compare.key_space;
    args.prefill = case.workload == Workload::Range;
    if case.workload == Workload::Watch {
        args.watchers = WATCHERS;
        args.rate = WATCH_PUT_RATE;
        args.conns = 4;
    }
    args
}

/// Loads `memory_keys` keys into one member, reads its resident memory, restarts it and times
/// how long until it serves a linearizable read of the last key again.
async fn footprint(
    system: System,
    args: &CompareArgs,
    work_dir: &Path,
    ports: &mut PortPlan,
) -> Result<Footprint, String> {
    let mut cluster = Cluster::start(system, args, work_dir, 1, ports)?;
    cluster.wait_ready().await?;
    let mut fill = LoadArgs::against(cluster.endpoints.clone());
    (fill.clients, fill.conns, fill.key_size, fill.key_space) = (256, 32, 16, args.memory_keys);
    (fill.total, fill.prefill) = (Some(0), true);
    eprintln!("{}: loading {} keys", system.name(), args.memory_keys);
    load::run(Workload::Put, &fill, true).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resident_bytes = resident_bytes(cluster.children[0].id())?;
    cluster.terminate();
    let started = Instant::now();
    cluster.respawn()?;
    let last_key = format!("{:016}", args.memory_keys - 1);
    let mut client = cluster.wait_ready().await?;
    let found = client.get(last_key.as_str(), None).await.map_err(|e| e.to_string())?;
    let restart_secs = started.elapsed().as_secs_f64();
    if found.kvs().is_empty() {
        return Err(format!("{} lost key {last_key} over a restart", system.name()));
    }
    cluster.stop();
    eprintln!("{}: {} MiB resident, restart {restart_secs:.2} s", system.name(), resident_bytes >> 20);
    Ok(Footprint { system, keys: args.memory_keys, resident_bytes, restart_secs })
}

fn resident_bytes(pid: u32) -> Result<u64, String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmRSS")?;
    Ok(kib * 1024)
}

/// Hands out fresh loopback ports so a stopped cluster's sockets never collide with the next.
struct PortPlan {
    next: u16,
}

impl Default for PortPlan {
    fn default() -> PortPlan {
        PortPlan { next: 32_379 }
    }
}

impl PortPlan {
    fn take(&mut self) -> u16 {
        self.next += 1;
        self.next
    }
}

/// Running server processes.
struct Cluster {
    commands: Vec<Command>,
    children: Vec<Child>,
    endpoints: Vec<String>,
}

impl Cluster {
    fn start(
        system: System,
        args: &CompareArgs,
        work_dir: &Path,
        members: usize,
        ports: &mut PortPlan,
    ) -> Result<Cluster, String> {
        let binary = match system {
            System::Etcd => &args.etcd,
            System::Keel => &args.keel,
        };
        let dir = work_dir.join(format!("{}-{members}", system.name()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let urls: Vec<(String, String)> = (0..members)
            .map(|_| (format!("http://127.0.0.1:{}", ports.take()), format!("http://127.0.0.1:{}", ports.take())))
            .collect();
        let initial_cluster: Vec<String> =
            urls.iter().enumerate().map(|(i, (_, peer))| format!("m{i}={peer}")).collect();
        let mut commands = Vec::new();
        for (i, (client, peer)) in urls.iter().enumerate() {
            let log = fs::File::create(dir.join(format!("m{i}.log"))).map_err(|e| e.to_string())?;
            let mut command = Command::new(binary);
            command
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("m{i}")))
                .args(["--listen-client-urls", client, "--advertise-client-urls", client])
                .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
                .args(["--initial-cluster", &initial_cluster.join(",")])
                .args(["--initial-cluster-token", "bench", "--initial-cluster-state", "new"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log);
            commands.push(command);
        }
        let mut cluster =
            Cluster { commands, children: Vec::new(), endpoints: urls.into_iter().map(|(c, _)| c).collect() };
        cluster.respawn()?;
        Ok(cluster)
    }

    /// Starts every member (again).
    fn respawn(&mut self) -> Result<(), String> {
        self.children.clear();
        for command in &mut self.commands {
            let child = command.spawn().map_err(|e| format!("starting {:?}: {e}", command.get_program()))?;
            self.children.push(child);
        }
        Ok(())
    }

    /// Waits (up to a minute) until a linearizable read succeeds, and returns the client.
    async fn wait_ready(&self) -> Result<Client, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let options =
            ConnectOptions::new().with_connect_timeout(Duration::from_secs(1)).with_timeout(Duration::from_secs(2));
        loop {
            let attempt = async {
                let mut client = Client::connect(&self.endpoints, Some(options.clone())).await?;
                client.get("ready", None).await?;
                Ok::<_, etcd_client::Error>(client)
            };
            match attempt.await {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("{} never became ready: {e}", self.endpoints.join(",")))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// SIGTERM to every member, then waits for them to exit (SIGKILL after 10 s).
    fn terminate(&mut self) {
        for child in &self.children {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        for child in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop(mut self) {
        self.terminate();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The markdown report.
fn render(
    floor: &Report,
    measured: &[Measured],
    footprints: &[Footprint],
    args: &CompareArgs,
) -> Result<String, String> {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks: Keel and etcd on the same machine\n");
    let _ = writeln!(
        md,
        "Written by `ci/bench` ({}). Each system runs alone on loopback with etcd's flags and a fresh data \
         directory; the same client (`keel-bench`, on the same machine) drives both. Ratios are Keel / etcd: \
         throughput above 1 and latency below 1 favour Keel. The goal is throughput ≥ 2× and p99 ≤ 0.5×. \
         Each cluster size runs {} round(s), each starting etcd and then keel afresh; every figure is its \
         median over the rounds, and the ratios of each round are listed too. Each workload runs {} s; \
         reads run on {} prefilled keys; values are 256 bytes. Watch fan-out runs at a fixed offered rate, \
         so only its latencies (put to event, per watcher) compare.\n",
        today(),
        args.rounds,
        args.seconds,
        args.key_space
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(
        md,
        "- CPU: {} ({} logical cores)",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(md, "- Memory: {}", meminfo_total());
    let _ = writeln!(md, "- Kernel: {}", fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim());
    let _ = writeln!(md, "- etcd: {}", version_of(&args.etcd));
    let _ = writeln!(md, "- keel: {}", version_of(&args.keel));
    let _ = writeln!(
        md,
        "- fdatasync floor (256-byte appends, {} samples): p50 {}, p99 {}\n",
        floor.ops,
        micros(floor.latency_us.p50),
        micros(floor.latency_us.p99)
    );
    let mut members: Vec<usize> = measured.iter().map(|m| m.members).collect();
    members.dedup();
    for size in members {
        let runs = |system| -> Vec<&Measured> {
            measured.iter().filter(|m| m.system == system && m.members == size).collect()
        };
        let (etcd, keel) = (runs(System::Etcd), runs(System::Keel));
        if etcd.is_empty() || etcd.len() != keel.len() {
            return Err(format!("uneven rounds for {size} member(s)"));
        }
        let _ = writeln!(md, "## {size} member{}\n", if size == 1 { "" } else { "s" });
        let _ = writeln!(
            md,
            "| workload | clients | etcd ops/s | keel ops/s | × | etcd p50 | keel p50 | etcd p99 | keel p99 | p99 × | × per round | p99 × per round | errors etcd/keel |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for case in 0..etcd[0].reports.len() {
            let (e, k) = (Medians::of(&etcd, case)?, Medians::of(&keel, case)?);
            let first = &etcd[0].reports[case];
            let workload = if first.workload == "watch" {
                format!("watch ({WATCHERS} watchers, {WATCH_PUT_RATE} puts/s)")
            } else {
                first.workload.clone()
            };
            let per_round = |figure: fn(&Report) -> f64| {
                etcd.iter()
                    .zip(&keel)
                    .map(|(e, k)| format!("{:.2}", ratio(figure(&k.reports[case]), figure(&e.reports[case]))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                md,
                "| {workload} | {} | {:.0} | {:.0} | {:.2} | {} | {} | {} | {} | {:.2} | {} | {} | {}/{} |",
                first.clients,
                e.throughput,
                k.throughput,
                ratio(k.throughput, e.throughput),
                micros(e.p50),
                micros(k.p50),
                micros(e.p99),
                micros(k.p99),
                ratio(k.p99 as f64, e.p99 as f64),
                per_round(|r| r.throughput),
                per_round(|r| r.latency_us.p99 as f64),
                e.errors,
                k.errors
            );
        }
        let put1 = etcd[0].reports.iter().position(|r| r.workload == "put" && r.clients == 1);
        if let Some(case) = put1 {
            let of_floor =
                |runs: &[&Measured]| Medians::of(runs, case).map(|m| ratio(m.p50 as f64, floor.latency_us.p50 as f64));
            let _ = writeln!(
                md,
                "\nKeel's 1-client put p50 is {:.2}× the fdatasync floor (etcd's: {:.2}×).",
                of_floor(&keel)?,
                of_floor(&etcd)?
            );
        }
        let _ = writeln!(md);
    }
    if let [etcd, keel] = footprints {
        let _ = writeln!(md, "## Memory and restart ({} keys, 16-byte keys, 256-byte values, 1 member)\n", etcd.keys);
        let _ = writeln!(md, "| | etcd | keel | × |");
        let _ = writeln!(md, "|---|---:|---:|---:|");
        let _ = writeln!(
            md,
            "| resident memory | {} MiB | {} MiB | {:.2} |",
            etcd.resident_bytes >> 20,
            keel.resident_bytes >> 20,
            ratio(keel.resident_bytes as f64, etcd.resident_bytes as f64)
        );
        let _ = writeln!(
            md,
            "| restart to serving | {:.2} s | {:.2} s | {:.2} |",
            etcd.restart_secs,
            keel.restart_secs,
            ratio(keel.restart_secs, etcd.restart_secs)
        );
    }
    Ok(md)
}

fn ratio(keel: f64, etcd: f64) -> f64 {
    if etcd > 0.0 {
        keel / etcd
    } else {
        f64::NAN
    }
}

fn today() -> String {
    command_output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
}

fn version_of(binary: &Path) -> String {
    let output = command_output(Command::new(binary).arg("--version"));
    output.lines().take(2).collect::<Vec<_>>().join(", ")
}

fn command_output(command: &mut Command) -> String {
    command
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn cpu_model() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']));
    model.unwrap_or("unknown").to_string()
}

fn meminfo_total() -> String {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .map(|rest| rest.trim().trim_end_matches("kB").trim().to_string());
    kib.and_then(|k| k.parse::<u64>().ok()).map_or("unknown".into(), |k| format!("{} GiB", k >> 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole comparison, briefly, with etcd standing in for both systems: every workload
    /// runs without errors against a real server and the report has every row.
    #[tokio::test]
    async fn compares_two_servers_and_writes_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let args = CompareArgs {
            keel: "etcd".into(),
            etcd: "etcd".into(),
            out: dir.path().join("BENCHMARKS.md"),
            json: Some(dir.path().join("runs.json")),
            work_dir: Some(dir.path().join("work")),
            seconds: 0.3,
            members: vec![1],
            rounds: 2,
            key_space: 200,
            memory_keys: 500,
        };
        run(&args).await.unwrap();
        let markdown = fs::read_to_string(&args.out).unwrap();
        for row in [
            "| put | 1 |",
            "| put | 64 |",
            "| put | 256 |",
            "| range-linearizable | 64 |",
            "| range-serializable | 64 |",
            "| txn | 64 |",
            "| watch (100 watchers",
        ] {
            assert!(markdown.contains(row), "no row {row} in\n{markdown}");
        }
        assert!(markdown.contains("the fdatasync floor (etcd's: "), "{markdown}");
        assert!(markdown.contains("| resident memory |"), "{markdown}");
        assert!(markdown.contains("2 round(s)"), "{markdown}");
        let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(args.json.unwrap()).unwrap()).unwrap();
        assert_eq!(json["runs"].as_array().unwrap().len(), 4, "two rounds of two systems");
        for run in json["runs"].as_array().unwrap() {
            for report in run["reports"].as_array().unwrap() {
                assert_eq!(report["errors"], 0, "{report}");
                assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
            }
        }
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_lower_middle_one() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![40, 10, 30, 20]), 20);
        assert_eq!(median(vec![7]), 7);
    }
}
