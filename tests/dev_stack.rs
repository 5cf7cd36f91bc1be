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

/// A running `storepulse dev` and its stdout lines.
struct Dev {
    /// Taken by [`Dev::interrupt`]; killed on drop if a test failed before.
    child: Option<std::process::Child>,
    lines: mpsc::Receiver<String>,
    data_dir: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl Dev {
    fn start() -> Self {
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
        Self {
            child: Some(child),
            lines: rx,
            data_dir,
            _data: data,
        }
    }

    /// Reads lines until `pick` returns Some, failing after `within`.
    fn await_line<T>(
        &self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("dev printed no {what} in {within:?}: {e}"));
            if let Some(v) = pick(&line) {
                return v;
            }
        }
    }

    /// Waits until the live line shows rows in Postgres; returns the psql URL.
    fn await_rows(&self) -> String {
        let url = self.await_line("psql URL", Duration::from_secs(120), |l| {
            l.split("psql ").nth(1).map(|u| u.trim().to_string())
        });
        self.await_line("rows in Postgres", Duration::from_secs(120), |l| {
            l.split("rows in Postgres ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n > 0)
        });
        url
    }

    /// Ctrl-C, then the exit status once everything stopped.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .expect("kill")
                .success()
        );
        child.wait().expect("wait")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn assert_nothing_left(data_dir: &std::path::Path) {
    let left = processes_mentioning(&data_dir.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let leftover: Vec<_> = std::fs::read_dir(data_dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        leftover.is_empty(),
        "the throwaway data dir is removed: {leftover:?}"
    );
}

#[test]
fn dev_runs_the_pipeline_and_stops_cleanly_on_ctrl_c() {
    let mut dev = Dev::start();
    let flavour = dev.await_line("read store flavour", Duration::from_secs(120), |l| {
        l.split("read store : ")
            .nth(1)
            .map(|f| f.trim().to_string())
    });
    let installed = storepulse::local_stack::PostgresOptions::preferred()
        .expect("postgres")
        .flavour;
    assert_eq!(
        flavour,
        installed.to_string(),
        "dev says which flavour the read store is (TimescaleDB when it is installed)"
    );
    // The notifier runs with an editable policy sending to a local printing webhook
    // (its line comes after the psql URL's).
    let mut url = String::new();
    let policy = dev.await_line("notifier policy", Duration::from_secs(120), |l| {
        if let Some(u) = l.split("psql ").nth(1) {
            url = u.trim().to_string();
        }
        l.split("notifier   : ")
            .nth(1)
            .and_then(|rest| rest.split(" (edit it").next())
            .map(std::path::PathBuf::from)
    });
    let text = std::fs::read_to_string(&policy).expect("the dev notification policy");
    assert!(text.contains("/notify"), "{text}");
    dev.await_line("rows in Postgres", Duration::from_secs(120), |l| {
        l.split("rows in Postgres ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
    });
    assert!(
        url.starts_with("postgres://"),
        "dev prints how to connect: {url}"
    );
    assert!(
        !processes_mentioning(&dev.data_dir.display().to_string()).is_empty(),
        "Postgres runs in the data dir"
    );
    let status = dev.interrupt();
    assert!(status.success(), "dev exits 0 on Ctrl-C: {status}");
    assert_nothing_left(&dev.data_dir);
}

#[test]
fn a_stopped_service_is_shown_at_once_and_the_rest_keeps_running() {
    let mut dev = Dev::start();
    let url = dev.await_rows();
    // Break the compactor: the table it writes sensor readings to disappears (a
    // non-retryable error), while ingest keeps accepting.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute("DROP TABLE sensor_readings CASCADE")
            .await
            .expect("drop table");
    });
    let stopped = dev.await_line("compactor STOPPED", Duration::from_secs(60), |l| {
        l.contains("compactor STOPPED: ").then(|| l.to_string())
    });
    assert!(
        stopped.contains("sensor_readings"),
        "the reason is shown: {stopped}"
    );
    // The next regular live line still flows and still names the stopped service.
    let live = dev.await_line("a live line after the stop", Duration::from_secs(30), |l| {
        (l.contains("accepted ") && l.contains("sim time")).then(|| l.to_string())
    });
    assert!(live.contains("| compactor STOPPED: "), "{live}");
    assert!(
        !live.contains("ingest STOPPED"),
        "ingest keeps running: {live}"
    );

    let status = dev.interrupt();
    assert!(
        !status.success(),
        "dev reports the failure in its exit status"
    );
    assert_nothing_left(&dev.data_dir);
}
