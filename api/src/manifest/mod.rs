//! TOML manifests (DESIGN §4) → API objects.
//!
//! The user's manifest types here are separate from the API's resource types: they
//! keep source spans so every error names `file:line:col`, and they are normalised
//! (defaults, namespace, component path → digest) into [`RawObject`]s. A file is all
//! or nothing: any error means no objects at all.

use crate::autoscale::Autoscale;
use crate::quantity::{Cpu, Memory, Timeout};
use crate::resource::*;
use crate::suggest::nearest;
use crate::validate;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A component file a manifest names, read and hashed, to upload before applying.
#[derive(Clone, Debug)]
pub struct ComponentFile {
    pub digest: String,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// A parsed, validated manifest file.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub objects: Vec<RawObject>,
    pub components: Vec<ComponentFile>,
}

/// One problem, located in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The offending source line and a caret under the span.
    pub excerpt: Option<String>,
    /// What would be right.
    pub help: Option<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(excerpt) = &self.excerpt {
            write!(f, "\n{excerpt}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in one file.
#[derive(Clone, Debug)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileManifest {
    #[serde(default)]
    deployment: Vec<Spanned<DeploymentManifest>>,
    #[serde(default)]
    service: Vec<Spanned<ServiceManifest>>,
    #[serde(default)]
    tenant: Vec<Spanned<TenantManifest>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentManifest {
    name: Spanned<String>,
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    labels: Labels,
    replicas: Option<u32>,
    component: Spanned<String>,
    #[serde(default)]
    world: World,
    cpu: Option<Cpu>,
    memory: Option<Spanned<Memory>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    restart: RestartPolicy,
    timeout: Option<Timeout>,
    #[serde(default)]
    outbound: Vec<Spanned<String>>,
    #[serde(default)]
    node_selector: Labels,
    #[serde(default)]
    runtime: RuntimeKind,
    ready_path: Option<Spanned<String>>,
    strategy: Option<Spanned<Strategy>>,
    autoscale: Option<Spanned<Autoscale>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceManifest {
    name: Spanned<String>,
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    labels: Labels,
    selector: Spanned<Labels>,
    host: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantManifest {
    name: Spanned<String>,
    #[serde(default)]
    labels: Labels,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    pods: Option<u32>,
    deployments: Option<u32>,
    services: Option<u32>,
}

/// Whether parsing reads the component files a manifest names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Components {
    /// Read and hash them (to apply).
    Read,
    /// Leave `component` as written: the objects are good for their names only
    /// (to delete what a file created, even where its .wasm files are absent).
    Skip,
}

/// Reads and parses a manifest file. `namespace` fills objects that name none.
pub fn load(path: &Path, namespace: &str) -> Result<Manifest, ManifestErrors> {
    load_with(path, namespace, Components::Read)
}

pub fn load_with(
    path: &Path,
    namespace: &str,
    components: Components,
) -> Result<Manifest, ManifestErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ManifestErrors(vec![ManifestError {
            file: path.display().to_string(),
            line: 1,
            column: 1,
            message: format!("cannot read the manifest: {e}"),
            excerpt: None,
            help: Some("check the path given to -f".into()),
        }])
    })?;
    parse_with(path, &text, namespace, components)
}

/// Parses manifest text; `path` locates relative component files and names the file in errors.
pub fn parse(path: &Path, text: &str, namespace: &str) -> Result<Manifest, ManifestErrors> {
    parse_with(path, text, namespace, Components::Read)
}

pub fn parse_with(
    path: &Path,
    text: &str,
    namespace: &str,
    read_components: Components,
) -> Result<Manifest, ManifestErrors> {
    let source = Source {
        file: path.display().to_string(),
        text,
    };
    let file: FileManifest =
        toml::from_str(text).map_err(|e| ManifestErrors(vec![source.toml_error(&e)]))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut builder = Builder {
        source: &source,
        base,
        namespace,
        errors: Vec::new(),
        objects: Vec::new(),
        components: Vec::new(),
        read_components,
        seen: HashMap::new(),
    };
    for d in file.deployment {
        builder.deployment(d);
    }
    for s in file.service {
        builder.service(s);
    }
    for t in file.tenant {
        builder.tenant(t);
    }
    if builder.errors.is_empty() {
        Ok(Manifest {
            objects: builder.objects,
            components: builder.components,
        })
    } else {
        Err(ManifestErrors(builder.errors))
    }
}

