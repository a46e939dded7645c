//! Scripts' secrets (their config values) and requests' `env`: sealed in the
//! store under a key kept outside it, readable by JavaScript, Python and a
//! component, masked where a run echoes them, and nowhere to be found in the
//! data directory, the logs or any answer of the API.

use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::Kiln;

const SECRET: &str = "s3cr3t-Kiln-7f2c9a";
const ENV_VALUE: &str = "per-request-Vq81xZ";
/// A webhook signing secret: its key part, then whole.
const SIGNING_KEY: &str = "a2lsbi1lMmUtd2ViaG9vay1zZWNyZXQtMzItYnl0ZSE=";

/// The dictionaries the store packs its values against
/// (`host/src/store/sled/packed.rs`).
const PACKING_DICTIONARIES: [&[u8]; 2] = [
    include_bytes!("../../host/src/store/sled/record_dictionary_1.txt"),
    include_bytes!("../../host/src/store/sled/rollup_dictionary_2.txt"),
];

/// Every zstd frame in `bytes` decompressed with each of the store's
/// dictionaries: a packed record hides its text from a plain search. (The
/// crate's own tests use `store::sled::unpacked_in`; this suite sees the
/// server from outside, so it reads the format itself.)
fn unpacked(bytes: &[u8]) -> Vec<Vec<u8>> {
    use std::io::Read as _;
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let mut found = Vec::new();
    for (at, _) in bytes.windows(4).enumerate().filter(|(_, w)| *w == MAGIC) {
        for dictionary in PACKING_DICTIONARIES {
            let Ok(decoder) =
                zstd::stream::read::Decoder::with_dictionary(&bytes[at..], dictionary)
            else {
                continue;
            };
            let mut text = Vec::new();
            if decoder
                .single_frame()
                .take(1 << 20)
                .read_to_end(&mut text)
                .is_ok()
            {
                found.push(text);
            }
        }
    }
    found
}

