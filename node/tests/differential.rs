//! Differential test: the same seeded, randomized stream of etcdctl commands (KV, ranges
//! with every option, txn, compaction, leases, and a watch over the whole history) sent to
//! real etcd 3.4 (Debian's `etcd-server`) and to `keel`; every answer — exit status,
//! output, error — must be identical once ids, ports and timings are masked.
//!
//! `KEEL_DIFF_SEED=n` replays one stream; `KEEL_DIFF_OPS` sets its length.

mod common;

use std::process::{Command, Stdio};

use common::{start_etcd, Keel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One command, with `{lease:i}` standing for the i-th lease the server granted.
struct Step {
    args: Vec<String>,
    stdin: Option<String>,
}

/// The commands of one run, drawn from `seed`.
fn commands(seed: u64, ops: usize) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut leases = 0usize;
    let mut revision_guess = 1i64;
    let key = |rng: &mut ChaCha8Rng| format!("k{}", rng.gen_range(0..8));
    let value = |rng: &mut ChaCha8Rng| format!("v{}", rng.gen_range(0..100));
    let step = |args: Vec<String>| Step { args, stdin: None };
    for _ in 0..ops {
        let lease = |rng: &mut ChaCha8Rng| {
            if leases == 0 || rng.gen_ratio(1, 8) {
                "1234".to_string() // never granted
            } else {
                format!("{{lease:{}}}", rng.gen_range(0..leases))
            }
        };
        let json = |rng: &mut ChaCha8Rng, args: &mut Vec<String>| {
            if rng.gen_ratio(1, 3) {
                args.extend(["-w".to_string(), "json".to_string()]);
            }
        };
        match rng.gen_range(0..100) {
            0..=29 => {
                let mut args = vec!["put".to_string(), key(&mut rng), value(&mut rng)];
                if rng.gen_ratio(1, 3) {
                    args.push("--prev-kv".into());
                }
                if rng.gen_ratio(1, 6) {
                    args.push(format!("--lease={}", lease(&mut rng)));
                }
                json(&mut rng, &mut args);
                revision_guess += 1;
                steps.push(step(args));
            }
            30..=54 => {
                let mut args = vec!["get".to_string(), key(&mut rng)];
                match rng.gen_range(0..4) {
                    0 => args.push("--prefix".into()),
                    1 => args.push("--from-key".into()),
                    2 => args.push(key(&mut rng)),
                    _ => {}
                }
                if rng.gen_ratio(1, 3) {
                    args.push(format!("--limit={}", rng.gen_range(0..4)));
                }
                if rng.gen_ratio(1, 3) {
                    let target = ["KEY", "VERSION", "CREATE", "MODIFY", "VALUE"][rng.gen_range(0..5)];
                    let order = ["ASCEND", "DESCEND"][rng.gen_range(0..2)];
                    args.extend([format!("--sort-by={target}"), format!("--order={order}")]);
                }
                if rng.gen_ratio(1, 4) {
                    args.push(format!("--rev={}", rng.gen_range(0..revision_guess + 3)));
                }
                match rng.gen_range(0..6) {
                    0 => args.push("--keys-only".into()),
                    1 => args.push("--print-value-only".into()),
                    2 => args.push("--consistency=s".into()),
                    _ => {}
                }
                json(&mut rng, &mut args);
                steps.push(step(args));
            }
            55..=64 => {
                let mut args = vec!["del".to_string(), key(&mut rng)];
                match rng.gen_range(0..3) {
                    0 => args.push("--prefix".into()),
                    1 => args.push(key(&mut rng)),
                    _ => {}
                }
                if rng.gen_ratio(1, 2) {
                    args.push("--prev-kv".into());
                }
                json(&mut rng, &mut args);
                revision_guess += 1;
                steps.push(step(args));
            }
            65..=79 => {
                let compares: Vec<String> = (0..rng.gen_range(0..3))
                    .map(|_| {
                        let op = ["=", "!=", "<", ">"][rng.gen_range(0..4)];
                        match rng.gen_range(0..4) {
                            0 => format!("value(\"{}\") {op} \"{}\"", key(&mut rng), value(&mut rng)),
                            1 => format!("version(\"{}\") {op} \"{}\"", key(&mut rng), rng.gen_range(0..3)),
                            2 => {
                                format!("mod(\"{}\") {op} \"{}\"", key(&mut rng), rng.gen_range(0..revision_guess + 1))
                            }
                            _ => format!(
                                "create(\"{}\") {op} \"{}\"",
                                key(&mut rng),
                                rng.gen_range(0..revision_guess + 1)
                            ),
                        }
                    })
                    .collect();
                let branch = |rng: &mut ChaCha8Rng| -> Vec<String> {
                    (0..rng.gen_range(0..3))
                        .map(|_| match rng.gen_range(0..3) {
                            0 => format!("put {} {}", key(rng), value(rng)),
                            1 => format!("get {}", key(rng)),
                            _ => format!("del {}", key(rng)),
                        })
                        .collect()
                };
                let (success, failure) = (branch(&mut rng), branch(&mut rng));
                let stdin = format!("{}\n\n{}\n\n{}\n\n", compares.join("\n"), success.join("\n"), failure.join("\n"));
                let mut args = vec!["txn".to_string()];
                json(&mut rng, &mut args);
                revision_guess += 1;
                steps.push(Step { args, stdin: Some(stdin) });
            }
            80..=83 => {
                let revision = rng.gen_range(1..revision_guess + 3);
                steps.push(step(vec!["compaction".into(), revision.to_string()]));
            }
            84..=88 => {
                let ttl = [60, 600, 3600][rng.gen_range(0..3)];
                leases += 1;
                steps.push(step(vec!["lease".into(), "grant".into(), ttl.to_string()]));
            }
            89..=91 => steps.push(step(vec!["lease".into(), "revoke".into(), lease(&mut rng)])),
            92..=94 => steps.push(step(vec!["lease".into(), "keep-alive".into(), "--once".into(), lease(&mut rng)])),
            95..=97 => steps.push(step(vec!["lease".into(), "timetolive".into(), lease(&mut rng), "--keys".into()])),
            _ => steps.push(step(vec!["lease".into(), "list".into()])),
        }
    }
    steps
}

