//! The ttrpc side: containerd's shim lifecycle (`start`, `delete`) and its
//! task v2 service, over the containers of this shim (one, as each
//! container gets its own shim).

use crate::container::{Container, State};
use crate::spec;
use async_trait::async_trait;
use containerd_shim::asynchronous::{publisher::RemotePublisher, spawn, ExitSignal, Shim};
use containerd_shim::{Config, Flags, StartOpts};
use containerd_shim_protos::api::{self, DeleteResponse};
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext};
use reef_node::runtime::{Runtime, RuntimeConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, Mutex};

/// Where compiled components are kept between shims, so the second start of
/// an image loads machine code instead of compiling (`REEF_SHIM_CACHE` in
/// containerd's environment names another place).
const DEFAULT_CACHE: &str = "/var/cache/reef-shim";
/// Instances one container may have live at once (its requests in flight).
const MAX_INSTANCES: u32 = 64;

pub struct ReefShim {
    exit: Arc<ExitSignal>,
    namespace: String,
}

#[async_trait]
impl Shim for ReefShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        ReefShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = opts.id.clone();
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // containerd reads it to reconnect after a restart; the shim's own
        // exit reads it to remove the socket.
        tokio::fs::write("address", &address).await.map_err(|err| {
            containerd_shim::Error::IoError {
                context: "writing the address file".into(),
                err,
            }
        })?;
        Ok(address)
    }

    /// Run by containerd after every task, in the bundle: undo what a shim
    /// that died could not.
    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        if let Ok(bundle) = std::env::current_dir() {
            unmount_rootfs(&bundle);
        }
        Ok(DeleteResponse {
            exit_status: 128 + 9,
            exited_at: MessageField::some(timestamp(SystemTime::now())),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let (events, mut queue) = mpsc::unbounded_channel::<(&'static str, Box<dyn MessageDyn>)>();
        let namespace = self.namespace.clone();
        // Events leave in order, from one task: a publish only queues.
        tokio::spawn(async move {
            while let Some((topic, event)) = queue.recv().await {
                if let Err(e) = publisher
                    .publish(Default::default(), topic, &namespace, event)
                    .await
                {
                    log::warn!("publishing {topic}: {e}");
                }
            }
        });
        TaskService {
            exit: self.exit.clone(),
            events,
            containers: Arc::new(Mutex::new(HashMap::new())),
            runtime: Arc::new(tokio::sync::OnceCell::new()),
        }
    }
}

type Events = mpsc::UnboundedSender<(&'static str, Box<dyn MessageDyn>)>;

pub struct TaskService {
    exit: Arc<ExitSignal>,
    events: Events,
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
    /// Built on the first create: the engine reserves its pool up front.
    runtime: Arc<tokio::sync::OnceCell<Runtime>>,
}

fn timestamp(at: SystemTime) -> Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

fn status(code: ttrpc::Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    if let Some(path) = rootfs.to_str() {
        if let Err(e) = containerd_shim::mount::umount_recursive(Some(path), 0) {
            log::warn!("unmounting {path}: {e}");
        }
    }
}

/// Mounts the image's layers on `bundle/rootfs`, as runc's shim does; on
/// a thread of its own, as the mount may change its thread's directory.
async fn mount_rootfs(mounts: Vec<api::Mount>, rootfs: PathBuf) -> Result<(), String> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mounted = (|| {
            std::fs::create_dir_all(&rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
            for m in &mounts {
                let kind = (!m.type_.is_empty()).then_some(m.type_.as_str());
                let source = (!m.source.is_empty()).then_some(m.source.as_str());
                containerd_shim::mount::mount_rootfs(kind, source, &m.options, &rootfs)
                    .map_err(|e| format!("mounting the image on {}: {e}", rootfs.display()))?;
            }
            Ok(())
        })();
        let _ = done.send(mounted);
    });
    result
        .await
        .unwrap_or_else(|_| Err("the mount thread died".into()))
}