fn holds(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir` whose bytes, or whose packed values unpacked,
/// contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && (holds(&bytes, needle) || unpacked(&bytes).iter().any(|text| holds(text, needle)))
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn secrets_are_read_by_every_kind_of_script_and_found_nowhere_else() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("kiln.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let node = data.path().join("node");
    let kiln = Kiln::start_logging_to(&node, &[("RUST_LOG", "debug")], log);
    let mut answers = Vec::new();

    kiln.create_script(
        "js-secret",
        "javascript",
        "export default () => { console.log(`token is ${process.env.API_TOKEN}`); \
         console.error(process.env.API_TOKEN); \
         return { length: process.env.API_TOKEN.length, echoed: 'x' + process.env.API_TOKEN, env: process.env.FROM_REQUEST.length }; }",
    );
    kiln.create_script(
        "py-secret",
        "python",
        "import os\n\ndef main():\n    print(os.environ['API_TOKEN'])\n    return len(os.environ['API_TOKEN'])\n",
    );
    kiln.create_component("counter", kiln_components::COUNTER);
    for script in ["js-secret", "py-secret", "counter"] {
        let put = kiln
            .request(Method::PUT, &format!("/v1/scripts/{script}/config"))
            .json(&json!({"values": {"API_TOKEN": SECRET, "greeting": SECRET}}))
            .send()
            .unwrap();
        assert_eq!(put.status(), 200);
        answers.push(put.text().unwrap());
        answers.push(
            kiln.get(&format!("/v1/scripts/{script}/config"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
    }

    let run = |script: &str, answers: &mut Vec<String>| -> Value {
        let response = kiln.execute(
            script,
            "?wait=true",
            json!({"env": {"FROM_REQUEST": ENV_VALUE}}),
        );
        assert_eq!(response.status(), 200);
        let text = response.text().unwrap();
        answers.push(text.clone());
        serde_json::from_str(&text).unwrap()
    };
    let js = run("js-secret", &mut answers);
    assert_eq!(js["status"], "completed", "{js}");
    assert_eq!(
        js["result"],
        json!({"length": SECRET.len(), "echoed": "x****", "env": ENV_VALUE.len()})
    );
    assert_eq!(js["stdout"], "token is ****\n");
    assert_eq!(js["stderr"], "****\n");
    let py = run("py-secret", &mut answers);
    assert_eq!(py["result"], json!(SECRET.len()), "{py}");
    assert_eq!(py["stdout"], "****\n");
    // A kiln:script component reads it through its config import; the
    // counter returns it, masked.
    let counter = run("counter", &mut answers);
    assert_eq!(counter["result"]["greeting"], "****", "{counter}");

    // An execution queued (202), so its request env is stored before it runs.
    let queued = kiln.execute("js-secret", "", json!({"env": {"FROM_REQUEST": ENV_VALUE}}));
    assert_eq!(queued.status(), 202);
    let id = queued.json::<Value>().unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    answers.push(serde_json::to_string(&kiln.poll_until_final(&id)).unwrap());
    // A webhook's signing secret is sealed too (it must be read back to
    // sign, so it cannot be a hash).
    let hook = kiln
        .post("/v1/webhooks")
        .json(
            &json!({"url": "http://8.8.8.8/hook", "events": ["script.deleted"],
                      "secret": format!("whsec_{SIGNING_KEY}")}),
        )
        .send()
        .unwrap();
    assert_eq!(hook.status(), 201);
    for path in [
        "/v1/executions",
        "/v1/audit",
        "/v1/scripts",
        "/v1/webhooks",
        "/metrics",
    ] {
        answers.push(kiln.get(path).send().unwrap().text().unwrap());
    }
    let _stopped = kiln.terminate();

    for (i, answer) in answers.iter().enumerate() {
        assert!(
            !answer.contains(SECRET),
            "answer {i} shows the secret: {answer}"
        );
        assert!(
            !answer.contains(ENV_VALUE),
            "answer {i} shows the env value: {answer}"
        );
        assert!(
            !answer.contains(SIGNING_KEY),
            "answer {i} shows the signing secret: {answer}"
        );
    }
    // The search sees into packed records: the masked output the runs
    // printed is found unpacked in sled's log, where the records are only
    // packed (it may take sled's background flush a moment to write them).
    let log_file = node.join("db").join("db");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !unpacked(&std::fs::read(&log_file).unwrap())
        .iter()
        .any(|text| holds(text, b"token is "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no packed record found in {}",
            log_file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        files_containing(data.path(), SECRET.as_bytes()),
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(data.path(), ENV_VALUE.as_bytes()),
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(data.path(), SIGNING_KEY.as_bytes()),
        Vec::<String>::new()
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&node), 0o700);
        assert_eq!(mode(&node.join("master-key")), 0o600);
        assert_eq!(mode(&node.join("db").join("db")), 0o600);
    }
}

const SHARED: &str = "shared-Tok3n-91bd0e";

/// A shared secret: kept once by an admin, granted to scripts by name or to
/// all, read as their own config values are (their own config winning on a
/// name both have), masked, never shown, and gone from runs once deleted.
#[test]
fn a_shared_secret_reaches_only_the_scripts_granted_it() {
    let data = tempfile::tempdir().unwrap();
    let node = data.path().join("node");
    let kiln = Kiln::start_in(&node, &[]);
    let mut answers = Vec::new();
    let reader = "export default () => { console.log(process.env.SHARED_TOKEN); \
                  return process.env.SHARED_TOKEN === undefined ? 'none' : process.env.SHARED_TOKEN.length; }";
    kiln.create_script("granted", "javascript", reader);
    kiln.create_script("other", "javascript", reader);
    kiln.create_script(
        "py-granted",
        "python",
        "import os\n\ndef main():\n    return len(os.environ['SHARED_TOKEN'])\n",
    );
    let put = |body: Value| {
        kiln.request(Method::PUT, "/v1/secrets/SHARED_TOKEN")
            .json(&body)
            .send()
            .unwrap()
    };
    let result = |script: &str, answers: &mut Vec<String>| -> Value {
        let run = kiln.run(script, json!({}));
        answers.push(run.to_string());
        assert_eq!(run["status"], "completed", "{run}");
        run["result"].clone()
    };

    let created = put(json!({"value": SHARED, "scripts": ["granted", "py-granted"]}));
    assert_eq!(created.status(), 201);
    let view: Value = created.json().unwrap();
    answers.push(view.to_string());
    assert_eq!(view["name"], "SHARED_TOKEN");
    assert_eq!(view["scripts"].as_array().unwrap().len(), 2);
    assert!(view.get("value").is_none(), "{view}");
    assert_eq!(result("granted", &mut answers), json!(SHARED.len()));
    assert_eq!(result("py-granted", &mut answers), json!(SHARED.len()));
    assert_eq!(result("other", &mut answers), "none");
    let echoed = kiln.run("granted", json!({}));
    assert_eq!(echoed["stdout"], "****\n", "masked like a config value");

    // Granted to every script, without sending the value again.
    let regranted = put(json!({"scripts": ["*"]}));
    assert_eq!(regranted.status(), 200);
    assert_eq!(result("other", &mut answers), json!(SHARED.len()));
    // A script's own config value of that name wins.
    let own = kiln
        .request(Method::PUT, "/v1/scripts/other/config")
        .json(&json!({"values": {"SHARED_TOKEN": "mine"}}))
        .send()
        .unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(result("other", &mut answers), json!(4));

    // What is refused: an unknown script, a value too long, a non-admin.
    let unknown = put(json!({"value": "x", "scripts": ["ghost"]}));
    assert!(
        crate::harness::error_body(unknown, 404, "RESOURCE_NOT_FOUND")
            .to_string()
            .contains("ghost")
    );
    let long = put(json!({"value": "x".repeat(4097), "scripts": []}));
    crate::harness::error_body(long, 400, "VALIDATION_ERROR");
    let (_, token) = kiln.create_user("dev", "developer");
    for (method, path) in [
        (Method::GET, "/v1/secrets"),
        (Method::PUT, "/v1/secrets/SHARED_TOKEN"),
        (Method::DELETE, "/v1/secrets/SHARED_TOKEN"),
    ] {
        let response = kiln
            .with_token(&token, method, path)
            .json(&json!({"value": "stolen", "scripts": ["*"]}))
            .send()
            .unwrap();
        crate::harness::error_body(response, 403, "PERMISSION_DENIED");
    }
    for path in ["/v1/secrets", "/v1/secrets/SHARED_TOKEN", "/v1/audit"] {
        answers.push(kiln.get(path).send().unwrap().text().unwrap());
    }

    let deleted = kiln
        .request(Method::DELETE, "/v1/secrets/SHARED_TOKEN")
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(result("granted", &mut answers), "none");
    let _stopped = kiln.terminate();
    for (i, answer) in answers.iter().enumerate() {
        assert!(!answer.contains(SHARED), "answer {i} shows it: {answer}");
    }
    assert_eq!(
        files_containing(data.path(), SHARED.as_bytes()),
        Vec::<String>::new()
    );
}
