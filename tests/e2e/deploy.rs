//! The deploy files say what the binary does: the Kubernetes manifests are
//! one node, sized for its workers, with probes on the right endpoints and a
//! grace period that holds the whole drain; the example Secret is outside
//! the applied directory and its placeholders are refused; the systemd unit
//! verifies where systemd is installed.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of every manifest `kubectl apply -f deploy/k8s/` applies.
fn applied() -> Vec<Yaml> {
    applied_from("k8s")
}

/// Every document `kubectl apply -f deploy/<dir>/` applies.
fn applied_from(dir: &str) -> Vec<Yaml> {
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(deploy().join(dir)).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        documents.extend(parsed);
    }
    documents
}

fn mebibytes(quantity: &str) -> u64 {
    if let Some(mi) = quantity.strip_suffix("Mi") {
        mi.parse().unwrap()
    } else if let Some(gi) = quantity.strip_suffix("Gi") {
        gi.parse::<u64>().unwrap() * 1024
    } else {
        panic!("unexpected quantity {quantity}")
    }
}

#[test]
fn the_manifests_are_one_node_sized_and_probed_as_the_binary_behaves() {
    let documents = applied();
    for document in &documents {
        for field in ["apiVersion", "kind"] {
            assert!(
                document[field].as_str().is_some(),
                "no {field}: {document:?}"
            );
        }
        assert!(document["metadata"]["name"].as_str().is_some());
        let kind = document["kind"].as_str().unwrap();
        assert!(
            ["StatefulSet", "Service", "PodDisruptionBudget"].contains(&kind),
            "{kind} is applied: one node has no autoscaler, and no Secret is applied with placeholder values"
        );
    }
    let nodes: Vec<&Yaml> = documents
        .iter()
        .filter(|d| d["kind"].as_str() == Some("StatefulSet"))
        .collect();
    assert_eq!(nodes.len(), 1);
    let node = nodes[0];
    assert_eq!(
        node["spec"]["replicas"].as_i64(),
        Some(1),
        "each node's store is its own"
    );
    let pod = &node["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = |name: &str| -> Option<String> {
        container["env"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|var| var["name"].as_str() == Some(name))
            .and_then(|var| var["value"].as_str().map(str::to_owned))
    };
    let workers: u64 = env("KILN_WORKERS_COUNT")
        .expect("the worker count is pinned, not the host's cores")
        .parse()
        .unwrap();
    let per_run: u64 = env("KILN_LIMITS_MAX_MEMORY_MB").unwrap().parse().unwrap();
    let limit = mebibytes(container["resources"]["limits"]["memory"].as_str().unwrap());
    assert!(
        workers * per_run + 512 <= limit,
        "{workers} × {per_run} MiB + 512 MiB headroom over a {limit} MiB limit"
    );
    let cpus: u64 = container["resources"]["limits"]["cpu"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cpus, workers, "one worker per CPU the pod may use");
    // The drain's delay (5 s) and timeout (30 s), with room for answers.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(grace > 5 + 30, "{grace} s of grace");
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz"),
        "a start-up compile must not look dead"
    );
    for secret in [
        "KILN_AUTH_JWT_SECRET",
        "KILN_ADMIN_PASSWORD",
        "KILN_MASTER_KEY",
    ] {
        let var = container["env"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|var| var["name"].as_str() == Some(secret))
            .unwrap_or_else(|| panic!("{secret} is not set"));
        assert!(
            var["valueFrom"]["secretKeyRef"]["name"].as_str().is_some(),
            "{secret} comes from the Secret"
        );
    }
}

/// The value of `name` in `container`'s environment, or its Secret key.
fn env_of(container: &Yaml, name: &str) -> Option<(Option<String>, Option<String>)> {
    container["env"]
        .as_vec()?
        .iter()
        .find(|var| var["name"].as_str() == Some(name))
        .map(|var| {
            (
                var["value"].as_str().map(str::to_owned),
                var["valueFrom"]["secretKeyRef"]["key"]
                    .as_str()
                    .map(str::to_owned),
            )
        })
}

#[test]
fn the_shared_manifests_run_interchangeable_nodes_on_one_database() {
    let documents = applied_from("k8s-shared");
    let kinds: Vec<&str> = documents
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["Deployment", "Service", "PodDisruptionBudget"]);
    let nodes = &documents[0];
    let replicas = nodes["spec"]["replicas"].as_i64().unwrap();
    assert!(replicas >= 2, "{replicas} replicas");
    let pod = &nodes["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        env_of(container, "KILN_STORE_SHARED"),
        Some((Some("true".into()), None))
    );
    // The database and the keys every node must share, from one Secret.
    for (var, key) in [
        ("KILN_STORE_URL", "store-url"),
        ("KILN_AUTH_JWT_SECRET", "jwt-secret"),
        ("KILN_MASTER_KEY", "master-key"),
        ("KILN_ADMIN_PASSWORD", "admin-password"),
    ] {
        assert_eq!(
            env_of(container, var),
            Some((None, Some(key.into()))),
            "{var}"
        );
    }
    // Nothing of a pod's own is kept: no volume claim, a scratch data dir.
    assert!(nodes["spec"]["volumeClaimTemplates"].is_badvalue());
    assert!(pod["volumes"][0]["emptyDir"].as_hash().is_some());
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz"),
        "a pod whose database does not answer gets no traffic"
    );
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 5 + 30);
    let budget = &documents[2];
    let min_available = budget["spec"]["minAvailable"].as_i64().unwrap();
    assert!((1..replicas).contains(&min_available));
    // The example Secret has every key it reads.
    let text = std::fs::read_to_string(deploy().join("kiln-secret.example.yaml")).unwrap();
    let secret = &YamlLoader::load_from_str(&text).unwrap()[0];
    assert!(secret["stringData"]["store-url"].as_str().is_some());
}

#[test]
fn the_example_secret_is_not_applied_and_its_placeholders_are_refused() {
    let text = std::fs::read_to_string(deploy().join("kiln-secret.example.yaml")).unwrap();
    let secret = &YamlLoader::load_from_str(&text).unwrap()[0];
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    let value = |key: &str| secret["stringData"][key].as_str().unwrap().to_owned();
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("KILN_AUTH_JWT_SECRET", value("jwt-secret"))
        .env("KILN_ADMIN_PASSWORD", value("admin-password"))
        .env("KILN_MASTER_KEY", value("master-key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad configuration");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad configuration"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `systemd-analyze verify` where systemd is installed (not in every CI
/// container); the unit's drain room is checked everywhere.
#[test]
fn the_systemd_unit_verifies_and_leaves_room_for_the_drain() {
    let unit = deploy().join("kiln.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let stop: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > 5 + 30, "{stop} s to stop");
    let setting = |prefix: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}"))
            .trim_end_matches('M')
            .parse()
            .unwrap()
    };
    let (workers, per_run) = (
        setting("Environment=KILN_WORKERS_COUNT="),
        setting("Environment=KILN_LIMITS_MAX_MEMORY_MB="),
    );
    assert!(
        workers * per_run + 512 <= setting("MemoryMax="),
        "the unit's memory holds its workers"
    );
    assert!(text.contains("RestartPreventExitStatus=2"));
    // The unit as installed, but starting the binary under test (the path
    // it names exists only after the install steps).
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("kiln.service");
    std::fs::write(
        &installed,
        text.replace("/usr/local/bin/kiln", env!("CARGO_BIN_EXE_kiln")),
    )
    .unwrap();
    if let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&installed)
        .output()
    {
        // Unknown or misspelt keys are only warnings: none is allowed.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    }
}
