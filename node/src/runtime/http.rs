//! `http` pods: a fresh instance per request, within the pod's limits.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use tracing::Instrument as _;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView as _;

use super::engine::HttpComponent;
use super::limits::{MemoryBudget, MemoryRefused};
use super::outbound::OutboundPolicy;
use super::output::OutputSink;
use super::prefetch::{prefetch, PrefetchError};
use super::scratch::{ScratchDir, ScratchQuota};
use super::state::{HostState, Sandbox};

/// The guest's response body. It streams: the instance keeps running and
/// writing it after the head is returned, until it finishes or its deadline.
/// `Send + Sync`, so it fits any boxed body type.
pub struct ResponseBody {
    // wasi-http's body is not `Sync`. A `Mutex` makes it so at no cost:
    // polling has `&mut self`, so `get_mut` never locks.
    inner: Mutex<HyperOutgoingBody>,
}

impl ResponseBody {
    fn new(inner: HyperOutgoingBody) -> ResponseBody {
        ResponseBody {
            inner: Mutex::new(inner),
        }
    }

    fn body_mut(self: Pin<&mut Self>) -> Pin<&mut HyperOutgoingBody> {
        let inner = self.get_mut().inner.get_mut();
        // A poisoned lock means a poll panicked; the body is still whole.
        Pin::new(inner.unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.body_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.lock().is_ok_and(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .lock()
            .map_or_else(|_| SizeHint::default(), |inner| inner.size_hint())
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

/// Told about every request a pod failed (trapped, out of memory, ...), so
/// the agent can record it; called on the request's task, must not block.
pub type FailureSink = Arc<dyn Fn(&HandleError) + Send + Sync>;

/// What each pod may hold of its node beyond its manifest's memory and
/// timeout (the node's settings, the same for every pod).
#[derive(Clone, Copy, Debug)]
pub struct PodLimits {
    pub scratch: ScratchQuota,
    /// Instances of one pod alive at once: its requests in flight (http), so
    /// one pod cannot take the node's whole instance pool.
    pub max_instances: usize,
}

impl Default for PodLimits {
    fn default() -> Self {
        PodLimits {
            scratch: ScratchQuota::default(),
            max_instances: 256,
        }
    }
}

/// What a pod's manifest says about how its instances run, and where their
/// output and failures go.
#[derive(Clone)]
pub struct PodSettings {
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Arguments after the program name (command pods).
    pub args: Vec<String>,
    /// Linear memory all of the pod's live instances may hold together.
    pub memory_bytes: u64,
    /// Per-request deadline (http pods): from the call to `handle` until the
    /// instance has finished (the response body included).
    pub timeout: Duration,
    /// Outbound HTTP allow-list: `host[:port]` or `*.suffix[:port]`.
    pub outbound: Vec<String>,
    /// The pod's scratch directory, seen by the guest at `/tmp`; removed
    /// once the pod and its last request are gone.
    pub scratch: Option<Arc<ScratchDir>>,
    /// Where stdout and stderr go; discarded without one.
    pub output: Option<Arc<dyn OutputSink>>,
    /// Told about failed requests (http pods).
    pub on_failure: Option<FailureSink>,
    /// The node's policy on where outbound connections may go.
    pub network: Arc<super::egress::NetworkPolicy>,
    /// Requests in flight at once (see [`PodLimits::max_instances`]).
    pub max_instances: usize,
    /// The cluster's Services this pod may call (none outside a node).
    pub services: Option<super::services::ServiceAccess>,
}

impl Default for PodSettings {
    /// The manifest defaults (DESIGN §4): 64 MiB, 30 s, no outbound.
    fn default() -> Self {
        PodSettings {
            env: Vec::new(),
            args: Vec::new(),
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            outbound: Vec::new(),
            scratch: None,
            output: None,
            on_failure: None,
            network: Arc::default(),
            max_instances: PodLimits::default().max_instances,
            services: None,
        }
    }
}

impl std::fmt::Debug for PodSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSettings")
            .field("memory_bytes", &self.memory_bytes)
            .field("timeout", &self.timeout)
            .field("outbound", &self.outbound)
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

impl PodSettings {
    /// What the pod's instances may reach. Invalid `outbound` patterns (which
    /// validation should have caught) are logged and allow nothing.
    pub(crate) fn sandbox(&self, program: &str) -> Sandbox {
        Sandbox {
            env: self.env.clone(),
            args: self.args.clone(),
            outbound: Arc::new(OutboundPolicy::lenient(&self.outbound)),
            network: self.network.clone(),
            scratch: self.scratch.clone(),
            output: self.output.clone(),
            program: program.to_string(),
            services: self.services.clone(),
        }
    }
}

/// Why a request got no response from the guest. [`HandleError::status`]
/// is the answer the proxy gives instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The request passed the pod's `timeout`.
    #[error("the request passed the pod's timeout")]
    Timeout,
    /// The instance trapped (a guest panic, an invalid operation, ...).
    #[error("the instance trapped: {0}")]
    Trap(String),
    /// The instance wanted more memory than the pod's budget had left.
    #[error("the instance ran out of memory: {0}")]
    OutOfMemory(String),
    /// No instance could be started: the pod's memory budget is taken by
    /// its other requests, or the node's instance pool is full.
    #[error("no instance available: {0}")]
    Unavailable(String),
    /// The guest returned without answering, or answered with an error code.
    #[error("the component gave no response: {0}")]
    NoResponse(String),
    /// The request cannot be handed to a guest as it is.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl HandleError {
    /// The status the proxy answers with (DESIGN §9).
    pub fn status(&self) -> StatusCode {
        match self {
            HandleError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            HandleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HandleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HandleError::Trap(_) | HandleError::OutOfMemory(_) | HandleError::NoResponse(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// One `http` pod on this node: a prepared component plus its settings.
/// Cheap to clone; clones share the pod's memory budget.
#[derive(Clone)]
pub struct HttpPod {
    inner: Arc<PodInner>,
}

struct PodInner {
    pre: ProxyPre<HostState>,
    digest: String,
    sandbox: Sandbox,
    timeout: Duration,
    budget: MemoryBudget,
    on_failure: Option<FailureSink>,
    /// One permit per live instance.
    instances: Arc<tokio::sync::Semaphore>,
    max_instances: usize,
}

impl HttpPod {
    /// A pod ready to serve.
    pub fn new(component: HttpComponent, settings: PodSettings) -> HttpPod {
        HttpPod {
            inner: Arc::new(PodInner {
                digest: component.digest().to_string(),
                pre: component.pre,
                sandbox: settings.sandbox(""),
                timeout: settings.timeout,
                budget: MemoryBudget::new(settings.memory_bytes),
                on_failure: settings.on_failure,
                instances: Arc::new(tokio::sync::Semaphore::new(settings.max_instances.max(1))),
                max_instances: settings.max_instances.max(1),
            }),
        }
    }

    /// The digest of the component it runs.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Bytes of linear memory its live instances hold right now.
    pub fn memory_in_use(&self) -> u64 {
        self.inner.budget.used()
    }

    /// Instances alive now (requests in flight, bodies still streaming included).
    pub fn instances_in_use(&self) -> usize {
        self.inner.max_instances - self.inner.instances.available_permits()
    }

    /// The pod's memory budget in bytes.
    pub fn memory_budget(&self) -> u64 {
        self.inner.budget.limit()
    }

    /// Serves one request in a fresh instance from the pooling allocator and
    /// returns the guest's response, whose body streams as the guest writes
    /// it. The guest sees the method, path and query, headers and body as
    /// they came. Must be called within a tokio runtime.
    ///
    /// Dropping the returned future before the response head arrives stops
    /// the instance.
    pub async fn handle<B>(
        &self,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<ResponseBody>, HandleError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let result = self.serve(req).await;
        if let (Err(e), Some(sink)) = (&result, &self.inner.on_failure) {
            sink(e);
        }
        result
    }

    async fn serve<B>(
        &self,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<ResponseBody>, HandleError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Timeouts are capped at admission; a stored one from elsewhere must
        // still not overflow the clock (a day is "never" for a request).
        let now = Instant::now();
        let deadline = now
            .checked_add(self.inner.timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        if req.uri().authority().is_none() && !req.headers().contains_key(http::header::HOST) {
            return Err(HandleError::BadRequest(
                "the request has neither a Host header nor an absolute URI".into(),
            ));
        }
        // The body first, then an instance: a slow sender holds no instance.
        let (parts, body) = req.into_parts();
        let body = match prefetch(body, deadline).await {
            Ok(body) => body,
            Err(PrefetchError::Timeout) => return Err(HandleError::Timeout),
            Err(PrefetchError::Body(e)) => {
                return Err(HandleError::BadRequest(format!(
                    "the request body failed: {}",
                    e.into()
                )))
            }
        };
        let req = hyper::Request::from_parts(parts, body);
        let Ok(permit) = self.inner.instances.clone().try_acquire_owned() else {
            return Err(HandleError::Unavailable(format!(
                "the pod has {} requests in flight, its limit",
                self.inner.max_instances
            )));
        };
        let mut store = self.new_store(deadline)?;
        let scheme = if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let req = req.map(|body| body.map_err(body_error).boxed_unsync());
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(scheme, req)
            .map_err(|e| HandleError::BadRequest(format!("{e:#}")))?;

        let (tx, rx) = tokio::sync::oneshot::channel();
        let responded = Arc::new(AtomicBool::new(false));
        let out = {
            let responded = responded.clone();
            store
                .data_mut()
                .http()
                .new_response_outparam_from_callback(move |result| {
                    responded.store(true, Ordering::Release);
                    // The receiver is gone only if the caller gave up.
                    let _ = tx.send(result);
                })
                .map_err(|e| HandleError::NoResponse(format!("{e:#}")))?
        };

        // The instance runs in its own task so that it can keep writing the
        // body after the head has been returned.
        let pre = self.inner.pre.clone();
        let task = tokio::spawn(
            async move {
                let _permit = permit;
                let outcome = run(pre, store, req, out, deadline).await;
                if let Err(e) = &outcome {
                    if responded.load(Ordering::Acquire) {
                        tracing::warn!("instance failed after sending its response head: {e}");
                    }
                }
                outcome
            }
            .in_current_span(),
        );
        let mut abort = AbortOnDrop(Some(task.abort_handle()));

        match rx.await {
            Ok(Ok(response)) => {
                abort.0 = None;
                Ok(response.map(ResponseBody::new))
            }
            Ok(Err(code)) => Err(HandleError::NoResponse(format!(
                "the component answered with error code {code:?}"
            ))),
            // The sender went with the store: the instance ended without
            // answering. Its outcome says why.
            Err(_) => match task.await {
                Ok(Ok(())) => Err(HandleError::NoResponse(
                    "the component returned without setting a response".into(),
                )),
                Ok(Err(e)) => Err(e),
                Err(join) => Err(HandleError::Trap(format!(
                    "the instance task failed: {join}"
                ))),
            },
        }
    }

    fn new_store(&self, deadline: Instant) -> Result<Store<HostState>, HandleError> {
        let inner = &self.inner;
        let state = HostState::new(&inner.sandbox, inner.budget.clone())
            .map_err(|e| HandleError::Unavailable(format!("preparing the sandbox: {e}")))?;
        let mut store = Store::new(inner.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // Check in on every epoch tick: yield so other requests run, and
        // stop the guest once the deadline has passed. Tokio's `yield_now`
        // rather than a plain yield: it lets the worker poll timers and I/O
        // before resuming, where a self-wake would wait out ~60 more tasks.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        Ok(store)
    }
}

/// Instantiates and calls the guest; the whole of it bounded by the
/// deadline, which also covers a guest blocked on I/O rather than running.
async fn run(
    pre: ProxyPre<HostState>,
    mut store: Store<HostState>,
    req: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostIncomingRequest>,
    out: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostResponseOutparam>,
    deadline: Instant,
) -> Result<(), HandleError> {
    let result = tokio::time::timeout_at(deadline.into(), async {
        let proxy = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| (Phase::Start, e))?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
            .map_err(|e| (Phase::Run, e))
    })
    .await;
    match result {
        Err(_elapsed) => Err(HandleError::Timeout),
        Ok(Ok(())) => Ok(()),
        Ok(Err((phase, e))) => Err(classify(phase, &e, store.data().limiter.exceeded())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Run,
}

/// Names a failure by what it means to the caller, not by its message.
fn classify(phase: Phase, e: &wasmtime::Error, out_of_memory: bool) -> HandleError {
    tracing::debug!(?phase, "instance failed: {e:#}");
    if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return HandleError::Timeout;
    }
    let oom = e.downcast_ref::<MemoryRefused>().map(ToString::to_string);
    if out_of_memory || oom.is_some() {
        let reason = oom.unwrap_or_else(|| e.root_cause().to_string());
        return match phase {
            Phase::Start => HandleError::Unavailable(reason),
            Phase::Run => HandleError::OutOfMemory(reason),
        };
    }
    if phase == Phase::Start && e.is::<wasmtime::PoolConcurrencyLimitError>() {
        return HandleError::Unavailable(format!("the node's instance pool is full: {e}"));
    }
    HandleError::Trap(e.root_cause().to_string())
}

/// Maps any request body error into wasi-http's error type; hyper's errors
/// keep their kind so the guest sees the right error code.
fn body_error<E>(e: E) -> wasmtime_wasi_http::Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match e.into().downcast::<hyper::Error>() {
        Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
        Err(e) => wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
    }
}

/// Stops the instance if `handle` is dropped before the response head.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}
