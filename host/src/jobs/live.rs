//! Live output of executions that are not final yet, for `/events`, as
//! Server-Sent Event frames formatted once and shared (`Bytes`) by every
//! subscriber: sixteen streams of a run cost its output once, not sixteen
//! times. Each execution keeps what it has written so far, so a subscriber
//! that arrives late gets the start too: the backlog and the subscription
//! are taken under one lock, so nothing is missed or sent twice. The
//! backlog is each stream so far, as a finished execution's replay has it
//! (a million interleaved one-byte writes are two strings, not a million),
//! bounded by the execution's output caps; an execution has at most
//! `MAX_SUBSCRIBERS`. An interactive execution's stdin passes here too, from
//! the one socket that holds it to its run, `STDIN_BUFFER` chunks at most.
//! With several nodes on one store, the output of a run here goes to the
//! nodes that stream it too (`jobs/signals.rs` relays what
//! [`LiveOutputs::relay`] gathers), and output relayed from the node that
//! runs an execution feeds the streams of it here.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use kiln_runtime::OutputKind;
use tokio::sync::{OnceCell, broadcast, mpsc};

use crate::store::Signal;

/// `/events` streams of one execution at once.
pub const MAX_SUBSCRIBERS: usize = 16;

/// An execution already has [`MAX_SUBSCRIBERS`] streams.
#[derive(Debug, thiserror::Error)]
#[error(
    "this execution already has {MAX_SUBSCRIBERS} event streams open; close one or read the execution when it is done"
)]
pub struct TooManySubscribers;

/// Frames buffered per subscriber; a slower reader skips ahead (the final
/// record still has the whole output).
const STREAM_BUFFER: usize = 1024;

/// Chunks of an interactive execution's stdin sent but not yet read by the
/// guest; a sender past them waits (and so stops reading its socket).
const STDIN_BUFFER: usize = 16;

/// Nodes one execution's output is relayed to (`store.shared`): a cluster
/// has fewer.
const MAX_WATCHING_NODES: usize = 64;

/// Output already written goes out in events of at most this many bytes of
/// text, so that a reader can start on the first before the last is sent.
const PIECE_BYTES: usize = 64 << 10;

/// One Server-Sent Event on the wire. `data` must be one line (compact
/// JSON is).
pub fn frame(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// A `stdout` or `stderr` event of `text`.
pub fn output_frame(kind: OutputKind, text: &str) -> Bytes {
    let name = match kind {
        OutputKind::Stdout => "stdout",
        OutputKind::Stderr => "stderr",
    };
    frame(name, &serde_json::json!({ "data": text }).to_string())
}

/// `text` as `output_frame`s of at most [`PIECE_BYTES`] each, cut between
/// characters.
pub fn output_frames(kind: OutputKind, text: &str) -> impl Iterator<Item = Bytes> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let mut end = (start + PIECE_BYTES).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let piece = output_frame(kind, &text[start..end]);
        start = end;
        Some(piece)
    })
}

/// One execution's output so far and its subscribers.
#[derive(Default)]
pub struct Live {
    output: Mutex<Output>,
    /// The `done` frame, made by the first subscriber to need it and
    /// shared with the rest (`None`: the final record could not be read).
    done: OnceCell<Option<Bytes>>,
    /// An interactive execution's stdin: each end is taken once, the
    /// sending one by the first socket that asks, the other by its run.
    stdin: Mutex<StdinEnds>,
}

#[derive(Default)]
struct StdinEnds {
    made: bool,
    sender: Option<mpsc::Sender<Bytes>>,
    receiver: Option<mpsc::Receiver<Bytes>>,
}

impl StdinEnds {
    fn make(&mut self) -> &mut Self {
        if !self.made {
            let (sender, receiver) = mpsc::channel(STDIN_BUFFER);
            (self.made, self.sender, self.receiver) = (true, Some(sender), Some(receiver));
        }
        self
    }
}

