//! What the shim reads of a bundle's OCI runtime spec (`config.json`): the
//! program (a `.wasm` file in the image's rootfs), its arguments and
//! environment, and the memory limit. The rest (namespaces, capabilities,
//! mounts) describes a Linux process and means nothing to a wasm guest.

use serde::Deserialize;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// A pod's memory budget when the spec sets none (a manifest's default).
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// A request's deadline when `REEF_REQUEST_TIMEOUT` sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Where an http component listens when the environment names no port.
pub const DEFAULT_PORT: u16 = 8080;

#[derive(Debug, Deserialize)]
struct Spec {
    process: Option<Process>,
    root: Option<Root>,
    linux: Option<Linux>,
}

#[derive(Debug, Deserialize)]
struct Process {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Root {
    path: String,
}

#[derive(Debug, Deserialize)]
struct Linux {
    resources: Option<Resources>,
}

#[derive(Debug, Deserialize)]
struct Resources {
    memory: Option<MemoryResources>,
}

#[derive(Debug, Deserialize)]
struct MemoryResources {
    limit: Option<i64>,
}

/// A container as the shim runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The rootfs directory (absolute, or relative to the bundle).
    pub root: PathBuf,
    /// The component's path inside the rootfs (`/hello.wasm`).
    pub entrypoint: String,
    /// `argv[1..]`.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub memory_bytes: u64,
    pub timeout: Duration,
    pub listen: std::net::SocketAddr,
    /// The world the component must be (`REEF_WORLD`); without it, the one
    /// its exports make it.
    pub world: Option<World>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Http,
    Command,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an OCI runtime spec: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Reads `bundle/config.json`.
pub fn load(bundle: &Path) -> Result<Program, SpecError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&bytes).map_err(|e| match e {
        SpecError::Parse { message, .. } => SpecError::Parse {
            path: path.display().to_string(),
            message,
        },
        other => other,
    })
}

pub fn parse(bytes: &[u8]) -> Result<Program, SpecError> {
    let spec: Spec = serde_json::from_slice(bytes).map_err(|e| SpecError::Parse {
        path: "config.json".into(),
        message: e.to_string(),
    })?;
    let process = spec
        .process
        .ok_or_else(|| SpecError::Invalid("the spec has no process".into()))?;
    let mut args = process.args.into_iter();
    let entrypoint = args.next().ok_or_else(|| {
        SpecError::Invalid("the process has no args: the first names the component".into())
    })?;
    let env: Vec<(String, String)> = process
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let var = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    let timeout = match var("REEF_REQUEST_TIMEOUT") {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| SpecError::Invalid(format!("REEF_REQUEST_TIMEOUT={text:?}: {e}")))?,
        None => DEFAULT_TIMEOUT,
    };
    let listen = match (var("REEF_LISTEN"), var("PORT")) {
        (Some(addr), _) => addr
            .parse()
            .map_err(|e| SpecError::Invalid(format!("REEF_LISTEN={addr:?}: {e}")))?,
        (None, Some(port)) => {
            let port: u16 = port
                .parse()
                .map_err(|e| SpecError::Invalid(format!("PORT={port:?}: {e}")))?;
            std::net::SocketAddr::from(([0, 0, 0, 0], port))
        }
        (None, None) => std::net::SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
    };
    let world = match var("REEF_WORLD").map(String::as_str) {
        None => None,
        Some("http") => Some(World::Http),
        Some("command") => Some(World::Command),
        Some(other) => {
            return Err(SpecError::Invalid(format!(
                "REEF_WORLD={other:?}: http or command"
            )))
        }
    };
    let memory_bytes = spec
        .linux
        .and_then(|l| l.resources)
        .and_then(|r| r.memory)
        .and_then(|m| m.limit)
        .filter(|limit| *limit > 0)
        .map_or(DEFAULT_MEMORY, |limit| limit as u64);
    Ok(Program {
        root: PathBuf::from(spec.root.map_or_else(|| "rootfs".to_string(), |r| r.path)),
        entrypoint,
        args: args.collect(),
        env,
        memory_bytes,
        timeout,
        listen,
        world,
    })
}

