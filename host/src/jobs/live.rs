//! Live output of executions that are not final yet, for `/events`. Each
//! keeps what it has written so far, so a subscriber that arrives late gets
//! the start too: the backlog and the subscription are taken under one lock,
//! so nothing is missed or sent twice. The backlog is bounded by the
//! execution's output caps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kiln_runtime::OutputKind;
use tokio::sync::broadcast;

/// A piece of live output.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub kind: OutputKind,
    pub text: String,
}

/// Chunks buffered per subscriber; a slower reader skips ahead (the final
/// record still has the whole output).
const STREAM_BUFFER: usize = 1024;

/// One execution's output so far and its subscribers. Dropping the last
/// `Arc` (the map's, taken out by `forget` once the final record is flushed)
/// closes the streams.
#[derive(Default)]
pub struct Live(Mutex<Output>);

#[derive(Default)]
struct Output {
    backlog: Vec<Chunk>,
    /// Made by the first subscriber: most executions have none, and a
    /// channel of `STREAM_BUFFER` slots is a 64 KiB allocation.
    sender: Option<broadcast::Sender<Chunk>>,
}

impl Live {
    pub fn publish(&self, chunk: Chunk) {
        let mut output = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = &output.sender {
            // A subscriber that went away is not an error.
            let _ = sender.send(chunk.clone());
        }
        output.backlog.push(chunk);
    }
}

#[derive(Default)]
pub struct LiveOutputs {
    streams: Mutex<HashMap<String, Arc<Live>>>,
}

impl LiveOutputs {
    fn entry(&self, id: &str) -> Arc<Live> {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Where a worker publishes an execution's output.
    pub fn publisher(&self, id: &str) -> Arc<Live> {
        self.entry(id)
    }

    /// The output so far and the rest as it comes. The caller must check
    /// afterwards that the execution did not finish meanwhile (and then
    /// [`forget`](Self::forget) it).
    pub fn subscribe(&self, id: &str) -> (Vec<Chunk>, broadcast::Receiver<Chunk>) {
        let live = self.entry(id);
        let mut output = live.0.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = output
            .sender
            .get_or_insert_with(|| broadcast::channel(STREAM_BUFFER).0)
            .subscribe();
        (output.backlog.clone(), receiver)
    }

    pub fn forget(&self, id: &str) {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> Chunk {
        Chunk {
            kind: OutputKind::Stdout,
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn late_subscribers_get_the_backlog_then_the_rest_then_the_end() {
        let outputs = LiveOutputs::default();
        let publisher = outputs.publisher("e");
        publisher.publish(chunk("a"));
        let (backlog, mut rest) = outputs.subscribe("e");
        publisher.publish(chunk("b"));
        outputs.forget("e");
        drop(publisher);
        assert_eq!(
            backlog.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(rest.recv().await.unwrap().text, "b");
        assert!(rest.recv().await.is_err(), "closed once the worker is done");
    }
}