struct Source<'a> {
    file: String,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, message: String, help: Option<String>) -> ManifestError {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line = self.text[..start].matches('\n').count() + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let source_line = &self.text[line_start..line_end];
        let width = self.text[start..span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        let gutter = line.to_string().len();
        let excerpt = format!(
            "{:gutter$} |\n{line} | {source_line}\n{:gutter$} | {}{}",
            "",
            "",
            " ".repeat(column - 1),
            "^".repeat(width),
        );
        ManifestError {
            file: self.file.clone(),
            line,
            column,
            message,
            excerpt: Some(excerpt),
            help,
        }
    }

    /// The table header (`[[deployment]]`) in force at `offset`, for context.
    fn table_at(&self, offset: usize) -> Option<&str> {
        self.text[..offset.min(self.text.len())]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
    }

    fn toml_error(&self, e: &toml::de::Error) -> ManifestError {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        if let Some((key, known)) = unknown_field(&message) {
            let place = match self.table_at(span.start) {
                Some(table) => format!(" in {table}"),
                None => " at the top level".to_string(),
            };
            let help = match nearest(&key, known.iter().map(String::as_str)) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None if known.is_empty() => "this table takes no keys".to_string(),
                None => format!("known keys are: {}", known.join(", ")),
            };
            return self.error(span, format!("unknown key `{key}`{place}"), Some(help));
        }
        let (message, help) = match message.split_once('\n') {
            Some((first, rest)) => (first.to_string(), Some(rest.trim().replace('\n', " "))),
            None => (message, None),
        };
        self.error(span, message, help)
    }
}

/// Reads serde's fixed "unknown field `x`, expected one of `a`, `b`" message.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let known = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), known))
}

struct Builder<'a> {
    source: &'a Source<'a>,
    base: &'a Path,
    namespace: &'a str,
    errors: Vec<ManifestError>,
    objects: Vec<RawObject>,
    components: Vec<ComponentFile>,
    read_components: Components,
    /// (kind, namespace, name) → span of its first definition.
    seen: HashMap<(Kind, String, String), Range<usize>>,
}

