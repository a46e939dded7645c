//! Live output of executions that are not final yet, for `/events`. Each
//! keeps what it has written so far, so a subscriber that arrives late gets
//! the start too: the backlog and the subscription are taken under one lock,
//! so nothing is missed or sent twice. The backlog is bounded by the
//! execution's output caps, and kept as runs of one stream each (a million
//! one-byte writes are one entry, not a million); chunks in flight are
//! shared by every subscriber (`Arc<str>`), and an execution has at most
//! `MAX_SUBSCRIBERS`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kiln_runtime::OutputKind;
use tokio::sync::broadcast;

/// A piece of live output; a clone shares its text.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub kind: OutputKind,
    pub text: Arc<str>,
}

/// `/events` streams of one execution at once: each holds a copy of the
/// backlog (up to both output caps) while it sends it.
pub const MAX_SUBSCRIBERS: usize = 16;

/// An execution already has [`MAX_SUBSCRIBERS`] streams.
#[derive(Debug, thiserror::Error)]
#[error(
    "this execution already has {MAX_SUBSCRIBERS} event streams open; close one or read the execution when it is done"
)]
pub struct TooManySubscribers;

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
    /// What was written so far, consecutive writes to one stream joined.
    backlog: Vec<(OutputKind, String)>,
    /// Made by the first subscriber: most executions have none, and a
    /// channel of `STREAM_BUFFER` slots is a 64 KiB allocation.
    sender: Option<broadcast::Sender<Chunk>>,
}

impl Live {
    pub fn publish(&self, kind: OutputKind, text: &str) {
        let mut output = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = &output.sender {
            // A subscriber that went away is not an error.
            let _ = sender.send(Chunk {
                kind,
                text: text.into(),
            });
        }
        match output.backlog.last_mut() {
            Some((last, joined)) if *last == kind => joined.push_str(text),
            _ => output.backlog.push((kind, text.to_owned())),
        }
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
    ///
    /// # Errors
    ///
    /// [`TooManySubscribers`] when the execution has its most streams.
    pub fn subscribe(
        &self,
        id: &str,
    ) -> Result<(Vec<Chunk>, broadcast::Receiver<Chunk>), TooManySubscribers> {
        let live = self.entry(id);
        let mut output = live.0.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = output
            .sender
            .get_or_insert_with(|| broadcast::channel(STREAM_BUFFER).0);
        if sender.receiver_count() >= MAX_SUBSCRIBERS {
            return Err(TooManySubscribers);
        }
        let receiver = sender.subscribe();
        let backlog = output
            .backlog
            .iter()
            .map(|(kind, text)| Chunk {
                kind: *kind,
                text: text.as_str().into(),
            })
            .collect();
        Ok((backlog, receiver))
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

    #[tokio::test]
    async fn late_subscribers_get_the_backlog_then_the_rest_then_the_end() {
        let outputs = LiveOutputs::default();
        let publisher = outputs.publisher("e");
        publisher.publish(OutputKind::Stdout, "a");
        let (backlog, mut rest) = outputs.subscribe("e").unwrap();
        publisher.publish(OutputKind::Stdout, "b");
        outputs.forget("e");
        drop(publisher);
        assert_eq!(backlog.iter().map(|c| &*c.text).collect::<Vec<_>>(), ["a"]);
        assert_eq!(&*rest.recv().await.unwrap().text, "b");
        assert!(rest.recv().await.is_err(), "closed once the worker is done");
    }

    #[test]
    fn the_backlog_joins_writes_to_one_stream_and_keeps_their_order() {
        let outputs = LiveOutputs::default();
        let publisher = outputs.publisher("e");
        for _ in 0..100_000 {
            publisher.publish(OutputKind::Stdout, "x");
        }
        publisher.publish(OutputKind::Stderr, "oops");
        publisher.publish(OutputKind::Stdout, "y");
        let (backlog, _rest) = outputs.subscribe("e").unwrap();
        let runs: Vec<(OutputKind, usize)> =
            backlog.iter().map(|c| (c.kind, c.text.len())).collect();
        assert_eq!(
            runs,
            [
                (OutputKind::Stdout, 100_000),
                (OutputKind::Stderr, 4),
                (OutputKind::Stdout, 1)
            ]
        );
    }

    #[test]
    fn an_execution_has_at_most_so_many_subscribers() {
        let outputs = LiveOutputs::default();
        let _publisher = outputs.publisher("e");
        let mut held: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| outputs.subscribe("e").unwrap())
            .collect();
        assert!(outputs.subscribe("e").is_err());
        held.pop();
        assert!(
            outputs.subscribe("e").is_ok(),
            "a closed stream frees its place"
        );
    }
}
