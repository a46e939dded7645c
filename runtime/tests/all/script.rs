//! `kiln:script` components (the guest SDK's `counter` example): JSON in and
//! out through `run`, with the host's log, key-value and config imports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kiln_runtime::{
    Call, ErrorCode, Invocation, KvError, Limits, Outcome, ScriptHost, Shape, Status,
};

use super::{read_guest, sandbox};

#[derive(Default)]
struct TestHost {
    kv: Mutex<BTreeMap<String, Vec<u8>>>,
    refuse_writes: bool,
}

impl ScriptHost for TestHost {
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.kv.lock().unwrap().get(key).cloned())
    }

    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        if self.refuse_writes {
            return Err(KvError::QuotaExceeded("full".into()));
        }
        self.kv.lock().unwrap().insert(key.into(), value.into());
        Ok(())
    }

    fn kv_delete(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.kv.lock().unwrap().remove(key).is_some())
    }

    fn kv_list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, KvError> {
        let kv = self.kv.lock().unwrap();
        Ok(kv
            .keys()
            .filter(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }

    fn config(&self, key: &str) -> Option<String> {
        (key == "greeting").then(|| "hi".to_string())
    }
}

async fn count(params: &str, host: Option<Arc<dyn ScriptHost>>) -> Outcome {
    let (artifact, _) = sandbox()
        .load(&read_guest(kiln_components::COUNTER))
        .unwrap();
    assert_eq!(artifact.shape(), Shape::Script);
    sandbox()
        .run(
            &artifact,
            Invocation {
                call: Call::Json {
                    params: params.into(),
                },
                limits: Limits::default(),
                script_host: host,
                ..Invocation::default()
            },
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn the_counter_counts_in_the_host_store_and_reads_config() {
    let host: Arc<TestHost> = Arc::default();
    for expected in 1..=2 {
        let outcome = count("{}", Some(host.clone())).await;
        assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
        let result: serde_json::Value =
            serde_json::from_str(outcome.result.as_deref().unwrap()).unwrap();
        assert_eq!(result["count"], expected);
        assert_eq!(result["greeting"], "hi");
        assert_eq!(
            String::from_utf8_lossy(&outcome.stderr),
            format!("[info] visits is now {expected}\n")
        );
    }
    assert_eq!(host.kv.lock().unwrap()["visits"], b"2");
}

#[tokio::test]
async fn the_script_sees_host_errors_and_its_err_fails_the_run() {
    let full: Arc<dyn ScriptHost> = Arc::new(TestHost {
        refuse_writes: true,
        ..TestHost::default()
    });
    let outcome = count("{}", Some(full)).await;
    assert_eq!(outcome.error_code(), Some(ErrorCode::ScriptError));
    assert!(
        outcome
            .error
            .unwrap()
            .message
            .contains("quota exceeded: full")
    );

    let outcome = count("{}", None).await;
    assert!(outcome.error.unwrap().message.contains("unavailable"));

    let outcome = count(r#"{"fail": true}"#, Some(Arc::new(TestHost::default()))).await;
    assert_eq!(outcome.status, Status::Failed);
    assert_eq!(
        outcome.error.unwrap().message,
        "asked to fail with visits untouched"
    );
}

#[tokio::test]
async fn a_script_component_needs_a_json_call() {
    let (artifact, _) = sandbox()
        .load(&read_guest(kiln_components::COUNTER))
        .unwrap();
    let refused = sandbox().run(&artifact, Invocation::default()).await;
    assert!(refused.is_err());
}
