//! A member whose data directory was damaged refuses to start, naming what is damaged, rather
//! than start on a log that lost what it had synced (and serve reads while every write times
//! out, or serve without acknowledged writes).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{ok, Keel};
use keel_storage::wal::entry_record;

/// The newest WAL segment of a member's data directory.
fn newest_segment(data_dir: &Path) -> PathBuf {
    let wal = data_dir.join("member").join("wal");
    let mut segments: Vec<PathBuf> = fs::read_dir(&wal)
        .expect("the WAL directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("wal-")))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// The member's Raft index, as `endpoint status` reports it.
fn raft_index(endpoint: &str) -> u64 {
    let out = ok(endpoint, &["endpoint", "status", "-w", "fields"]);
    let field = out.lines().find_map(|l| l.strip_prefix("\"RaftIndex\" : ")).expect("a RaftIndex field");
    field.trim().parse().expect("a number")
}

/// A member with `writes` keys put, stopped cleanly; its newest segment and last log index.
fn stopped_member(dir: &Path, writes: usize) -> (Keel, PathBuf, u64) {
    let mut keel = Keel::single(dir);
    for i in 0..writes {
        ok(&keel.endpoint, &["put", &format!("k{i}"), &"v".repeat(100)]);
    }
    let last = raft_index(&keel.endpoint);
    assert!(keel.terminate().success());
    let segment = newest_segment(&keel.data_dir);
    (keel, segment, last)
}

/// Restarts the member, which must exit with an error whose log names `file` and says `why`.
fn assert_refuses(keel: &mut Keel, file: &Path, why: &str) {
    keel.restart();
    let status = keel.wait_exit(20);
    assert!(!status.success(), "a member on damaged data started");
    let log = keel.log();
    let name = file.file_name().expect("a file name").to_string_lossy();
    assert!(log.contains(why) && log.contains(name.as_ref()), "the log says why, naming {name}:\n{log}");
}

#[test]
fn a_log_cut_short_after_a_clean_stop_is_refused_naming_the_segment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut keel, segment, last) = stopped_member(dir.path(), 30);
    let data = fs::read(&segment).expect("the segment");
    let record = entry_record(&data, last).expect("the last entry is in the newest segment");
    let file = fs::OpenOptions::new().write(true).open(&segment).expect("the segment opens");
    // Inside the last entry: the record runs past the end of the file.
    file.set_len(record.end as u64 - 10).expect("cut");
    assert_refuses(&mut keel, &segment, "runs past the end of the file");
    // At the record's start: the log reads cleanly but ends before what the store applied.
    file.set_len(record.start as u64).expect("cut");
    assert_refuses(&mut keel, &segment, &format!("applied the log up to index {last}"));
}

#[test]
fn a_record_length_damaged_in_the_middle_is_refused_not_cut_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut keel, segment, last) = stopped_member(dir.path(), 30);
    let mut data = fs::read(&segment).expect("the segment");
    let record = entry_record(&data, last / 2).expect("a middle entry");
    // A length that runs past the end of the file: "only zeros follow" is no proof of a torn
    // write here, and cutting the log there would lose every later write.
    let past_the_end = (data.len() as u32).to_be_bytes();
    data[record.start..record.start + 4].copy_from_slice(&past_the_end);
    fs::write(&segment, &data).expect("damaged");
    assert_refuses(&mut keel, &segment, "runs past the end of the file");
}
