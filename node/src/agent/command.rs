//! Running a `command` pod: start, wait for the run to end, record how it
//! ended, and restart it by its `restart` policy after a growing back-off.
//!
//! Status while it runs: phase Running, ready. Between runs of a restarting
//! pod: phase Running, not ready, reason `CrashLoopBackOff` (as Kubernetes
//! says it), with the restart count, last exit code and error of the run that
//! ended. A pod that is not restarted ends Succeeded (exit 0) or Failed.

use super::Agent;
use crate::containerd::TaskPod;
use crate::runtime::{CommandPod, Exit};
use reef_api::{now_rfc3339, Phase, Pod, PodStatus, RestartPolicy};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What runs a command pod: the embedded runtime or a containerd task.
pub(super) enum Runner {
    Wasm(CommandPod),
    Task(TaskPod),
}

impl Runner {
    async fn run(&self) -> Exit {
        match self {
            Runner::Wasm(pod) => pod.run().await,
            Runner::Task(task) => task.run().await,
        }
    }
}

/// Whether a run that ended like this is run again under `policy`.
fn restarts(policy: RestartPolicy, exit: &Exit) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.succeeded(),
        RestartPolicy::Never => false,
    }
}

/// The one-word reason recorded for a run that ended.
fn reason_of(exit: &Exit) -> &'static str {
    match exit {
        Exit::Code(0) => "Completed",
        Exit::Code(_) => "Error",
        Exit::Trap(_) => "Trapped",
        Exit::OutOfMemory(_) => "OutOfMemory",
        Exit::Start(_) => "StartError",
    }
}

pub(super) async fn run(agent: &Arc<Agent>, key: &str, pod: Pod, command: Runner) {
    let Some(log) = agent.logs.get(key) else {
        return;
    };
    // Restarts counted before this node (or this process) took the pod over.
    let mut status = pod.status.clone();
    let mut wait: Option<Duration> = None;
    loop {
        log.start_run();
        status = PodStatus {
            phase: Phase::Running,
            ready: true,
            reason: None,
            started_at: Some(now_rfc3339()),
            ..status
        };
        agent.report(&pod, status.clone()).await;
        let message = format!(
            "started on node {} ({}){}",
            agent.config.name,
            pod.spec.component,
            if status.restarts > 0 {
                format!(", restart {}", status.restarts)
            } else {
                String::new()
            }
        );
        agent.event(&pod, "Started", message);
        tracing::info!(pod = %key, restarts = status.restarts, "command started");

        let began = Instant::now();
        let exit = command.run().await;
        let ran = began.elapsed();
        tracing::info!(pod = %key, ?ran, "command {exit}");
        status.last_exit_code = Some(exit.code());
        status.last_error = (!exit.succeeded()).then(|| exit.to_string());
        status.ready = false;
        let reason = reason_of(&exit);
        match &exit {
            Exit::OutOfMemory(why) => agent.event(
                &pod,
                "OutOfMemory",
                format!("the run ran out of memory: {why}"),
            ),
            e if !e.succeeded() => agent.event(&pod, "Failed", format!("the run {exit}")),
            _ => {}
        }

        if !restarts(pod.spec.restart, &exit) {
            status.phase = if exit.succeeded() {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
            status.reason = Some(reason.to_string());
            agent.report(&pod, status).await;
            // `reef logs -f` ends here: no run will follow.
            log.finish();
            return;
        }
        let delay = agent.config.backoff.next(wait, ran);
        wait = Some(delay);
        status.reason = Some("CrashLoopBackOff".to_string());
        agent.report(&pod, status.clone()).await;
        agent.event(
            &pod,
            "BackOff",
            format!(
                "back-off {} before restart {} (the run {exit} after {})",
                humantime::format_duration(delay),
                status.restarts + 1,
                humantime::format_duration(Duration::from_millis(ran.as_millis() as u64)),
            ),
        );
        tokio::time::sleep(delay).await;
        status.restarts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decide_restarts() {
        let ok = Exit::Code(0);
        let failed = Exit::Trap("unreachable".into());
        assert!(restarts(RestartPolicy::Always, &ok));
        assert!(restarts(RestartPolicy::Always, &failed));
        assert!(!restarts(RestartPolicy::OnFailure, &ok));
        assert!(restarts(RestartPolicy::OnFailure, &failed));
        assert!(!restarts(RestartPolicy::Never, &failed));
        assert_eq!(reason_of(&Exit::Code(3)), "Error");
        assert_eq!(reason_of(&ok), "Completed");
    }
}
