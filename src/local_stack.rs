//! A throwaway local stack: a private PostgreSQL cluster and a `nisshi` broker, each
//! a child process on a free loopback port, used by `storepulse dev` and the tests.
//!
//! Guarantees: children die with the thread that started them (`PR_SET_PDEATHSIG`),
//! and are stopped on drop, so neither a Ctrl-C nor a failed test leaves a process
//! behind. Postgres runs as the `postgres` system user when we are root (`initdb`
//! refuses root), as ourselves otherwise. The cluster preloads TimescaleDB when the
//! extension is installed for its server (the read store then migrates to the
//! TimescaleDB flavour), unless plain PostgreSQL is asked for.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use storepulse_runtime::KafkaConfig;
use storepulse_runtime::db::Flavour;

/// Version of the broker the project is tested with.
pub const NISSHI_VERSION: &str = "0.8.1";

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("{what} did not become ready within {secs}s; see {log}")]
    NotReady {
        what: &'static str,
        secs: u64,
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> Result<u16, StackError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port"))?;
    Ok(l.local_addr().map_err(io("local addr"))?.port())
}

/// Makes the child receive SIGKILL when the thread that spawned it dies, and puts it
/// in its own process group so a terminal's Ctrl-C reaches only us: we stop the
/// children ourselves, after the services finished with them.
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; this
    // runs in the forked child after credentials were changed (so it is not reset).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `signal` to our `child`, waits up to `wait` for it to exit, then kills it.
