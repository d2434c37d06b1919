//! `reef push` and `reef pull` against a real registry (Debian's
//! `docker-registry`, CNCF distribution 2.8) started by the test on loopback.

mod common;

use common::control_plane::free_port;
use common::{example, manifest_dir, path_str, Cluster, REEF};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry on a free loopback port, storing under a temp dir.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `docker-registry`, or says loudly why not. CI installs it
/// (scripts/prereqs.sh) and sets REEF_REQUIRE_REGISTRY, so there it must run.
async fn registry() -> Option<Registry> {
    registry_with(None).await
}

/// A registry that takes pushes and pulls only from this user (htpasswd,
/// bcrypt as distribution requires).
async fn registry_with_login(user: &str, password: &str) -> Option<Registry> {
    let hash = bcrypt::hash_with_result(password, 4)
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoY);
    registry_with(Some(format!("{user}:{hash}\n"))).await
}

async fn registry_with(htpasswd: Option<String>) -> Option<Registry> {
    let found = Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("REEF_REQUIRE_REGISTRY").is_none(),
            "docker-registry is required here (apt-get install docker-registry)"
        );
        eprintln!(
            "*** SKIPPED: docker-registry is not installed (apt-get install docker-registry) ***"
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().join("storage");
    let port = free_port();
    let config = dir.path().join("config.yml");
    let mut yaml = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
        storage.display()
    );
    if let Some(htpasswd) = htpasswd {
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, htpasswd).expect("write htpasswd");
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: reef-test\n    path: {}\n",
            file.display()
        ));
    }
    std::fs::write(&config, yaml).expect("write config");
    let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start docker-registry");
    let registry = Registry {
        child,
        port,
        storage,
        _dir: dir,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // 401 is an answer too: a registry that needs a login is up.
        let up = http
            .get(format!("http://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 401);
        if up {
            return Some(registry);
        }
        assert!(
            Instant::now() < deadline,
            "docker-registry did not answer in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reef(args: &[&str]) -> Output {
    // No docker login of this machine's user leaks in.
    reef_with_docker_config(args, Path::new("/nonexistent"))
}

fn reef_with_docker_config(args: &[&str], docker_config: &Path) -> Output {
    Command::new(REEF)
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .stdin(Stdio::null())
        .output()
        .expect("run reef")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "reef failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn failed(out: &Output, code: i32, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {stderr}");
    assert!(stderr.contains(says), "{stderr:?} should say {says:?}");
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn wasm(name: &str) -> PathBuf {
    let app = example(name);
    app.with_file_name(format!("{name}.wasm"))
}

fn pull_to(reference: &str, dir: &Path, file: &str) -> (Output, PathBuf) {
    let path = dir.join(file);
    let out = reef(&["pull", reference, "-o", path.to_str().expect("utf-8 path")]);
    (out, path)
}

#[tokio::test]
async fn a_pushed_component_pulls_back_by_tag_and_by_digest() {
    let Some(registry) = registry().await else {
        return;
    };
    let base = format!("127.0.0.1:{}", registry.port);
    let hello = wasm("hello");
    let hello_bytes = std::fs::read(&hello).expect("hello.wasm");
    let tag = format!("oci://{base}/reef/hello:v1");

    let pinned = ok(&reef(&["push", hello.to_str().expect("path"), &tag]));
    let digest = pinned
        .strip_prefix(&format!("oci://{base}/reef/hello@"))
        .unwrap_or_else(|| panic!("push printed {pinned:?}"))
        .to_string();

    // The registry holds the ecosystem's wasm artifact layout, under that digest.
    let http = reqwest::Client::new();
    let manifest = http
        .get(format!("http://{base}/v2/reef/hello/manifests/v1"))
        .header("Accept", MANIFEST)
        .send()
        .await
        .expect("get manifest")
        .bytes()
        .await
        .expect("manifest body");
    assert_eq!(sha256(&manifest), digest);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    assert_eq!(manifest["mediaType"], MANIFEST);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"][0]["digest"], sha256(&hello_bytes));
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let config: serde_json::Value = http
        .get(format!("http://{base}/v2/reef/hello/blobs/{config_digest}"))
        .send()
        .await
        .expect("get config")
        .json()
        .await
        .expect("config json");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(config["layerDigests"][0], sha256(&hello_bytes));
    let exports = config["component"]["exports"].to_string();
    assert!(exports.contains("wasi:http/incoming-handler"), "{exports}");

    // Pulled by tag and by digest: the same bytes.
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, by_tag) = pull_to(&tag, dir.path(), "by-tag.wasm");
    assert_eq!(ok(&out), format!("{pinned} {}", sha256(&hello_bytes)));
    assert_eq!(std::fs::read(by_tag).expect("pulled"), hello_bytes);
    let (out, by_digest) = pull_to(&pinned, dir.path(), "by-digest.wasm");
    ok(&out);
    assert_eq!(std::fs::read(by_digest).expect("pulled"), hello_bytes);

    // The tag moves to another component; the digest still names hello.
    let ticker = wasm("ticker");
    let moved = ok(&reef(&["push", ticker.to_str().expect("path"), &tag]));
    assert_ne!(moved, pinned);
    let (out, now) = pull_to(&tag, dir.path(), "now.wasm");
    ok(&out);
    assert_eq!(
        std::fs::read(now).expect("pulled"),
        std::fs::read(&ticker).expect("ticker")
    );
    let (out, still) = pull_to(&pinned, dir.path(), "still.wasm");
    ok(&out);
    assert_eq!(std::fs::read(still).expect("pulled"), hello_bytes);
}

#[tokio::test]
async fn missing_refs_bad_input_and_tampered_bytes_are_refused() {
    let Some(registry) = registry().await else {
        return;
    };
    let base = format!("127.0.0.1:{}", registry.port);
    let dir = tempfile::tempdir().expect("temp dir");
    let hello = wasm("hello");
    let hello_bytes = std::fs::read(&hello).expect("hello.wasm");
    let pinned = ok(&reef(&[
        "push",
        hello.to_str().expect("path"),
        &format!("oci://{base}/hello:v1"),
    ]));

    let (out, path) = pull_to(&format!("oci://{base}/hello:nope"), dir.path(), "a.wasm");
    failed(&out, 2, "no such manifest");
    assert!(!path.exists(), "nothing written");
    let absent = format!("oci://{base}/hello@sha256:{}", "0".repeat(64));
    failed(
        &pull_to(&absent, dir.path(), "b.wasm").0,
        2,
        "no such manifest",
    );
    failed(
        &pull_to(&format!("oci://{base}/nobody:v1"), dir.path(), "c.wasm").0,
        2,
        "no such manifest",
    );
    failed(
        &pull_to(&format!("oci://{base}/Hello:v1"), dir.path(), "d.wasm").0,
        2,
        "lowercase",
    );
    failed(
        &pull_to(&format!("http://{base}/hello:v1"), dir.path(), "e.wasm").0,
        2,
        "oci://",
    );

    // Only components are pushed, and only under a tag.
    let text = dir.path().join("not.wasm");
    std::fs::write(&text, "hello").expect("write");
    let out = reef(&[
        "push",
        text.to_str().expect("path"),
        &format!("oci://{base}/x:v1"),
    ]);
    failed(&out, 2, "not a WebAssembly component");
    let out = reef(&["push", hello.to_str().expect("path"), &pinned]);
    failed(&out, 2, "needs a tag");
    let out = reef(&["push", "/nonexistent.wasm", &format!("oci://{base}/x:v1")]);
    failed(&out, 2, "/nonexistent.wasm");

    // A docker config that does not parse is an error, not a silent anonymous pull.
    std::fs::write(dir.path().join("config.json"), "{").expect("write");
    let out = reef_with_docker_config(&["pull", &pinned, "-o", "/dev/null"], dir.path());
    failed(&out, 1, "credentials for");

    // A registry that serves other bytes than the digest says is caught.
    let layer = sha256(&hello_bytes);
    let hex = layer.trim_start_matches("sha256:");
    let data = registry
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut tampered = std::fs::read(&data).expect("stored layer");
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(&data, tampered).expect("tamper");
    let (out, path) = pull_to(&pinned, dir.path(), "f.wasm");
    failed(&out, 1, "digest");
    assert!(!path.exists(), "nothing written");
}

fn hello_manifest(component: &str, name: &str) -> String {
    format!(
        "[[deployment]]\nname = \"{name}\"\nlabels = {{ app = \"{name}\" }}\ncomponent = \"{component}\"\nenv = {{ GREETING = \"Hello\" }}\n\n[[service]]\nname = \"{name}\"\nselector = {{ app = \"{name}\" }}\nhost = \"{name}.local\"\n"
    )
}

fn template_component(cluster: &Cluster, name: &str) -> Option<String> {
    let list = cluster.get_json("deployments");
    list["items"]
        .as_array()?
        .iter()
        .find(|d| d["metadata"]["name"] == name)
        .and_then(|d| d["spec"]["template"]["component"].as_str())
        .map(str::to_string)
}

#[tokio::test]
async fn a_manifest_naming_a_registry_component_deploys_it_pinned() {
    let Some(registry) = registry().await else {
        return;
    };
    let base = format!("127.0.0.1:{}", registry.port);
    let hello = wasm("hello");
    let tag = format!("oci://{base}/hello:v1");
    let pinned = ok(&reef(&["push", hello.to_str().expect("path"), &tag]));
    let cluster = Cluster::start_with(&["--oci-registry", &base]).await;

    let (_dir, app) = manifest_dir(&hello_manifest(&tag, "hello"));
    let out = cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    assert!(out.contains("deployment/hello created"), "{out}");
    let body = cluster
        .until_status("hello.local", "/world", 200, Duration::from_secs(60))
        .await;
    assert!(body.contains("Hello from reef"), "{body}");
    assert_eq!(template_component(&cluster, "hello"), Some(pinned.clone()));

    // The tag moves to another component: what runs does not, until re-applied.
    let ticker = wasm("ticker");
    let moved = ok(&reef(&["push", ticker.to_str().expect("path"), &tag]));
    assert_ne!(moved, pinned);
    assert_eq!(template_component(&cluster, "hello"), Some(pinned.clone()));
    cluster
        .until_status("hello.local", "/world", 200, Duration::from_secs(10))
        .await;
    let out = cluster.reef_ok(&["apply", "-f", path_str(&app)]);
    assert!(out.contains("deployment/hello configured"), "{out}");
    assert_eq!(template_component(&cluster, "hello"), Some(moved));

    // A tag or digest the registry lacks fails the apply, and nothing is made.
    let absent = format!("oci://{base}/hello@sha256:{}", "0".repeat(64));
    for component in [format!("oci://{base}/hello:nope"), absent] {
        let (_dir, app) = manifest_dir(&hello_manifest(&component, "other"));
        let out = cluster.reef(&["apply", "-f", path_str(&app)]);
        failed(&out, 2, "no such manifest");
        assert_eq!(template_component(&cluster, "other"), None);
    }

    // The API takes only pinned components, from registries the operator named.
    let digest = pinned
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .expect("pinned");
    let http = reqwest::Client::new();
    for (component, says) in [
        (format!("oci://{base}/hello:v1"), "names a tag"),
        (
            format!("oci://10.0.0.1:5000/hello@{digest}"),
            "not one this cluster pulls from",
        ),
    ] {
        let deployment = serde_json::json!([{
            "kind": "Deployment",
            "metadata": {"name": "other", "namespace": "default"},
            "spec": {"template": {"component": component}},
        }]);
        let response = http
            .post(format!("http://{}/api/v1/apply", cluster.api))
            .bearer_auth(cluster.admin_token())
            .json(&deployment)
            .send()
            .await
            .expect("apply");
        assert_eq!(response.status().as_u16(), 422);
        let body = response.text().await.expect("body");
        assert!(
            body.contains(says) && body.contains("spec.template.component"),
            "{body}"
        );
    }
    assert_eq!(template_component(&cluster, "other"), None);
}

/// `{"auths": {REGISTRY: {"auth": base64(user:password)}}}` in `dir/config.json`,
/// as `docker login` writes it.
fn docker_login(dir: &Path, registry: &str, user: &str, password: &str) {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = serde_json::json!({"auths": {registry: {"auth": auth}}});
    std::fs::create_dir_all(dir).expect("docker config dir");
    std::fs::write(dir.join("config.json"), config.to_string()).expect("docker config");
}

/// The `last_error` of a pod of this deployment, once one reports it.
async fn pod_error(cluster: &Cluster, deployment: &str) -> String {
    common::eventually(
        "a pod to report why it cannot start",
        Duration::from_secs(60),
        || {
            let pods = cluster.get_json("pods");
            let error = pods["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .filter(|p| p["metadata"]["labels"]["app"] == deployment)
                    .find_map(|p| p["status"]["last_error"].as_str().map(str::to_string))
            });
            async move { error }
        },
    )
    .await
}

#[tokio::test]
async fn a_registry_that_needs_a_login_takes_credentials_and_nodes_pull_anonymously_unless_told() {
    let (user, password) = ("reef", "s3cret-pass");
    let Some(registry) = registry_with_login(user, password).await else {
        return;
    };
    let base = format!("127.0.0.1:{}", registry.port);
    let hello = wasm("hello");
    let hello = hello.to_str().expect("path");
    let tag = format!("oci://{base}/private/hello:v1");

    // Without credentials the registry refuses, and reef says so.
    failed(&reef(&["push", hello, &tag]), 1, "refused access");
    // --username reads the password from stdin.
    let mut push = Command::new(REEF)
        .args(["push", hello, &tag, "--username", user])
        .env("DOCKER_CONFIG", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run reef push");
    {
        use std::io::Write;
        let mut stdin = push.stdin.take().expect("stdin");
        writeln!(stdin, "{password}").expect("write password");
    }
    let pinned = ok(&push.wait_with_output().expect("reef push"));
    assert!(
        pinned.starts_with(&format!("oci://{base}/private/hello@sha256:")),
        "{pinned}"
    );
    // Pulls: refused anonymously, taken with what `docker login` stored.
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, path) = pull_to(&pinned, dir.path(), "anonymous.wasm");
    failed(&out, 1, "refused access");
    assert!(!path.exists());
    let logged_in = dir.path().join("docker");
    docker_login(&logged_in, &base, user, "wrong");
    let out = reef_with_docker_config(&["pull", &pinned, "-o", "/dev/null"], &logged_in);
    failed(&out, 1, "refused access");
    docker_login(&logged_in, &base, user, password);
    let target = dir.path().join("pulled.wasm");
    let target = target.to_str().expect("path");
    ok(&reef_with_docker_config(
        &["pull", &pinned, "-o", target],
        &logged_in,
    ));
    assert_eq!(
        std::fs::read(target).expect("pulled"),
        std::fs::read(hello).expect("hello")
    );

    // A node holds a login for the registry, but pulls anonymously unless its
    // operator says otherwise: a spec may name any repository there, so the
    // node's credentials would be every tenant's.
    let (_app_dir, app) = manifest_dir(&hello_manifest(&tag, "hello"));
    for (flags, serves) in [
        (vec!["--oci-registry", &base], false),
        (
            vec![
                "--oci-registry",
                &base,
                "--registry-credentials",
                "docker-config",
            ],
            true,
        ),
    ] {
        let cluster = Cluster::start_with(&flags).await;
        // The CLI (which resolves the tag) and the node share this home.
        docker_login(&cluster.home.path().join(".docker"), &base, user, password);
        let out = cluster.reef_ok(&["apply", "-f", path_str(&app)]);
        assert!(out.contains("deployment/hello created"), "{out}");
        if serves {
            let body = cluster
                .until_status("hello.local", "/world", 200, Duration::from_secs(60))
                .await;
            assert!(body.contains("Hello from reef"), "{body}");
        } else {
            let error = pod_error(&cluster, "hello").await;
            assert!(error.contains("refused access"), "{error}");
            let answer = cluster.request("hello.local", "/world").await;
            assert!(
                answer.as_ref().is_none_or(|(status, _)| *status != 200),
                "{answer:?}"
            );
        }
    }
}

#[test]
fn registry_flags_take_one_spelling_of_a_registry() {
    for bad in ["h:+80", "h:080", "h:0", "h_x:80", "h:80/x"] {
        let out = reef(&["node", "--insecure-registry", bad]);
        failed(&out, 2, "is not a registry");
        let out = reef(&["control-plane", "--oci-registry", bad]);
        failed(&out, 2, "is not a registry");
    }
}
