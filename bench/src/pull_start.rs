//! Pull-and-start: `reef apply` of a deployment whose component is in an OCI
//! registry (Debian's docker-registry on loopback) → first 200, cold (the node
//! pulls and compiles) and cached (a new deployment of the same component),
//! beside the same for a component file that `reef apply` uploads, each in a
//! fresh `reef up`.

use crate::cluster::Cluster;
use crate::{examples_dir, first_200, median};
use anyhow::{bail, Context};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    address: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_registry() -> anyhow::Result<Registry> {
    let dir = tempfile::tempdir()?;
    let port = crate::replicated::free_port()?;
    let address = format!("127.0.0.1:{port}");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
            dir.path().join("storage").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("docker-registry (apt-get install docker-registry)")?;
    let registry = Registry {
        child,
        _dir: dir,
        address,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("http://{}/v2/", registry.address))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!("docker-registry did not answer in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(registry)
}

/// Per run: (`reef apply` began → first 200, apply returned → first 200), in ms.
async fn runs(
    cluster: &Cluster,
    component: &str,
    dir: &Path,
    runs: usize,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let http = reqwest::Client::new();
    let url = format!("http://{}/", cluster.ingress);
    let mut out = Vec::new();
    for run in 0..runs {
        let manifest = dir.join(format!("app-{run}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "[[deployment]]\nname = \"hello-{run}\"\nlabels = {{ app = \"hello-{run}\" }}\ncomponent = \"{component}\"\n\n\
                 [[service]]\nname = \"hello-{run}\"\nselector = {{ app = \"hello-{run}\" }}\nhost = \"hello-{run}.local\"\n"
            ),
        )?;
        let start = Instant::now();
        cluster.reef(&["apply", "-f", manifest.to_str().context("utf-8 path")?])?;
        let returned = Instant::now();
        let answered = first_200(
            &http,
            &url,
            &format!("hello-{run}.local"),
            Duration::from_secs(60),
        )
        .await?;
        out.push((
            (answered - start).as_secs_f64() * 1000.0,
            (answered - returned).as_secs_f64() * 1000.0,
        ));
    }
    Ok(out)
}

pub async fn pull_start(reef: &Path, count: usize) -> anyhow::Result<()> {
    let registry = start_registry().await?;
    let hello = examples_dir().join("hello/hello.wasm");
    let reference = format!("oci://{}/hello:v1", registry.address);
    let pushed = Command::new(reef)
        .args(["push", hello.to_str().context("utf-8 path")?, &reference])
        .output()?;
    if !pushed.status.success() {
        bail!("reef push: {}", String::from_utf8_lossy(&pushed.stderr));
    }
    let dir = tempfile::tempdir()?;
    std::fs::copy(&hello, dir.path().join("hello.wasm"))
        .context("examples/hello/hello.wasm (run examples/build.sh)")?;
    println!("| component from | run 1 (cold): apply began → first 200 / apply returned → first 200 (ms) | runs 2–{count} (cached), median: began / returned (ms) |");
    println!("|---|---|---|");
    for (label, component) in [
        ("a file `reef apply` uploads", "hello.wasm".to_string()),
        (
            "an OCI registry (tag resolved by `reef apply`, pulled by the node)",
            reference,
        ),
    ] {
        let cluster = Cluster::start_with(reef, &["--oci-registry", &registry.address])?;
        let timings = runs(&cluster, &component, dir.path(), count).await?;
        let (cold_began, cold_returned) = timings[0];
        let mut began: Vec<f64> = timings[1..].iter().map(|t| t.0).collect();
        let mut returned: Vec<f64> = timings[1..].iter().map(|t| t.1).collect();
        println!(
            "| {label} | {cold_began:.1} / {cold_returned:.1} | {:.1} / {:.1} |",
            median(&mut began),
            median(&mut returned)
        );
    }
    Ok(())
}