#[derive(Default)]
struct Output {
    stdout: String,
    stderr: String,
    /// The backlog as frames, as last handed out: shared by every
    /// subscriber until the next write.
    frames: Option<Vec<Bytes>>,
    /// Made by the first subscriber: most executions have none, and a
    /// channel of `STREAM_BUFFER` slots is an allocation. `None` on it is
    /// the end of the output.
    sender: Option<broadcast::Sender<Option<Bytes>>>,
    /// Where the output goes beyond this node, once another node watches.
    relayed: Option<Relayed>,
    /// Per stream (stdout, stderr): output relayed from another node was
    /// missed (it did not continue what is here), so the next watch asks
    /// for the rest again.
    behind: [bool; 2],
}

/// An execution's output as relayed to the nodes that watch it.
#[derive(Default)]
struct Relayed {
    /// Bytes of each stream every watching node was sent.
    stdout: usize,
    stderr: usize,
    /// Nodes sent the output so far.
    nodes: Vec<String>,
    /// Nodes to send what they lack at the next relay, from the bytes of
    /// stdout and stderr they hold.
    joining: Vec<(String, [usize; 2])>,
}

impl Output {
    fn backlog(&mut self) -> Vec<Bytes> {
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        self.frames
            .get_or_insert_with(|| {
                output_frames(OutputKind::Stdout, stdout)
                    .chain(output_frames(OutputKind::Stderr, stderr))
                    .collect()
            })
            .clone()
    }
}

impl Live {
    /// Adds what the guest wrote: to the backlog, and (formatted once) to
    /// every subscriber.
    pub fn publish(&self, kind: OutputKind, text: &str) {
        Self::publish_locked(&mut self.lock(), kind, text);
    }

    /// Adds output another node relayed, `text` from byte `at` of its
    /// stream: what continues what is here (a part already here is left
    /// out); `false`, nothing added, if some is missing before it.
    fn publish_at(&self, kind: OutputKind, at: u64, text: &str) -> bool {
        let mut output = self.lock();
        let here = match kind {
            OutputKind::Stdout => output.stdout.len(),
            OutputKind::Stderr => output.stderr.len(),
        } as u64;
        let stream = match kind {
            OutputKind::Stdout => 0,
            OutputKind::Stderr => 1,
        };
        let Some(known) = here.checked_sub(at) else {
            output.behind[stream] = true;
            return false;
        };
        let known = usize::try_from(known).unwrap_or(usize::MAX);
        if known < text.len() {
            if !text.is_char_boundary(known) {
                output.behind[stream] = true;
                return false;
            }
            Self::publish_locked(&mut output, kind, &text[known..]);
            output.behind[stream] = false;
        }
        true
    }

    /// The bytes of stdout and stderr held here, when the node that runs
    /// it is to send more: nothing came yet, or some went missing.
    fn lacking(&self) -> Option<[u64; 2]> {
        let output = self.lock();
        let held = [output.stdout.len() as u64, output.stderr.len() as u64];
        (output.behind.contains(&true) || held == [0, 0]).then_some(held)
    }

    fn publish_locked(output: &mut Output, kind: OutputKind, text: &str) {
        if let Some(sender) = &output.sender {
            // A subscriber that went away is not an error.
            let _ = sender.send(Some(output_frame(kind, text)));
        }
        output.frames = None;
        match kind {
            OutputKind::Stdout => output.stdout.push_str(text),
            OutputKind::Stderr => output.stderr.push_str(text),
        }
    }

    /// The `done` frame: `make`'s, by whichever subscriber asks first.
    pub async fn done<F>(&self, make: impl FnOnce() -> F) -> Option<Bytes>
    where
        F: Future<Output = Option<Bytes>>,
    {
        self.done.get_or_init(make).await.clone()
    }

    /// Where an interactive execution's stdin is sent: the first caller
    /// gets it, later ones `None`. The run reads end of file once it is
    /// dropped.
    pub fn stdin_sender(&self) -> Option<mpsc::Sender<Bytes>> {
        self.stdin_ends().make().sender.take()
    }

    /// What the run of an interactive execution reads after its input (its
    /// one run takes it).
    pub fn stdin_receiver(&self) -> Option<mpsc::Receiver<Bytes>> {
        self.stdin_ends().make().receiver.take()
    }