/// A server under test, with the lease ids it granted so far.
struct Target<'a> {
    endpoint: &'a str,
    leases: Vec<String>,
}

/// Replaces what legitimately differs between two servers: ids, ports, timings.
fn mask(text: &str, target: &Target) -> String {
    let mut text = text.replace(target.endpoint, "ENDPOINT");
    for (i, id) in target.leases.iter().enumerate() {
        let decimal = i64::from_str_radix(id, 16).expect("hex lease id").to_string();
        text = text.replace(id.as_str(), &format!("LEASE{i}")).replace(&decimal, &format!("LEASE{i}"));
    }
    let mut masked = String::new();
    for line in text.lines().filter(|l| !l.starts_with("{\"level\"")) {
        let mut line = line.to_string();
        for field in ["cluster_id", "member_id", "raft_term"] {
            if let Some(at) = line.find(&format!("\"{field}\":")) {
                let start = at + field.len() + 3;
                let end = line[start..].find([',', '}']).map_or(line.len(), |e| start + e);
                line.replace_range(start..end, "X");
            }
        }
        if let Some(at) = line.find("remaining(") {
            let end = line[at..].find(')').map_or(line.len(), |e| at + e);
            line.replace_range(at + "remaining(".len()..end, "_");
        }
        masked.push_str(&line);
        masked.push('\n');
    }
    masked
}