pub fn terminate(child: &mut Child, signal: i32, wait: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY-free: kill(2) via libc on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, signal);
        }
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The PostgreSQL server binaries: `$STOREPULSE_PG_BIN`, `pg_config --bindir`, or
/// the newest `/usr/lib/postgresql/*/bin`.
pub fn postgres_bin_dir() -> Result<PathBuf, StackError> {
    if let Some(dir) = std::env::var_os("STOREPULSE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.retain(|p| p.join("initdb").is_file());
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(best) = candidates.pop() {
        return Ok(best);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    Err(StackError::Setup(
        "PostgreSQL server binaries not found: install postgresql (Debian: apt-get install postgresql) or set STOREPULSE_PG_BIN".into(),
    ))
}

/// Whether the TimescaleDB extension is installed for the server in `bin`
/// (Debian layout: `<bin>/../lib/timescaledb.so`, or `pg_config --pkglibdir`).
pub fn timescaledb_installed(bin: &Path) -> bool {
    if bin
        .parent()
        .is_some_and(|v| v.join("lib/timescaledb.so").is_file())
    {
        return true;
    }
    Command::new(bin.join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|lib| lib.join("timescaledb.so").is_file())
}

/// How to start a [`LocalPostgres`].
#[derive(Debug, Clone, Copy)]
pub struct PostgresOptions {
    /// TimescaleDB: preload the extension (it must be installed); plain: do not, so
    /// the read store migrates to the plain flavour even where TimescaleDB is installed.
    pub flavour: Flavour,
    /// Run TimescaleDB's background jobs (policies) on their schedules. Tests turn
    /// them off and run the jobs they test themselves, so nothing happens on a clock.
    pub background_jobs: bool,
}

impl PostgresOptions {
    /// TimescaleDB when installed for the server's binaries, else plain; jobs on.
    pub fn preferred() -> Result<Self, StackError> {
        let bin = postgres_bin_dir()?;
        Ok(Self {
            flavour: if timescaledb_installed(&bin) {
                Flavour::TimescaleDb
            } else {
                Flavour::Plain
            },
            background_jobs: true,
        })
    }
}

/// uid/gid to run Postgres as: `postgres` when we are root, else ourselves.
fn postgres_user() -> Result<Option<(u32, u32)>, StackError> {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io("read /etc/passwd"))?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            let uid = f[2]
                .parse()
                .map_err(|_| StackError::Setup("bad uid for postgres".into()))?;
            let gid = f[3]
                .parse()
                .map_err(|_| StackError::Setup("bad gid for postgres".into()))?;
            return Ok(Some((uid, gid)));
        }
    }
    Err(StackError::Setup(
        "running as root, and initdb refuses root: create a `postgres` user (useradd -r postgres) or run as another user".into(),
    ))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), StackError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(io(format!("chown {}", path.display())))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io("read dir"))? {
            let entry = entry.map_err(io("read dir entry"))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A private PostgreSQL cluster. Superuser `storepulse`, trust auth, loopback only.
#[derive(Debug)]
pub struct LocalPostgres {
    child: Child,
    pub port: u16,
    /// Data directory, log file beside it.
    pub data_dir: PathBuf,
    /// Whether the server preloads TimescaleDB (the flavour a new read store gets).
    pub flavour: Flavour,
}

impl LocalPostgres {
    /// `initdb`s `root/pgdata` (unless it exists) and starts the server on `port`
    /// (or a free one), with TimescaleDB when it is installed.
    pub fn start(root: &Path, port: Option<u16>) -> Result<Self, StackError> {
        Self::start_with(root, port, PostgresOptions::preferred()?)
    }

    /// [`LocalPostgres::start`] with the flavour and jobs given.
    pub fn start_with(
        root: &Path,
        port: Option<u16>,
        options: PostgresOptions,
    ) -> Result<Self, StackError> {
        let bin = postgres_bin_dir()?;
        if options.flavour == Flavour::TimescaleDb && !timescaledb_installed(&bin) {
            return Err(StackError::Setup(format!(
                "TimescaleDB is not installed for {}: run scripts/install-deps.sh",
                bin.display()
            )));
        }
        let user = postgres_user()?;
        std::fs::create_dir_all(root).map_err(io(format!("create {}", root.display())))?;
        let data_dir = root.join("pgdata");
        let log = root.join("postgres.log");
        if let Some((uid, gid)) = user {
            chown_tree(root, uid, gid)?;
            // Postgres must be able to reach its directory through every parent.
            let mut p = root.parent();
            while let Some(dir) = p {
                if let Ok(meta) = std::fs::metadata(dir) {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = meta.permissions().mode();
                    if mode & 0o001 == 0 {
                        let _ = std::fs::set_permissions(
                            dir,
                            std::fs::Permissions::from_mode(mode | 0o001),
                        );
                    }
                }
                p = dir.parent();
            }
        }
        let as_user = |cmd: &mut Command| {
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
        };
        if !data_dir.join("PG_VERSION").exists() {
            let mut cmd = Command::new(bin.join("initdb"));
            cmd.args(["-D"])
                .arg(&data_dir)
                .args([
                    "-U",
                    "storepulse",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--locale=C",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            as_user(&mut cmd);
            let out = cmd.output().map_err(io("run initdb"))?;
            if !out.status.success() {
                return Err(StackError::Setup(format!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let log_file = std::fs::File::create(&log).map_err(io("create postgres.log"))?;
        if let Some((uid, gid)) = user {
            let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
        }
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data_dir)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=256MB"]);
        if options.flavour == Flavour::TimescaleDb {
            cmd.args(["-c", "shared_preload_libraries=timescaledb"])
                .args(["-c", "timescaledb.telemetry_level=off"]);
            if !options.background_jobs {
                cmd.args(["-c", "timescaledb.max_background_workers=0"]);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(io("log"))?)
            .stderr(log_file);
        as_user(&mut cmd);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(io("start postgres"))?;
        let pg = Self {
            child,
            port,
            data_dir,
            flavour: options.flavour,
        };
        if !wait_for_port(port, Duration::from_secs(30)) {
            return Err(StackError::NotReady {
                what: "postgres",
                secs: 30,
                log: log.display().to_string(),
            });
        }
        Ok(pg)
    }

    /// Process id of the postmaster (its backends are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// URL of a database on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://storepulse@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `name` unless it exists, waiting for the server to accept logins.
    pub async fn create_database(&self, name: &str) -> Result<String, StackError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    break client;
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(StackError::Setup(format!("postgres login: {e}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(|e| StackError::Setup(e.to_string()))?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE \"{}\"", name.replace('"', "")))
                .await
                .map_err(|e| StackError::Setup(e.to_string()))?;
        }
        Ok(self.url(name))
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        // SIGINT = fast shutdown: disconnect clients, checkpoint, exit.
        terminate(&mut self.child, libc::SIGINT, Duration::from_secs(10));
    }
}

/// The `nisshi` binary: `$STOREPULSE_NISSHI`, on PATH, or in `~/.cargo/bin`.
pub fn find_nisshi() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STOREPULSE_NISSHI") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("nisshi"))
        .find(|p| p.is_file())
}

/// A Kafka-protocol broker (`nisshi`) on loopback.
#[derive(Debug)]
pub struct LocalBroker {
    child: Child,
    pub port: u16,
}

impl LocalBroker {
    /// Starts the broker with `storage` (`memory://nisshi/`, `postgres://...`,
    /// `sqlite://...`), logging to `root/nisshi.log`.
    pub fn start(root: &Path, storage: &str, port: Option<u16>) -> Result<Self, StackError> {
        let bin = find_nisshi().ok_or_else(|| {
            StackError::Setup(format!(
                "the nisshi broker is not installed: run `cargo +nightly install nisshi --version {NISSHI_VERSION} --locked` (one-time, about 20 minutes) or `scripts/install-deps.sh`"
            ))
        })?;
        std::fs::create_dir_all(root).map_err(io(format!("create {}", root.display())))?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let log = root.join(format!("nisshi-{port}.log"));
        let log_file = std::fs::File::create(&log).map_err(io("create nisshi.log"))?;
        let mut cmd = Command::new(bin);
        cmd.current_dir(root)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args([
                "--storage-engine",
                storage,
                "--group-initial-rebalance-delay",
                "0s",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(io("log"))?)
            .stderr(log_file);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(io("start nisshi"))?;
        let broker = Self { child, port };
        if !wait_for_port(port, Duration::from_secs(30)) {
            return Err(StackError::NotReady {
                what: "nisshi",
                secs: 30,
                log: log.display().to_string(),
            });
        }
        Ok(broker)
    }

    /// Process id of the broker.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kafka settings pointing at this broker with a topic prefix; topics get one
    /// replica (this is a single broker), retention as in production.
    pub fn kafka_config(&self, topic_prefix: &str, partitions: i32) -> KafkaConfig {
        KafkaConfig {
            brokers: self.bootstrap(),
            topic_prefix: topic_prefix.into(),
            partitions,
            topics: storepulse_runtime::TopicSettings::single_broker(),
            ..KafkaConfig::default()
        }
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        terminate(&mut self.child, libc::SIGTERM, Duration::from_secs(5));
    }
}

/// Installs the broker when it is missing (one-time, about 20 minutes).
pub fn ensure_nisshi() -> Result<PathBuf, StackError> {
    if let Some(p) = find_nisshi() {
        return Ok(p);
    }
    eprintln!(
        "The nisshi broker is not installed. One-time install of nisshi {NISSHI_VERSION} now \
         (cargo +nightly install --locked; about 20 minutes on 2 cores) ..."
    );
    let status = Command::new("cargo")
        .args([
            "+nightly",
            "install",
            "nisshi",
            "--version",
            NISSHI_VERSION,
            "--locked",
        ])
        .status()
        .map_err(io("run cargo +nightly install nisshi"))?;
    if !status.success() {
        return Err(StackError::Setup(format!(
            "installing nisshi failed ({status})"
        )));
    }
    find_nisshi().ok_or_else(|| {
        StackError::Setup("nisshi installed but not found on PATH or in ~/.cargo/bin".into())
    })
}
