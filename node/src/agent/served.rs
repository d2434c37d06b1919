//! An http pod run as a containerd task: the task serves on a loopback port
//! and the proxy forwards the pod's requests there. The embedded runtime's
//! http pods cannot end; a task can (the shim killed, a port it could not
//! take), and that is a crash: the pod leaves the routing table and its task
//! starts again after the node's back-off, counted in `restarts`, as a
//! command pod's run would be.

use super::Agent;
use crate::containerd::TaskPod;
use crate::pods::LocalPod;
use reef_api::{now_rfc3339, Phase, Pod, PodStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) async fn serve(agent: &Arc<Agent>, key: &str, pod: Pod, task: TaskPod) {
    let Some(log) = agent.logs.get(key) else {
        return;
    };
    let deployment = super::deployment_of(&pod);
    let mut status = pod.status.clone();
    let mut wait: Option<Duration> = None;
    loop {
        log.start_run();
        let began = Instant::now();
        let exit = match task.serve().await {
            Err(exit) => exit,
            Ok((endpoint, started)) => {
                let target = LocalPod::Task(endpoint);
                // Under the lock, so a pod removed meanwhile is not resurrected.
                {
                    let managed = agent.managed();
                    if managed.get(key).is_none_or(|m| m.uid != pod.metadata.uid) {
                        return;
                    }
                    agent.pods.insert(key.to_string(), target.clone());
                }
                status = PodStatus {
                    phase: Phase::Running,
                    ready: false,
                    started_at: Some(now_rfc3339()),
                    // The last run's error stays, as a command pod's does.
                    reason: None,
                    ..status
                };
                let message = format!(
                    "started on node {} ({}) as a containerd task",
                    agent.config.name, pod.spec.component
                );
                agent.event(&pod, "Started", message);
                tracing::info!(pod = %key, "task serving");
                let ready = async {
                    while !agent.probe(&pod, &target).await {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                };
                agent.report(&pod, status.clone()).await;
                let mut started = started;
                let ended = tokio::select! {
                    () = started.ended() => true,
                    () = ready => false,
                };
                if !ended {
                    agent
                        .pods
                        .mark_ready(key, &deployment, &pod.metadata.labels);
                    status.ready = true;
                    agent.report(&pod, status.clone()).await;
                }
                started.ended().await;
                // A dead task takes no requests: out of routing before its
                // run is removed and its port is anyone's to take.
                agent.pods.remove(key);
                started.exit().await
            }
        };
        let ran = began.elapsed();
        tracing::warn!(pod = %key, ?ran, "task {exit}");
        agent.event(&pod, "Failed", format!("the task {exit}"));
        let delay = agent.config.backoff.next(wait, ran);
        wait = Some(delay);
        status = PodStatus {
            phase: Phase::Running,
            ready: false,
            reason: Some("CrashLoopBackOff".into()),
            last_exit_code: Some(exit.code()),
            last_error: Some(exit.to_string()),
            ..status
        };
        agent.report(&pod, status.clone()).await;
        agent.event(
            &pod,
            "BackOff",
            format!(
                "back-off {} before restart {}",
                humantime::format_duration(delay),
                status.restarts + 1
            ),
        );
        tokio::time::sleep(delay).await;
        status.restarts += 1;
    }
}