fn run(target: &mut Target, step: &Step) -> String {
    let args: Vec<String> = step
        .args
        .iter()
        .map(|a| match a.split_once("{lease:") {
            Some((prefix, rest)) => {
                let i: usize = rest.trim_end_matches('}').parse().expect("lease index");
                format!("{prefix}{}", target.leases[i])
            }
            None => a.clone(),
        })
        .collect();
    // A watch never ends by itself: it reports what it saw in its first seconds.
    let seconds = if args[0] == "watch" { "3" } else { "20" };
    let mut cmd = Command::new("timeout");
    cmd.args([seconds, "etcdctl", &format!("--endpoints={}", target.endpoint), "--command-timeout=10s"]);
    cmd.args(&args).env("ETCDCTL_API", "3").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("etcdctl runs");
    if let Some(input) = &step.stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("txn input");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("etcdctl finishes");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if args.starts_with(&["lease".to_string(), "grant".to_string()]) && out.status.success() {
        let id = stdout.split_whitespace().nth(1).expect("granted lease id").to_string();
        target.leases.push(id);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut stdout = mask(&stdout, target);
    if args.starts_with(&["lease".to_string(), "list".to_string()]) {
        // etcd lists leases in its map's (random) order.
        let mut lines: Vec<&str> = stdout.lines().collect();
        if lines.len() > 1 {
            lines[1..].sort_unstable();
        }
        stdout = lines.iter().map(|l| format!("{l}\n")).collect();
    }
    format!("exit {:?}\n{stdout}{}", out.status.code(), mask(&stderr, target))
}

#[test]
fn masking_hides_ids_but_not_differences() {
    let target = Target { endpoint: "http://127.0.0.1:1", leases: vec!["694d7c2f1a0b3c05".into()] };
    let other = Target { endpoint: "http://127.0.0.1:2", leases: vec!["12ab".into()] };
    let a =
        r#"{"header":{"cluster_id":1,"member_id":2,"revision":5,"raft_term":3},"kvs":[{"lease":7587857488931404805}]}"#;
    let b = r#"{"header":{"cluster_id":9,"member_id":8,"revision":5,"raft_term":7},"kvs":[{"lease":4779}]}"#;
    assert_eq!(mask(a, &target), mask(b, &other));
    let later = b.replace("\"revision\":5", "\"revision\":6");
    assert_ne!(mask(a, &target), mask(&later, &other), "a different revision must show");
    assert_ne!(
        mask("lease 694d7c2f1a0b3c05 granted with TTL(60s)", &target),
        mask("lease 12ab granted with TTL(61s)", &other)
    );
    assert_eq!(mask("x remaining(59s)", &target), mask("x remaining(60s)", &other));
}

#[test]
fn keel_answers_etcdctl_exactly_as_etcd_does() {
    let seed: u64 = std::env::var("KEEL_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let ops: usize = std::env::var("KEEL_DIFF_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = start_etcd(&dir.path().join("etcd"));
    let keel = Keel::single(&dir.path().join("keel"));
    let mut targets = [
        Target { endpoint: &etcd.endpoint, leases: Vec::new() },
        Target { endpoint: &keel.endpoint, leases: Vec::new() },
    ];
    let mut steps = commands(seed, ops);
    // Finally, the history read back through watches (from the start, and from the middle).
    for (from, output) in [(1, "simple"), (ops / 4, "json")] {
        let args = ["watch", &format!("--rev={from}"), "--prefix", "k", "--prev-kv", "-w", output];
        steps.push(Step { args: args.map(String::from).to_vec(), stdin: None });
    }
    let mut differences = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let [etcd_answer, keel_answer] = [0, 1].map(|t| run(&mut targets[t], step));
        if etcd_answer != keel_answer {
            differences.push(format!(
                "step {i}: etcdctl {} {}\n--- etcd\n{etcd_answer}--- keel\n{keel_answer}",
                step.args.join(" "),
                step.stdin.as_deref().map(|s| format!("<<< {s:?}")).unwrap_or_default()
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} answers differ (replay: KEEL_DIFF_SEED={seed} KEEL_DIFF_OPS={ops} cargo test -p keel-node --test differential):\n{}",
        differences.len(),
        steps.len(),
        differences.join("\n")
    );
}