/// The entrypoint's file under `rootfs`, refusing any path or link that
/// leads out of it: the shim runs as root, the image is anyone's.
pub fn entrypoint_file(rootfs: &Path, entrypoint: &str) -> Result<PathBuf, SpecError> {
    let relative = Path::new(entrypoint.trim_start_matches('/'));
    if relative.as_os_str().is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(SpecError::Invalid(format!(
            "the entrypoint {entrypoint:?} is not a plain path to a file in the image"
        )));
    }
    let joined = rootfs.join(relative);
    let (real_root, real_file) = match (rootfs.canonicalize(), joined.canonicalize()) {
        (Ok(root), Ok(file)) => (root, file),
        (_, Err(source)) | (Err(source), _) => {
            return Err(SpecError::Read {
                path: format!("{entrypoint} in the image"),
                source,
            })
        }
    };
    if !real_file.starts_with(&real_root) {
        return Err(SpecError::Invalid(format!(
            "the entrypoint {entrypoint:?} links out of the image"
        )));
    }
    Ok(real_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_gives_the_component_its_arguments_environment_and_limits() {
        let spec = br#"{"ociVersion":"1.0.2","process":{"args":["/ticker.wasm","a","b"],
            "env":["PATH=/bin","TICKS=3","PORT=9000","REEF_REQUEST_TIMEOUT=2s"],"cwd":"/"},
            "root":{"path":"rootfs"},"linux":{"resources":{"memory":{"limit":33554432}}}}"#;
        let program = parse(spec).expect("parses");
        assert_eq!(program.entrypoint, "/ticker.wasm");
        assert_eq!(program.args, ["a", "b"]);
        assert!(program.env.contains(&("TICKS".into(), "3".into())));
        assert_eq!(program.memory_bytes, 32 << 20);
        assert_eq!(program.timeout, Duration::from_secs(2));
        assert_eq!(program.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(program.root, PathBuf::from("rootfs"));

        let bare = parse(br#"{"process":{"args":["/x.wasm"]}}"#).expect("parses");
        assert_eq!(bare.memory_bytes, DEFAULT_MEMORY);
        assert_eq!(bare.timeout, DEFAULT_TIMEOUT);
        assert_eq!(bare.listen.port(), DEFAULT_PORT);
        assert_eq!(bare.world, None);

        // The last of a name wins: what a node appends after a pod's env.
        let node = br#"{"process":{"args":["/x.wasm"],"env":["REEF_WORLD=http",
            "REEF_LISTEN=0.0.0.0:80","REEF_LISTEN=127.0.0.1:0","REEF_WORLD=command"]}}"#;
        let program = parse(node).expect("parses");
        assert_eq!(program.world, Some(World::Command));
        assert_eq!(program.listen, "127.0.0.1:0".parse().expect("addr"));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, says) in [
            (&br#"{"#[..], "not an OCI runtime spec"),
            (br#"{"root":{"path":"r"}}"#, "no process"),
            (br#"{"process":{"args":[]}}"#, "no args"),
            (br#"{"process":{"args":["/x"],"env":["PORT=x"]}}"#, "PORT"),
            (
                br#"{"process":{"args":["/x"],"env":["REEF_LISTEN=nope"]}}"#,
                "REEF_LISTEN",
            ),
            (
                br#"{"process":{"args":["/x"],"env":["REEF_WORLD=cli"]}}"#,
                "REEF_WORLD",
            ),
        ] {
            let e = parse(spec).expect_err("refused");
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn an_entrypoint_stays_inside_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("app")).expect("mkdir");
        std::fs::write(rootfs.join("app/x.wasm"), b"x").expect("write");
        std::fs::write(dir.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), rootfs.join("out.wasm"))
            .expect("symlink");
        let found = entrypoint_file(&rootfs, "/app/x.wasm").expect("inside");
        assert!(found.ends_with("app/x.wasm"));
        for (entrypoint, says) in [
            ("/../secret", "not a plain path"),
            ("/", "not a plain path"),
            ("/out.wasm", "links out of the image"),
            ("/missing.wasm", "missing.wasm in the image"),
        ] {
            let e = entrypoint_file(&rootfs, entrypoint).expect_err(entrypoint);
            assert!(e.to_string().contains(says), "{entrypoint}: {e}");
        }
    }
}
