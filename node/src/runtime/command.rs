//! `command` pods: one long-lived instance per run, calling `wasi:cli/run`.
//!
//! A run ends when the guest returns, exits, traps or runs out of memory; the
//! caller (the agent) decides whether to run it again. A run never ends by
//! itself because of time: it yields to other tasks on every epoch tick so a
//! spinning guest cannot starve the pods beside it. Dropping the future of
//! [`CommandPod::run`] stops the instance.

use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use super::engine::CommandComponent;
use super::http::PodSettings;
use super::limits::{MemoryBudget, MemoryRefused};
use super::state::{HostState, Sandbox};

/// How one run of a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest returned from `run` (0 for `Ok`, 1 for `Err`) or called `exit`.
    Code(i32),
    /// The instance trapped (a panic, an invalid operation, ...).
    Trap(String),
    /// The instance wanted more memory than the pod's budget.
    OutOfMemory(String),
    /// The instance could not be started at all.
    Start(String),
}

impl Exit {
    pub fn succeeded(&self) -> bool {
        *self == Exit::Code(0)
    }

    /// The exit code to record: the guest's own, or 1 for a run that failed
    /// without one (as a shell reports a crashed process).
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(code) => *code,
            _ => 1,
        }
    }
}

impl Exit {
    /// How a run ended, from its exit code and the report a runner gave in
    /// this type's own words (the shim's last line: `trapped: …`), if any.
    pub fn reported(code: i32, report: Option<&str>) -> Exit {
        let said = |prefix: &str| {
            report
                .and_then(|r| r.strip_prefix(prefix))
                .map(str::to_string)
        };
        if code == 0 {
            Exit::Code(0)
        } else if let Some(why) = said("trapped: ") {
            Exit::Trap(why)
        } else if let Some(why) = said("ran out of memory: ") {
            Exit::OutOfMemory(why)
        } else if let Some(why) = said("could not start: ") {
            Exit::Start(why)
        } else {
            Exit::Code(code)
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Trap(why) => write!(f, "trapped: {why}"),
            Exit::OutOfMemory(why) => write!(f, "ran out of memory: {why}"),
            Exit::Start(why) => write!(f, "could not start: {why}"),
        }
    }
}

/// One `command` pod on this node: a prepared component plus its sandbox.
#[derive(Clone)]
pub struct CommandPod {
    component: CommandComponent,
    sandbox: Sandbox,
    memory_bytes: u64,
}

impl CommandPod {
    /// `program` is the guest's `argv[0]` (the pod's name); `settings.timeout`
    /// does not apply to commands.
    pub fn new(component: CommandComponent, program: &str, settings: &PodSettings) -> CommandPod {
        CommandPod {
            component,
            sandbox: settings.sandbox(program),
            memory_bytes: settings.memory_bytes,
        }
    }

    pub fn digest(&self) -> &str {
        self.component.digest()
    }

    /// Runs the program once, to its end. Must be called within a tokio runtime.
    pub async fn run(&self) -> Exit {
        // A fresh budget per run: a run holds one instance, and what the
        // previous run held went with its store.
        let budget = MemoryBudget::new(self.memory_bytes);
        let state = match HostState::new(&self.sandbox, budget) {
            Ok(state) => state,
            Err(e) => return Exit::Start(format!("preparing the sandbox: {e}")),
        };
        let mut store = Store::new(self.component.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| {
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        let command = match self.component.pre.instantiate_async(&mut store).await {
            Ok(command) => command,
            Err(e) => return classify(&e, store.data().limiter.exceeded(), true),
        };
        match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => Exit::Code(0),
            Ok(Err(())) => Exit::Code(1),
            Err(e) => classify(&e, store.data().limiter.exceeded(), false),
        }
    }
}

fn classify(e: &wasmtime::Error, out_of_memory: bool, starting: bool) -> Exit {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Exit::Code(exit.0);
    }
    let oom = e.downcast_ref::<MemoryRefused>().map(ToString::to_string);
    if out_of_memory || oom.is_some() {
        return Exit::OutOfMemory(oom.unwrap_or_else(|| e.root_cause().to_string()));
    }
    if starting {
        return Exit::Start(format!("{e:#}"));
    }
    match e.downcast_ref::<Trap>() {
        Some(trap) => Exit::Trap(trap.to_string()),
        None => Exit::Trap(e.root_cause().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn an_exit_said_in_its_own_words_reads_back_as_itself() {
        for exit in [
            Exit::Trap("wasm trap: unreachable".into()),
            Exit::OutOfMemory("64 MiB budget".into()),
            Exit::Start("no such export".into()),
        ] {
            assert_eq!(Exit::reported(1, Some(&exit.to_string())), exit);
        }
        assert_eq!(Exit::reported(3, Some("exited with code 3")), Exit::Code(3));
        assert_eq!(Exit::reported(137, None), Exit::Code(137));
        assert_eq!(Exit::reported(0, Some("trapped: x")), Exit::Code(0));
    }
}
