//! A data directory written by a Kiln from before organizations (schema 4,
//! `fixtures/schema4.tar.gz`, made by `fixtures/make_schema4.py` with that
//! release's binary) opens in this one: everything is in the default
//! organization, and nothing is lost.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::Kiln;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/e2e/fixtures")
        .join(name)
}

fn ok(response: reqwest::blocking::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[test]
fn a_data_directory_from_before_organizations_is_the_default_organization() {
    let made: Value =
        serde_json::from_slice(&std::fs::read(fixture("schema4.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let unpacked = Command::new("tar")
        .arg("xzf")
        .arg(fixture("schema4.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(unpacked.success());
    let data = dir.path().join("data");

    for start in ["migrating", "migrated already"] {
        let kiln = Kiln::start_in(&data, &[]);
        // The first admin is a node operator and the default's admin.
        let me = ok(kiln.get("/v1/users/me").send().unwrap());
        assert_eq!(me["operator"], true, "{start}: {me}");
        assert_eq!(me["role"], "admin");
        assert_eq!(
            me["organizations"],
            json!([{"id": "default", "name": "default", "role": "admin"}])
        );
        let orgs = ok(kiln.get("/v1/organizations").send().unwrap());
        assert_eq!(orgs["pagination"]["total_elements"], 1, "{orgs}");

        // Every user keeps their role, now in the default organization.
        let users = ok(kiln.get("/v1/users").send().unwrap());
        let roles: Vec<(String, String)> = users["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["username"].as_str().unwrap().to_owned(),
                    u["role"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (name, role) in [
            ("admin", "admin"),
            ("dev", "developer"),
            ("ana", "analyst"),
            ("vie", "viewer"),
        ] {
            assert!(
                roles.contains(&(name.to_owned(), role.to_owned())),
                "{start}: {roles:?}"
            );
        }

        // The developer's scripts, versions, config, runs, schedule and
        // webhook are there, by the ids and names they had.
        let dev = ok(kiln.login("dev", "dev password"))["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let as_dev = |method: Method, path: &str| kiln.with_token(&dev, method, path);
        let greet = ok(as_dev(Method::GET, "/v1/scripts/greet").send().unwrap());
        assert_eq!(greet["id"], made["scripts"]["greet"]);
        assert_eq!(greet["version"], 2);
        let first = as_dev(Method::GET, "/v1/scripts/greet/content?version=1")
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(first.contains("'v1 '"), "{first}");
        let run = ok(as_dev(Method::POST, "/v1/scripts/greet/execute?wait=true")
            .json(&json!({"parameters": {"who": "new"}}))
            .send()
            .unwrap());
        // The config value sealed by the old node still opens: the run
        // read it (unopened, it would be missing, and the result would end
        // in a space), and its output is masked as config values are.
        assert_eq!(run["result"], "v2 new ****", "{run}");
        let sum = ok(as_dev(Method::POST, "/v1/scripts/sum/execute?wait=true")
            .json(&json!({"parameters": {"xs": [4, 5]}}))
            .send()
            .unwrap());
        assert_eq!(sum["result"], 9, "{sum}");
        let listed = ok(as_dev(Method::GET, "/v1/executions?size=100")
            .send()
            .unwrap());
        let ids: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        for old in made["executions"].as_array().unwrap() {
            let old = old.as_str().unwrap();
            assert!(ids.contains(&old), "{start}: {old} not in {ids:?}");
            let record = ok(as_dev(Method::GET, &format!("/v1/executions/{old}"))
                .send()
                .unwrap());
            assert_eq!(record["status"], "completed");
        }
        let schedule = made["schedule"].as_str().unwrap();
        ok(as_dev(Method::GET, &format!("/v1/schedules/{schedule}"))
            .send()
            .unwrap());
        let webhook = made["webhook"].as_str().unwrap();
        ok(as_dev(Method::GET, &format!("/v1/webhooks/{webhook}"))
            .send()
            .unwrap());

        // The old API key acts, in the default organization.
        let key = made["key"].as_str().unwrap();
        let by_key = ok(kiln
            .with_key(key, Method::GET, "/v1/organizations/current")
            .send()
            .unwrap());
        assert_eq!(
            (by_key["id"].as_str(), by_key["role"].as_str()),
            (Some("default"), Some("developer"))
        );
        let secrets = ok(kiln.get("/v1/secrets").send().unwrap());
        assert_eq!(secrets["data"][0]["name"], "SHARED");
        // The old audit log is the default organization's.
        let audit = ok(kiln.get("/v1/audit?size=100").send().unwrap());
        let actions: Vec<&str> = audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert!(actions.contains(&"user.created"), "{actions:?}");
        kiln.terminate();
    }
}