    /// What to send the watching nodes since the last relay: the output so
    /// far to each node that joined, then what is new to all.
    fn relay_into(&self, id: &str, signals: &mut Vec<Signal>) {
        let mut output = self.lock();
        let Output {
            stdout,
            stderr,
            relayed,
            ..
        } = &mut *output;
        let Some(relayed) = relayed else { return };
        let mut send = |to: Option<&String>, stream, at: usize, text: &str| {
            if !text.is_empty() {
                signals.push(Signal::Output {
                    id: id.to_owned(),
                    to: to.cloned(),
                    stream,
                    at: at as u64,
                    text: text.to_owned(),
                });
            }
        };
        // From where a node's copy ends (from the start should that not be
        // a place in this text) to what every watching node was sent.
        fn lacking(text: &str, from: usize, sent: usize) -> (usize, &str) {
            let from = if text.is_char_boundary(from) { from } else { 0 };
            (from, text.get(from..sent).unwrap_or_default())
        }
        for (node, [from_out, from_err]) in std::mem::take(&mut relayed.joining) {
            let (at, text) = lacking(stdout, from_out, relayed.stdout);
            send(Some(&node), OutputKind::Stdout, at, text);
            let (at, text) = lacking(stderr, from_err, relayed.stderr);
            send(Some(&node), OutputKind::Stderr, at, text);
            if !relayed.nodes.contains(&node) {
                relayed.nodes.push(node);
            }
        }
        send(
            None,
            OutputKind::Stdout,
            relayed.stdout,
            &stdout[relayed.stdout..],
        );
        send(
            None,
            OutputKind::Stderr,
            relayed.stderr,
            &stderr[relayed.stderr..],
        );
        (relayed.stdout, relayed.stderr) = (stdout.len(), stderr.len());
    }

