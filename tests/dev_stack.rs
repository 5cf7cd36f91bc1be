//! The newcomer's command: `storepulse dev` runs the pipeline with simulated stores,
//! shows rows arriving, and on Ctrl-C stops and leaves no process or data behind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

#[test]
fn dev_runs_the_pipeline_and_stops_cleanly_on_ctrl_c() {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("stack");
    let mut child = Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args([
            "dev",
            "--stores",
            "5",
            "--rate",
            "200",
            "--ingest-port",
            "0",
            "--data-dir",
        ])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut saw_psql = false;
    let mut rows_seen = 0i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while rows_seen == 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("dev prints progress before the deadline");
        saw_psql |= line.contains("psql postgres://");
        if let Some(rest) = line.split("rows in Postgres ").nth(1) {
            rows_seen = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    assert!(saw_psql, "dev prints how to connect");
    assert!(
        !processes_mentioning(&data_dir.display().to_string()).is_empty(),
        "Postgres runs in the data dir"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("wait");
    assert!(status.success(), "dev exits 0 on Ctrl-C: {status}");
    let left = processes_mentioning(&data_dir.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let leftover: Vec<_> = std::fs::read_dir(&data_dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        leftover.is_empty(),
        "the throwaway data dir is removed: {leftover:?}"
    );
}