impl TaskService {
    async fn container(&self, id: &str) -> ttrpc::Result<Arc<Container>> {
        self.containers
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| status(ttrpc::Code::NOT_FOUND, format!("no task {id}")))
    }

    async fn runtime(&self) -> ttrpc::Result<&Runtime> {
        self.runtime
            .get_or_try_init(|| async {
                let cache = std::env::var_os("REEF_SHIM_CACHE")
                    .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
                Runtime::new(RuntimeConfig {
                    max_instances: MAX_INSTANCES,
                    artifact_dir: Some(cache),
                    ..RuntimeConfig::default()
                })
            })
            .await
            .map_err(|e| {
                status(
                    ttrpc::Code::INTERNAL,
                    format!("starting the runtime: {e:#}"),
                )
            })
    }

    fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let _ = self.events.send((topic, event));
    }

    /// Reads the spec and the component; the bytes are all the shim needs,
    /// so the image is unmounted again at once.
    async fn load(&self, req: &api::CreateTaskRequest) -> Result<(spec::Program, Vec<u8>), String> {
        let bundle = PathBuf::from(&req.bundle);
        let program = spec::load(&bundle).map_err(|e| e.to_string())?;
        let rootfs = bundle.join(&program.root);
        if !req.rootfs.is_empty() {
            mount_rootfs(req.rootfs.clone(), rootfs.clone()).await?;
        }
        let read = spec::entrypoint_file(&rootfs, &program.entrypoint)
            .map_err(|e| e.to_string())
            .and_then(|file| {
                std::fs::read(&file).map_err(|e| format!("reading {}: {e}", program.entrypoint))
            });
        if !req.rootfs.is_empty() {
            unmount_rootfs(&bundle);
        }
        Ok((program, read?))
    }
}

fn only_the_init_process(exec_id: &str) -> ttrpc::Result<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(status(
            ttrpc::Code::UNIMPLEMENTED,
            "exec: a wasm component has no second process",
        ))
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        if req.terminal {
            return Err(status(
                ttrpc::Code::INVALID_ARGUMENT,
                "a wasm component has no terminal (run without -t)",
            ));
        }
        if self.containers.lock().await.contains_key(&req.id) {
            return Err(status(
                ttrpc::Code::ALREADY_EXISTS,
                format!("task {}", req.id),
            ));
        }
        let (program, wasm) = self
            .load(&req)
            .await
            .map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, e))?;
        let runtime = self.runtime().await?;
        let container = Container::create(
            runtime,
            &req.id,
            Path::new(&req.bundle),
            program,
            wasm,
            &req.stdout,
            &req.stderr,
        )
        .await
        .map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, format!("{e:#}")))?;
        let pid = container.pid;
        self.containers
            .lock()
            .await
            .insert(req.id.clone(), Arc::new(container));
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: false,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        only_the_init_process(&req.exec_id)?;
        let container = self.container(&req.id).await?;
        let (events, id, pid) = (self.events.clone(), req.id.clone(), container.pid);
        container
            .start(Box::new(move |code, at| {
                let exit = TaskExit {
                    container_id: id.clone(),
                    id,
                    pid,
                    exit_status: code,
                    exited_at: MessageField::some(timestamp(at)),
                    ..Default::default()
                };
                let _ = events.send((topics::TASK_EXIT_EVENT_TOPIC, Box::new(exit)));
            }))
            .map_err(|e| status(ttrpc::Code::FAILED_PRECONDITION, format!("{e:#}")))?;
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            }),
        );
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        only_the_init_process(&req.exec_id)?;
        let container = self.container(&req.id).await?;
        let mut response = api::StateResponse {
            id: container.id.clone(),
            bundle: container.bundle.clone(),
            pid: container.pid,
            stdout: container.stdout.clone(),
            stderr: container.stderr.clone(),
            ..Default::default()
        };
        match container.state() {
            State::Created => response.status = api::Status::CREATED.into(),
            State::Running => response.status = api::Status::RUNNING.into(),
            State::Stopped { code, at } => {
                response.status = api::Status::STOPPED.into();
                response.exit_status = code;
                response.exited_at = MessageField::some(timestamp(at));
            }
        }
        Ok(response)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<api::Empty> {
        only_the_init_process(&req.exec_id)?;
        let container = self.container(&req.id).await?;
        container
            .kill(req.signal)
            .await
            .map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, format!("{e:#}")))?;
        Ok(api::Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> ttrpc::Result<api::WaitResponse> {
        only_the_init_process(&req.exec_id)?;
        let container = self.container(&req.id).await?;
        let (code, at) = container.wait().await;
        Ok(api::WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        only_the_init_process(&req.exec_id)?;
        let container = self.container(&req.id).await?;
        let State::Stopped { code, at } = container.state() else {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("task {} must be stopped before it is deleted", req.id),
            ));
        };
        self.containers.lock().await.remove(&req.id);
        let _ = std::fs::remove_dir_all(Path::new(&container.bundle).join("scratch"));
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid: container.pid,
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                ..Default::default()
            }),
        );
        Ok(api::DeleteResponse {
            pid: container.pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> ttrpc::Result<api::PidsResponse> {
        let container = self.container(&req.id).await?;
        Ok(api::PidsResponse {
            processes: vec![api::ProcessInfo {
                pid: container.pid,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        let task_pid = match self.container(&req.id).await {
            Ok(container) => container.pid,
            Err(_) => 0,
        };
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> ttrpc::Result<api::Empty> {
        // Only once no task is left: containerd may still be using one.
        if self.containers.lock().await.is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