    fn stdin_ends(&self) -> std::sync::MutexGuard<'_, StdinEnds> {
        self.stdin.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A subscriber's start: the output so far, then the rest as it comes
/// (`None` once the execution is final and its record flushed).
pub struct Subscription {
    pub backlog: Vec<Bytes>,
    pub rest: broadcast::Receiver<Option<Bytes>>,
    pub live: Arc<Live>,
}

#[derive(Default)]
pub struct LiveOutputs {
    streams: Mutex<Streams>,
}

#[derive(Default)]
struct Streams {
    live: HashMap<String, Arc<Live>>,
    /// Those of `live` that other nodes watch (`store.shared`).
    watched: HashMap<String, Arc<Live>>,
    /// Watched ones finished since the last relay, whose rest and end are
    /// still to send.
    finished: Vec<(String, Arc<Live>)>,
}

impl LiveOutputs {
    fn entry(&self, id: &str) -> Arc<Live> {
        self.lock().live.entry(id.to_string()).or_default().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Node `node` watches execution `id`, which runs here, holding the
    /// bytes `have` of its stdout and stderr (`None`: it waits only for
    /// the end): the next [`relay`](Self::relay) sends it what it lacks,
    /// and each one after what is new, then the end. A node already
    /// watching is sent only what it says it lacks.
    pub fn watch(&self, id: &str, node: &str, have: Option<[u64; 2]>) {
        let mut streams = self.lock();
        let live = streams.live.entry(id.to_string()).or_default().clone();
        {
            let mut output = live.lock();
            let relayed = output.relayed.get_or_insert_default();
            let sent = [relayed.stdout, relayed.stderr];
            let from = have.map_or(sent, |have| have.map(|n| usize::try_from(n).unwrap_or(0)));
            if relayed.joining.iter().any(|(joining, _)| joining == node) {
                return;
            }
            if relayed.nodes.iter().any(|known| known == node) {
                // Watching already: more only if it lacks some.
                if from[0] >= sent[0] && from[1] >= sent[1] {
                    return;
                }
            } else if relayed.nodes.len() + relayed.joining.len() >= MAX_WATCHING_NODES {
                return;
            }
            relayed.joining.push((node.to_owned(), from));
        }
        streams.watched.insert(id.to_string(), live);
    }

    /// What to tell the node running execution `id` this one holds of its
    /// output, when it is to send more (see `Live::lacking`).
    pub fn lacking(&self, id: &str) -> Option<[u64; 2]> {
        let live = self.lock().live.get(id).cloned();
        live.and_then(|live| live.lacking())
    }

    /// What the watching nodes are to be sent since the last call, in
    /// order: output, and the end of each watched execution finished.
    pub fn relay(&self) -> Vec<Signal> {
        let (watched, finished): (Vec<_>, Vec<_>) = {
            let mut streams = self.lock();
            let watched = streams
                .watched
                .iter()
                .map(|(id, live)| (id.clone(), live.clone()))
                .collect();
            (watched, std::mem::take(&mut streams.finished))
        };
        let mut signals = Vec::new();
        for (id, live) in &watched {
            live.relay_into(id, &mut signals);
        }
        for (id, live) in finished {
            live.relay_into(&id, &mut signals);
            signals.push(Signal::Ended { id });
        }
        signals
    }

    /// Output another node relayed of an execution it runs, `text` from
    /// byte `at` of `stream`, for the streams here (none: nothing to do);
    /// what does not continue what is here waits for the next watch.
    pub fn relayed_in(&self, id: &str, stream: OutputKind, at: u64, text: &str) {
        let live = self.lock().live.get(id).cloned();
        if let Some(live) = live {
            live.publish_at(stream, at, text);
        }
    }

    /// Where a worker publishes an execution's output.
    pub fn publisher(&self, id: &str) -> Arc<Live> {
        self.entry(id)
    }

    /// The output so far and the rest as it comes. The caller must check
    /// afterwards that the execution did not finish meanwhile (and then
    /// [`finish`](Self::finish) it).
    ///
    /// # Errors
    ///
    /// [`TooManySubscribers`] when the execution has its most streams.
    pub fn subscribe(&self, id: &str) -> Result<Subscription, TooManySubscribers> {
        let live = self.entry(id);
        let mut output = live.lock();
        let sender = output
            .sender
            .get_or_insert_with(|| broadcast::channel(STREAM_BUFFER).0);
        if sender.receiver_count() >= MAX_SUBSCRIBERS {
            return Err(TooManySubscribers);
        }
        let rest = sender.subscribe();
        let backlog = output.backlog();
        drop(output);
        Ok(Subscription {
            backlog,
            rest,
            live,
        })
    }

    /// The executions with a live output entry (published or subscribed).
    pub fn ids(&self) -> Vec<String> {
        self.lock().live.keys().cloned().collect()
    }

    /// Ends an execution's live output (its final record is flushed):
    /// subscribers get the end, and the next subscriber reads the record;
    /// watching nodes get the rest and the end at the next relay.
    pub fn finish(&self, id: &str) {
        let live = {
            let mut streams = self.lock();
            if let Some(watched) = streams.watched.remove(id) {
                streams.finished.push((id.to_string(), watched));
            }
            streams.live.remove(id)
        };
        if let Some(sender) = live.as_ref().and_then(|live| live.lock().sender.clone()) {
            let _ = sender.send(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(frames: &[Bytes]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn late_subscribers_get_the_backlog_then_the_rest_then_the_end() {
        let outputs = LiveOutputs::default();
        let publisher = outputs.publisher("e");
        publisher.publish(OutputKind::Stdout, "a");
        let mut sub = outputs.subscribe("e").unwrap();
        publisher.publish(OutputKind::Stdout, "b");
        outputs.finish("e");
        assert_eq!(
            text_of(&sub.backlog),
            ["event: stdout\ndata: {\"data\":\"a\"}\n\n"]
        );
        let next = sub.rest.recv().await.unwrap().unwrap();
        assert_eq!(&next[..], b"event: stdout\ndata: {\"data\":\"b\"}\n\n");
        assert_eq!(sub.rest.recv().await.unwrap(), None, "then the end");
    }

    #[test]
    fn the_backlog_is_each_stream_so_far_however_the_writes_interleave() {
        let outputs = LiveOutputs::default();
        let publisher = outputs.publisher("e");
        for _ in 0..100_000 {
            publisher.publish(OutputKind::Stdout, "x");
            publisher.publish(OutputKind::Stderr, "y");
        }
        let sub = outputs.subscribe("e").unwrap();
        let frames = text_of(&sub.backlog);
        // 100 000 bytes of each stream, in pieces of at most 64 KiB.
        assert_eq!(frames.len(), 4, "{:?}", frames.iter().map(String::len));
        assert!(
            frames[0].starts_with("event: stdout\n") && frames[1].starts_with("event: stdout\n")
        );
        assert!(
            frames[2].starts_with("event: stderr\n") && frames[3].starts_with("event: stderr\n")
        );
        let xs: usize = frames.iter().map(|f| f.matches('x').count()).sum();
        assert_eq!(xs, 100_000);
    }

    #[test]
    fn pieces_cover_the_text_without_cutting_a_character() {
        let text = "aé€😀".repeat(20_000);
        let joined: String = output_frames(OutputKind::Stdout, &text)
            .map(|f| {
                let line = std::str::from_utf8(&f)
                    .unwrap()
                    .lines()
                    .nth(1)
                    .unwrap()
                    .to_owned();
                let data: serde_json::Value =
                    serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap();
                data["data"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(joined, text);
        assert!(text.len() > 2 * PIECE_BYTES);
        assert_eq!(output_frames(OutputKind::Stdout, "").count(), 0);
    }

    #[test]
    fn subscribers_share_one_backlog_until_the_next_write() {
        let outputs = LiveOutputs::default();
        let publisher = outputs.publisher("e");
        publisher.publish(OutputKind::Stdout, "a");
        let first = outputs.subscribe("e").unwrap();
        let second = outputs.subscribe("e").unwrap();
        assert_eq!(first.backlog[0].as_ptr(), second.backlog[0].as_ptr());
        publisher.publish(OutputKind::Stdout, "b");
        let third = outputs.subscribe("e").unwrap();
        assert!(text_of(&third.backlog)[0].contains("\"ab\""));
    }

    #[tokio::test]
    async fn stdin_has_one_sender_and_one_receiver_and_ends_with_the_sender() {
        let outputs = LiveOutputs::default();
        let live = outputs.publisher("e");
        let sender = live.stdin_sender().expect("the first asks");
        assert!(live.stdin_sender().is_none(), "one sender at a time");
        let mut receiver = live.stdin_receiver().expect("the run's");
        assert!(live.stdin_receiver().is_none());
        sender.send(Bytes::from_static(b"line\n")).await.unwrap();
        drop(sender);
        assert_eq!(receiver.recv().await.unwrap(), &b"line\n"[..]);
        assert_eq!(receiver.recv().await, None, "end of file");
        // Unread chunks are bounded: past them a sender waits.
        let sender = outputs.publisher("f").stdin_sender().unwrap();
        for _ in 0..STDIN_BUFFER {
            sender.try_send(Bytes::new()).unwrap();
        }
        assert!(sender.try_send(Bytes::new()).is_err());
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

    #[test]
    fn a_run_is_relayed_to_at_most_so_many_nodes_each_once() {
        let outputs = LiveOutputs::default();
        outputs.publisher("e").publish(OutputKind::Stdout, "x");
        outputs.watch("e", "node-0", Some([0, 0]));
        assert_eq!(outputs.relay().len(), 1, "the output so far, to all");
        for n in 1..=MAX_WATCHING_NODES {
            outputs.watch("e", &format!("node-{n}"), Some([0, 0]));
        }
        // Node 0 holds everything: a watch again adds nothing.
        outputs.watch("e", "node-0", Some([1, 0]));
        let to: Vec<String> = outputs
            .relay()
            .into_iter()
            .filter_map(|s| match s {
                Signal::Output { to, .. } => to,
                _ => None,
            })
            .collect();
        assert_eq!(to.len(), MAX_WATCHING_NODES - 1, "each once, to the bound");
        assert!(!to.contains(&format!("node-{MAX_WATCHING_NODES}")));
        assert!(!to.contains(&"node-0".to_owned()));
    }

    #[tokio::test]
    async fn the_done_frame_is_made_once() {
        let live = Live::default();
        let made = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let done = live
                .done(|| async {
                    made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Some(frame("done", "{}"))
                })
                .await;
            assert!(done.is_some());
        }
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
