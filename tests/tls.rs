//! TLS on loopback with `--tls`: the member serves HTTPS under the cluster CA
//! it made at init and refuses plain HTTP; the CLI (client config) and a node
//! (`--ca-file`) verify it; a client trusting another CA fails clearly.
//! (Members beyond loopback always serve HTTPS: tests/partition.rs runs a
//! three-member cluster that way.)

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const SLOW: Duration = Duration::from_secs(90);

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_tls_serves_https_and_clients_verify_it() {
    let app = example("hello");
    let cluster = Cluster::start_with(&["--tls", "--apply", path_str(&app)]).await;
    let ca = std::fs::read_to_string(cluster.data_dir().join("ca.crt")).expect("ca.crt");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    // HTTPS under the cluster CA.
    let healthz = https_client(&ca)
        .get(format!("https://{}/healthz", cluster.api))
        .send()
        .await
        .expect("https");
    assert_eq!(healthz.status().as_u16(), 200);
    // Plain HTTP to the same port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", cluster.api))
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");

    // The CLI reads the CA from the config `reef up` wrote, and so does the
    // node inside `reef up`: the example is served.
    cluster.until_status("hello.local", "/", 200, SLOW).await;
    let pods = cluster.reef_ok(&["get", "pods"]);
    assert!(pods.contains("hello-"), "{pods}");

    // A client that trusts another CA is told what is wrong.
    let other = reef_control_plane::tls::ClusterCa::generate().expect("another CA");
    let wrong = cluster.home.path().join("wrong-ca.crt");
    std::fs::write(&wrong, other.cert_pem).expect("write");
    let out = Command::new(REEF)
        .args(["get", "pods"])
        .envs(cluster.env())
        .env("REEF_CA_FILE", &wrong)
        .output()
        .expect("reef");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("certificate") && stderr.contains("cluster CA"),
        "{stderr}"
    );

    // A separate node joins over HTTPS with --ca-file and becomes Ready.
    let node_dir = cluster.home.path().join("node-b");
    let log = std::fs::File::create(cluster.home.path().join("node-b.log")).expect("log");
    let mut node = Command::new(REEF)
        .args([
            "node",
            "--name",
            "b",
            "--ingress",
            "127.0.0.1:0",
            "--heartbeat",
            "1s",
        ])
        .arg("--data-dir")
        .arg(&node_dir)
        .args(["--server", &format!("https://{}", cluster.api)])
        .arg("--join-token-file")
        .arg(cluster.data_dir().join("join.token"))
        .arg("--ca-file")
        .arg(cluster.data_dir().join("ca.crt"))
        .envs(cluster.env())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("reef node");
    eventually("node b to be Ready", SLOW, || async {
        let nodes = cluster.get_json("nodes");
        nodes["items"]
            .as_array()?
            .iter()
            .any(|n| {
                n["metadata"]["name"] == "b"
                    && n["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .then_some(())
    })
    .await;
    let _ = node.kill();
    let _ = node.wait();
}
