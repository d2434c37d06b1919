//! One container: a component read from the image, prepared by reef's
//! runtime with the spec's limits, run once (a `wasi:cli` command to its end,
//! or a `wasi:http` handler serving until killed), and its exit.
//!
//! A task has one pid to report, and no process of its own: it is the shim's.
//! Its state changes in one place, the run task, so an exit is published
//! exactly once whether the guest ended or was killed.

use crate::serve;
use crate::spec::{Program, World};
use crate::stdio::FifoOutput;
use reef_node::containerd::LISTENING;
use reef_node::runtime::{CommandPod, HttpPod, PodSettings, Runtime, ScratchDir, ScratchQuota};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// A task's life as containerd sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Stopped { code: u32, at: SystemTime },
}

/// What the component is.
#[derive(Clone)]
enum Prepared {
    Command(CommandPod),
    Http(HttpPod, std::net::SocketAddr),
}

pub struct Container {
    pub id: String,
    pub bundle: String,
    pub stdout: String,
    pub stderr: String,
    pub pid: u32,
    prepared: Prepared,
    output: Arc<FifoOutput>,
    state: watch::Sender<State>,
    /// Signals for the run task; it stops on the first.
    signals: watch::Sender<Option<u32>>,
    /// Told once, when the task has stopped: its exit code and time.
    on_exit: Mutex<Option<Box<dyn FnOnce(u32, SystemTime) + Send>>>,
}

/// Signals that stop a guest: it cannot catch any, so each ends it.
pub fn stops(signal: u32) -> bool {
    matches!(signal, 1 | 2 | 9 | 15)
}

impl Container {
    /// Prepares the component named by the spec; nothing runs yet.
    pub async fn create(
        runtime: &Runtime,
        id: &str,
        bundle: &Path,
        program: Program,
        wasm: Vec<u8>,
        stdout: &str,
        stderr: &str,
    ) -> anyhow::Result<Container> {
        let digest = reef_node::runtime::digest_of(&wasm);
        let output = Arc::new(FifoOutput::start(stdout, stderr));
        let scratch = ScratchDir::create(bundle.join("scratch"), ScratchQuota::default())?;
        let settings = PodSettings {
            env: program.env.clone(),
            args: program.args.clone(),
            memory_bytes: program.memory_bytes,
            timeout: program.timeout,
            scratch: Some(scratch),
            output: Some(output.clone()),
            ..PodSettings::default()
        };
        // The spec's world, when it names one (a reef node always does): a
        // command cannot pass itself off as an http server, or the reverse.
        // Else the component says what it is: a command exports wasi:cli/run,
        // an http handler wasi:http/incoming-handler.
        let command = match program.world {
            Some(World::Http) => None,
            Some(World::Command) => Some(runtime.prepare_command(&digest, &wasm).await?),
            None => match runtime.prepare_command(&digest, &wasm).await {
                Ok(command) => Some(command),
                Err(reef_node::runtime::PrepareError::NotCommand(_)) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let prepared = match command {
            Some(command) => Prepared::Command(CommandPod::new(command, id, &settings)),
            None => {
                let http = runtime.prepare_http(&digest, &wasm).await?;
                Prepared::Http(HttpPod::new(http, settings), program.listen)
            }
        };
        Ok(Container {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            pid: std::process::id(),
            prepared,
            output,
            state: watch::Sender::new(State::Created),
            signals: watch::Sender::new(None),
            on_exit: Mutex::new(None),
        })
    }

    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Starts the run; `on_exit` is told its end.
    pub fn start(
        self: &Arc<Self>,
        on_exit: Box<dyn FnOnce(u32, SystemTime) + Send>,
    ) -> anyhow::Result<()> {
        let started = self.state.send_if_modified(|state| {
            let created = *state == State::Created;
            if created {
                *state = State::Running;
            }
            created
        });
        anyhow::ensure!(started, "task {} is not in the created state", self.id);
        *self.on_exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(on_exit);
        let this = self.clone();
        tokio::spawn(async move {
            let mut signals = this.signals.subscribe();
            let code = tokio::select! {
                code = this.run() => code,
                signal = signals.wait_for(Option::is_some) => {
                    128 + signal.ok().and_then(|s| *s).unwrap_or(9)
                }
            };
            this.stopped(code).await;
        });
        Ok(())
    }

    async fn run(&self) -> u32 {
        match &self.prepared {
            Prepared::Command(pod) => {
                let exit = pod.run().await;
                if !exit.succeeded() {
                    let line = format!("{}: {exit}\n", self.id);
                    reef_node::runtime::OutputSink::write(
                        self.output.as_ref(),
                        reef_node::runtime::Stream::Stderr,
                        line.as_bytes(),
                    );
                }
                exit.code() as u32
            }
            Prepared::Http(pod, listen) => match serve::http(pod.clone(), *listen, |bound| {
                let line = format!("{}: {LISTENING}{bound}\n", self.id);
                reef_node::runtime::OutputSink::write(
                    self.output.as_ref(),
                    reef_node::runtime::Stream::Stderr,
                    line.as_bytes(),
                );
            })
            .await
            {
                Ok(never) => match never {},
                Err(e) => {
                    let line = format!("{}: serving on {listen}: {e}\n", self.id);
                    reef_node::runtime::OutputSink::write(
                        self.output.as_ref(),
                        reef_node::runtime::Stream::Stderr,
                        line.as_bytes(),
                    );
                    1
                }
            },
        }
    }

    /// The one place a task stops: output flushed, state set, exit told.
    async fn stopped(&self, code: u32) {
        self.output.finish().await;
        let at = SystemTime::now();
        self.state.send_replace(State::Stopped { code, at });
        let on_exit = self
            .on_exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(on_exit) = on_exit {
            on_exit(code, at);
        }
    }

    /// Delivers a signal: one that stops a guest ends a running task, or
    /// marks a created one stopped.
    pub async fn kill(&self, signal: u32) -> anyhow::Result<()> {
        anyhow::ensure!(
            stops(signal),
            "signal {signal} means nothing to a wasm guest (SIGKILL, SIGTERM, SIGINT and SIGHUP stop it)"
        );
        let never_started = self.state.send_if_modified(|state| {
            let created = *state == State::Created;
            if created {
                *state = State::Stopped {
                    code: 128 + signal,
                    at: SystemTime::now(),
                };
            }
            created
        });
        if !never_started {
            self.signals.send_if_modified(|s| {
                let first = s.is_none();
                if first {
                    *s = Some(signal);
                }
                first
            });
        }
        Ok(())
    }

    /// Waits until the task has stopped: its exit code and time.
    pub async fn wait(&self) -> (u32, SystemTime) {
        let mut state = self.state.subscribe();
        loop {
            if let State::Stopped { code, at } = *state.borrow_and_update() {
                return (code, at);
            }
            if state.changed().await.is_err() {
                return (255, SystemTime::now());
            }
        }
    }
}
