//! One shutdown discipline for every service.
//!
//! A service runs its work as named tasks in a [`ServiceTasks`] set sharing one
//! [`CancellationToken`]. The caller owns the token (SIGTERM in `main`, the test in
//! tests). The first task to end — failed or not — cancels the rest, since every task
//! of a service is meant to live as long as the service. After cancellation the tasks
//! get a grace period to finish in-flight work and commit; stragglers are aborted.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::LogConfig;

/// Boxed error a task may end with.
pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

/// Why a service stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("task `{task}` failed: {source}")]
    TaskFailed {
        task: &'static str,
        #[source]
        source: TaskError,
    },
    #[error("task `{task}` panicked")]
    TaskPanicked { task: &'static str },
    #[error(
        "tasks {tasks:?} were still running {grace_ms} ms after shutdown began and were aborted; their in-flight work was not committed and will be re-read"
    )]
    GraceExceeded {
        tasks: Vec<&'static str>,
        grace_ms: u64,
    },
}

/// Named tasks of one service, cancelled together.
#[derive(Debug)]
pub struct ServiceTasks {
    /// Cancelled on external shutdown or when any task ends.
    token: CancellationToken,
    /// The running tasks, each returning its name with its result.
    set: JoinSet<(&'static str, Result<(), TaskError>)>,
    /// Names of the tasks not yet ended, to say which ones outlived the grace period.
    running: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl ServiceTasks {
    /// A task set whose token is a child of `shutdown`.
    pub fn new(shutdown: &CancellationToken) -> Self {
        Self {
            token: shutdown.child_token(),
            set: JoinSet::new(),
            running: Default::default(),
        }
    }

    /// The token the tasks watch.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs `fut` as the task `name`.
    pub fn spawn<F, E>(&mut self, name: &'static str, fut: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<TaskError>,
    {
        let running = self.running.clone();
        running.lock().unwrap_or_else(|e| e.into_inner()).push(name);
        self.set.spawn(async move {
            let result = fut.await.map_err(Into::into);
            let mut names = running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = names.iter().position(|n| *n == name) {
                names.swap_remove(i);
            }
            (name, result)
        });
    }

    /// Waits for shutdown (or the first task to end), then up to `grace` for the rest.
    /// Returns the first failure, if any.
    pub async fn join(mut self, grace: Duration) -> Result<(), ServiceError> {
        let mut first_error: Option<ServiceError> = None;
        let mut record =
            |res: Result<(&'static str, Result<(), TaskError>), tokio::task::JoinError>,
             token: &CancellationToken| {
                match res {
                    Ok((name, Ok(()))) => {
                        if !token.is_cancelled() {
                            info!(task = name, "task ended; stopping the service");
                        }
                    }
                    Ok((name, Err(e))) => {
                        error!(task = name, error = %e, "task failed; stopping the service");
                        first_error.get_or_insert(ServiceError::TaskFailed {
                            task: name,
                            source: e,
                        });
                    }
                    Err(e) if e.is_panic() => {
                        error!("a task panicked; stopping the service");
                        first_error
                            .get_or_insert(ServiceError::TaskPanicked { task: "<panicked>" });
                    }
                    Err(_) => {}
                }
                token.cancel();
            };

        tokio::select! {
            _ = self.token.cancelled() => {}
            Some(res) = self.set.join_next() => record(res, &self.token),
        }
        self.token.cancel();
        let drain = async {
            while let Some(res) = self.set.join_next().await {
                record(res, &self.token);
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            warn!(
                grace_ms = grace.as_millis() as u64,
                "tasks still running after grace period; aborting them"
            );
            self.set.abort_all();
            let tasks = self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            first_error.get_or_insert(ServiceError::GraceExceeded {
                tasks,
                grace_ms: grace.as_millis() as u64,
            });
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// What every service binary does once its configuration is loaded: install the
/// tracing subscriber, turn SIGTERM/SIGINT into cancellation, and run the service.
pub async fn run_until_signalled<C, F, Fut, E>(config: C, log: &LogConfig, run: F) -> Result<(), E>
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    crate::telemetry::init_tracing(log);
    let token = CancellationToken::new();
    cancel_on_signals(token.clone());
    run(config, token).await
}

/// The process exit for a binary's result: on error, one line `error: <what>: <why>`
/// on stderr (the whole cause chain, never a backtrace, whatever `RUST_BACKTRACE`
/// says) and status 1.
pub fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT. A second signal exits the process at once.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested; finishing in-flight work");
        token.cancel();
        wait_for_signal().await;
        warn!("second signal; exiting immediately");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install SIGTERM handler");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn first_failure_cancels_the_others_and_is_returned() {
        let shutdown = CancellationToken::new();
        let mut tasks = ServiceTasks::new(&shutdown);
        let saw_cancel = Arc::new(AtomicBool::new(false));
        let token = tasks.token();
        let flag = saw_cancel.clone();
        tasks.spawn("worker", async move {
            token.cancelled().await;
            flag.store(true, Ordering::SeqCst);
            Ok::<_, TaskError>(())
        });
        tasks.spawn("broken", async { Err::<(), TaskError>("boom".into()) });
        let err = tasks
            .join(Duration::from_secs(5))
            .await
            .expect_err("failure surfaces");
        assert!(err.to_string().contains("broken"), "{err}");
        assert!(
            saw_cancel.load(Ordering::SeqCst),
            "the worker was told to stop"
        );
        assert!(
            !shutdown.is_cancelled(),
            "the caller's token is not cancelled by a child"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stragglers_are_aborted_after_grace() {
        let shutdown = CancellationToken::new();
        let mut tasks = ServiceTasks::new(&shutdown);
        tasks.spawn("stuck", async {
            std::future::pending::<()>().await;
            Ok::<_, TaskError>(())
        });
        shutdown.cancel();
        let started = tokio::time::Instant::now();
        let err = tasks
            .join(Duration::from_secs(3))
            .await
            .expect_err("a shutdown whose grace ran out is a failure");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert!(
            matches!(&err, ServiceError::GraceExceeded { tasks, .. } if tasks == &["stuck"]),
            "{err}"
        );
    }
}
