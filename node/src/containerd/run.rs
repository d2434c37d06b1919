//! One run of a pod under containerd: a container made for it, a task in it
//! with fresh output FIFOs, its start, its end, and its removal. A run's
//! container id is never used again, so a new run never meets the last
//! one's shim while containerd is still closing it.

use super::fifo::{self, Pump};
use super::Containerd;
use crate::runtime::{Exit, OutputSink, Stream};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::{Code, Status};
use containerd_client::types::Mount;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why a run could not be made.
pub enum RunError {
    /// The shim refused the task (the component does not compile, is not
    /// the pod's world, …): trying again will not help.
    Refused(String),
    /// containerd or the node's files failed; worth another try.
    Failed(String),
}

impl RunError {
    fn failed(what: &str, e: impl std::fmt::Display) -> RunError {
        RunError::Failed(format!("{what}: {e}"))
    }

    pub fn message(&self) -> &str {
        match self {
            RunError::Refused(m) | RunError::Failed(m) => m,
        }
    }
}

/// A run's container: removed (task and all) when the last holder drops it
/// (the pod's task in the agent, or an endpoint still being retired).
pub struct RunGuard {
    containerd: Containerd,
    pub(super) id: String,
    removed: AtomicBool,
}

impl RunGuard {
    /// Removes the run's task and container now.
    pub async fn remove(&self) {
        if !self.removed.swap(true, Ordering::SeqCst) {
            self.containerd.remove(&self.id).await;
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.removed.load(Ordering::SeqCst) {
            return;
        }
        let (containerd, id) = (self.containerd.clone(), self.id.clone());
        // Dropped by an aborted task: the removal goes on without it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { containerd.remove(&id).await });
        }
    }
}

/// A run whose task exists and has not started.
pub struct Created {
    pub(super) guard: Arc<RunGuard>,
    pumps: (Pump, Pump),
}

/// Makes the run's container from `template` and its task, with output
/// FIFOs in `dir` copied into `output`, and the component in `dir/image`
/// mounted read-only as its rootfs. Whatever was made is removed on failure.
pub async fn create(
    containerd: &Containerd,
    id: String,
    template: &Container,
    dir: &Path,
    output: &Arc<dyn OutputSink>,
) -> Result<Created, RunError> {
    let guard = Arc::new(RunGuard {
        containerd: containerd.clone(),
        id: id.clone(),
        removed: AtomicBool::new(false),
    });
    let container = Container {
        id: id.clone(),
        ..template.clone()
    };
    containerd
        .containers()
        .create(Containerd::request(CreateContainerRequest {
            container: Some(container),
        }))
        .await
        .map_err(|e| RunError::failed(&format!("creating container {id}"), e.message()))?;
    let made = task(containerd, &guard, dir, output).await;
    if made.is_err() {
        guard.remove().await;
    }
    made
}

async fn task(
    containerd: &Containerd,
    guard: &Arc<RunGuard>,
    dir: &Path,
    output: &Arc<dyn OutputSink>,
) -> Result<Created, RunError> {
    let mut paths = Vec::new();
    let mut pumps = Vec::new();
    for (name, stream) in [("stdout", Stream::Stdout), ("stderr", Stream::Stderr)] {
        let path = dir.join(name);
        fifo::make(&path).map_err(|e| RunError::failed(&format!("FIFO {}", path.display()), e))?;
        let pump = Pump::start(path.clone(), stream, output.clone())
            .map_err(|e| RunError::failed(&format!("opening {}", path.display()), e))?;
        paths.push(path.display().to_string());
        pumps.push(pump);
    }
    let (Some(err), Some(out)) = (pumps.pop(), pumps.pop()) else {
        return Err(RunError::Failed("no output pumps".into()));
    };
    let mount = Mount {
        r#type: "bind".into(),
        source: dir.join("image").display().to_string(),
        options: vec!["rbind".into(), "ro".into()],
        ..Default::default()
    };
    let created = containerd
        .tasks()
        .create(Containerd::request(CreateTaskRequest {
            container_id: guard.id.clone(),
            rootfs: vec![mount],
            stdout: paths[0].clone(),
            stderr: paths[1].clone(),
            ..Default::default()
        }))
        .await;
    match created {
        Ok(_) => Ok(Created {
            guard: guard.clone(),
            pumps: (out, err),
        }),
        Err(e) if e.code() == Code::InvalidArgument => Err(RunError::Refused(format!(
            "the shim refused the task: {}",
            e.message()
        ))),
        Err(e) => Err(RunError::failed("creating the task", e.message())),
    }
}

impl Created {
    /// Starts the task; waiting for its end begins first, so no exit is missed.
    pub async fn start(self) -> Result<Started, RunError> {
        let containerd = &self.guard.containerd;
        let mut tasks = containerd.tasks();
        let wait = tokio::spawn({
            let mut tasks = tasks.clone();
            let request = Containerd::request(WaitRequest {
                container_id: self.guard.id.clone(),
                ..Default::default()
            });
            async move {
                tasks
                    .wait(request)
                    .await
                    .map(|r| r.into_inner().exit_status)
            }
        });
        let started = tasks
            .start(Containerd::request(StartRequest {
                container_id: self.guard.id.clone(),
                ..Default::default()
            }))
            .await;
        if let Err(e) = started {
            wait.abort();
            self.guard.remove().await;
            return Err(RunError::failed("starting the task", e.message()));
        }
        Ok(Started {
            guard: self.guard,
            wait,
            waited: None,
            pumps: Some(self.pumps),
        })
    }
}

type Waited = Result<u32, Status>;

/// A run whose task has started.
pub struct Started {
    pub(super) guard: Arc<RunGuard>,
    wait: tokio::task::JoinHandle<Waited>,
    waited: Option<Result<Waited, tokio::task::JoinError>>,
    pumps: Option<(Pump, Pump)>,
}

impl Started {
    /// What the task wrote on stderr so far (its end).
    pub fn stderr(&self) -> String {
        self.pumps
            .as_ref()
            .map(|(_, err)| err.tail())
            .unwrap_or_default()
    }

    pub fn has_ended(&self) -> bool {
        self.waited.is_some() || self.wait.is_finished()
    }

    /// Returns once the task has ended; cancel-safe, so it can race other
    /// work (an http pod's readiness checks).
    pub async fn ended(&mut self) {
        if self.waited.is_none() {
            self.waited = Some((&mut self.wait).await);
        }
    }

    /// Kills the task (it is ended by [`Started::exit`]).
    pub async fn kill(&self) {
        self.guard.containerd.kill(&self.guard.id).await;
    }

    /// Waits for the task's end and removes the run: how it ended, as the
    /// embedded runtime would say it (the shim's last stderr line names a
    /// trap or running out of memory). Output is read until the removal is
    /// done, so a shim flushing its last lines is never left blocked.
    pub async fn exit(mut self) -> Exit {
        self.ended().await;
        self.guard.remove().await;
        let tail = match self.pumps.take() {
            Some((out, err)) => {
                out.finish().await;
                err.finish().await
            }
            None => String::new(),
        };
        match self.waited.take() {
            Some(Ok(Ok(code))) => {
                let prefix = format!("{}: ", self.guard.id);
                let report = tail.lines().rev().find_map(|l| l.strip_prefix(&prefix));
                Exit::reported(code as i32, report)
            }
            Some(Ok(Err(status))) => {
                Exit::Start(format!("waiting for the task: {}", status.message()))
            }
            Some(Err(e)) => Exit::Start(format!("waiting for the task: {e}")),
            None => Exit::Start("the task's end was not seen".into()),
        }
    }
}
