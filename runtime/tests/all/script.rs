//! `kiln:script` components (the guest SDK's `counter` example): JSON in and
//! out through `run`, with the host's log, key-value and config imports.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_runtime::{
    Call, ErrorCode, Invocation, KvError, Limits, MemoryScriptHost, Outcome, ScriptHost, Shape,
    Status,
};

use super::{read_guest, sandbox};

/// A store that is always full.
struct FullHost;

#[async_trait::async_trait]
impl ScriptHost for FullHost {
    async fn kv_get(&self, _: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(None)
    }

    async fn kv_set(&self, _: &str, _: &[u8]) -> Result<(), KvError> {
        Err(KvError::QuotaExceeded("full".into()))
    }

    async fn kv_delete(&self, _: &str) -> Result<bool, KvError> {
        Ok(false)
    }

    async fn kv_list(&self, _: &str, _: usize) -> Result<Vec<String>, KvError> {
        Ok(Vec::new())
    }

    fn config(&self, _: &str) -> Option<String> {
        None
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
    let config = BTreeMap::from([("greeting".to_string(), "hi".to_string())]);
    let host = Arc::new(MemoryScriptHost::new(config));
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
    assert_eq!(host.value("visits").unwrap(), b"2");
}

#[tokio::test]
async fn the_script_sees_host_errors_and_its_err_fails_the_run() {
    let full: Arc<dyn ScriptHost> = Arc::new(FullHost);
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

    let outcome = count(
        r#"{"fail": true}"#,
        Some(Arc::new(MemoryScriptHost::default())),
    )
    .await;
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