impl Builder<'_> {
    fn fail(&mut self, span: Range<usize>, message: String, help: Option<&str>) {
        let error = self.source.error(span, message, help.map(str::to_string));
        self.errors.push(error);
    }

    /// Checks a value with a shared validation rule, reporting at its span.
    fn rule(&mut self, span: Range<usize>, rule: Result<(), String>) -> bool {
        match rule {
            Ok(()) => true,
            Err(message) => {
                self.fail(span, message, None);
                false
            }
        }
    }

    /// Validates name and namespace, rejects duplicates, returns the metadata.
    fn metadata(
        &mut self,
        kind: Kind,
        name: &Spanned<String>,
        namespace: Option<&Spanned<String>>,
        labels: Labels,
    ) -> Metadata {
        self.rule(name.span(), validate::dns_label(name.get_ref()));
        let ns = match namespace {
            Some(ns) => {
                self.rule(ns.span(), validate::dns_label(ns.get_ref()));
                Some(ns.get_ref().clone())
            }
            None if kind.namespaced() => Some(self.namespace.to_string()),
            None => None,
        };
        let key = (kind, ns.clone().unwrap_or_default(), name.get_ref().clone());
        if let Some(first) = self.seen.get(&key).cloned() {
            let first_at = self.source.error(first, String::new(), None);
            self.fail(
                name.span(),
                format!(
                    "duplicate {} {:?}: already defined at line {}",
                    kind.singular(),
                    name.get_ref(),
                    first_at.line
                ),
                Some("give each object in a file a distinct name"),
            );
        } else {
            self.seen.insert(key, name.span());
        }
        Metadata {
            name: name.get_ref().clone(),
            namespace: ns,
            labels,
            ..Metadata::default()
        }
    }

    /// Resolves `component` to a digest, reading and hashing the file it names.
    fn component(&mut self, component: &Spanned<String>) -> String {
        let value = component.get_ref();
        if self.read_components == Components::Skip {
            return value.clone();
        }
        if value.starts_with("sha256:") {
            self.rule(component.span(), validate::digest(value));
            return value.clone();
        }
        // In a registry: `reef apply` pins a tag to its digest before applying.
        if value.starts_with(crate::component_ref::SCHEME) {
            self.rule(component.span(), validate::component(value));
            return value.clone();
        }
        let path = self.base.join(value);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let digest = crate::digest_of(&bytes);
                if !self.components.iter().any(|c| c.digest == digest) {
                    self.components.push(ComponentFile {
                        digest: digest.clone(),
                        path,
                        bytes,
                    });
                }
                digest
            }
            Err(e) => {
                let help = if e.kind() == std::io::ErrorKind::NotFound {
                    "the path is relative to this manifest; build the component first (examples: run examples/build.sh) or give \"sha256:<hex>\" of an uploaded one"
                } else {
                    "make the file readable"
                };
                self.fail(
                    component.span(),
                    format!("cannot read component file {}: {e}", path.display()),
                    Some(help),
                );
                String::new()
            }
        }
    }

    /// Adds an object. If its fields raised no error of their own, it must
    /// also pass the server's validation (limits, rules across fields); what
    /// fails is reported at the object's name, with the field path.
    fn push<S: serde::Serialize>(
        &mut self,
        kind: Kind,
        metadata: Metadata,
        spec: S,
        at: Range<usize>,
        errors_before: usize,
    ) {
        match serde_json::to_value(spec) {
            Ok(spec) => {
                let object = Object {
                    kind,
                    metadata,
                    spec,
                    status: serde_json::Value::Null,
                };
                // Without components read, a deployment names a file, not a
                // digest: such objects are good for their names only.
                if self.errors.len() == errors_before && self.read_components == Components::Read {
                    if let Err(e) = validate::validate_object(&object) {
                        self.fail(at, format!("{}: {}", e.path, e.message), None);
                    }
                }
                self.objects.push(object);
            }
            Err(e) => self.errors.push(ManifestError {
                file: self.source.file.clone(),
                line: 1,
                column: 1,
                message: format!("internal error encoding {kind}: {e}"),
                excerpt: None,
                help: None,
            }),
        }
    }

    fn deployment(&mut self, spanned: Spanned<DeploymentManifest>) {
        let errors_before = self.errors.len();
        let d = spanned.into_inner();
        let name_span = d.name.span();
        let metadata = self.metadata(Kind::Deployment, &d.name, d.namespace.as_ref(), d.labels);
        let component = self.component(&d.component);
        for name in d.env.keys() {
            self.rule(name.span(), validate::env_name(name.get_ref()));
        }
        for pattern in &d.outbound {
            self.rule(
                pattern.span(),
                validate::outbound_pattern(pattern.get_ref()),
            );
        }
        if let Some(path) = &d.ready_path {
            self.rule(path.span(), validate::path_prefix(path.get_ref()));
        }
        if let Some(memory) = &d.memory {
            let bytes = memory.get_ref().bytes();
            if bytes == 0 || bytes > (4 << 30) {
                self.fail(
                    memory.span(),
                    format!("memory {} is out of range", memory.get_ref()),
                    Some("give a budget between 1Mi and 4Gi, e.g. \"64Mi\""),
                );
            }
        }
        if let Some(strategy) = &d.strategy {
            let s = strategy.get_ref();
            if s.max_surge == 0 && s.max_unavailable == 0 {
                self.fail(
                    strategy.span(),
                    "max_surge and max_unavailable are both 0, so a rollout could never progress"
                        .into(),
                    Some("allow max_surge = 1 (the default)"),
                );
            }
        }
        if let Some(auto) = &d.autoscale {
            let a = auto.get_ref();
            if a.max == 0 || a.min > a.max {
                self.fail(
                    auto.span(),
                    format!("autoscale min {} / max {} is impossible", a.min, a.max),
                    Some("use 0 <= min <= max, max >= 1"),
                );
            }
        }
        let template = PodSpec {
            component,
            world: d.world,
            cpu: d.cpu.unwrap_or(DEFAULT_CPU),
            memory: d.memory.map_or(DEFAULT_MEMORY, Spanned::into_inner),
            env: d
                .env
                .into_iter()
                .map(|(k, v)| (k.into_inner(), v))
                .collect(),
            args: d.args,
            restart: d.restart,
            timeout: d.timeout.unwrap_or(DEFAULT_TIMEOUT),
            outbound: d.outbound.into_iter().map(Spanned::into_inner).collect(),
            node_selector: d.node_selector,
            runtime: d.runtime,
            ready_path: d.ready_path.map(Spanned::into_inner),
            node: None,
        };
        let spec = DeploymentSpec {
            replicas: d.replicas.unwrap_or(1),
            autoscale: d.autoscale.map(Spanned::into_inner),
            strategy: d.strategy.map(Spanned::into_inner).unwrap_or_default(),
            template,
        };
        self.push(Kind::Deployment, metadata, spec, name_span, errors_before);
    }

    fn service(&mut self, spanned: Spanned<ServiceManifest>) {
        let errors_before = self.errors.len();
        let s = spanned.into_inner();
        let name_span = s.name.span();
        let metadata = self.metadata(Kind::Service, &s.name, s.namespace.as_ref(), s.labels);
        if s.selector.get_ref().is_empty() {
            self.fail(
                s.selector.span(),
                "the selector is empty, so the service would match no pods".into(),
                Some("name the pods' labels, e.g. selector = { app = \"hello\" }"),
            );
        }
        if let Some(host) = &s.host {
            self.rule(host.span(), validate::dns_subdomain(host.get_ref()));
        }
        if let Some(path) = &s.path {
            self.rule(path.span(), validate::path_prefix(path.get_ref()));
        }
        let spec = ServiceSpec {
            selector: s.selector.into_inner(),
            host: s.host.map(Spanned::into_inner),
            path: s.path.map_or_else(|| "/".to_string(), Spanned::into_inner),
        };
        self.push(Kind::Service, metadata, spec, name_span, errors_before);
    }

    fn tenant(&mut self, spanned: Spanned<TenantManifest>) {
        let errors_before = self.errors.len();
        let t = spanned.into_inner();
        let name_span = t.name.span();
        let metadata = self.metadata(Kind::Tenant, &t.name, None, t.labels);
        let spec = TenantSpec {
            cpu: t.cpu,
            memory: t.memory,
            pods: t.pods,
            deployments: t.deployments,
            services: t.services,
        };
        self.push(Kind::Tenant, metadata, spec, name_span, errors_before);
    }
}

#[cfg(test)]
mod tests;
