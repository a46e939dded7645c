//! Signals between nodes (`store/signals.rs`) over PostgreSQL's
//! `LISTEN`/`NOTIFY`, on one channel. Each payload is an envelope naming
//! the node that sent it (a node skips its own) and a sequence number
//! (`NOTIFY` folds identical payloads of one transaction into one). One
//! task sends, one statement per batch, so signals arrive in the order
//! sent; one listens, on a connection of the pool it keeps, and hands what
//! arrives to the node's receivers. Output is cut to fit a payload.

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{broadcast, mpsc, watch};

use crate::store::Signal;

/// The one channel every node listens on.
const CHANNEL: &str = "kiln_signals";

/// The longest payload sent (PostgreSQL refuses 8 000 bytes and more).
const MAX_PAYLOAD: usize = 7_900;

/// Signals waiting to be sent; past them a signal is dropped.
const OUTGOING: usize = 4_096;

/// Signals received and not yet read; a reader that falls behind skips
/// ahead (the records have what it missed).
const INCOMING: usize = 4_096;

/// Payloads per `NOTIFY` statement.
const BATCH: usize = 64;

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    seq: u64,
    signal: Signal,
}

/// A node's two ends; dropping it ends both tasks.
pub(super) struct Signals {
    outgoing: mpsc::Sender<Signal>,
    incoming: broadcast::Sender<Signal>,
    /// Dropped with this: the listener stops.
    _stop: watch::Sender<()>,
}

impl Signals {
    /// Starts sending and listening as node `node`.
    pub(super) fn start(pool: PgPool, node: String) -> Self {
        let (outgoing, to_send) = mpsc::channel(OUTGOING);
        let incoming = broadcast::channel(INCOMING).0;
        let (stop, stopped) = watch::channel(());
        tokio::spawn(send(pool.clone(), node.clone(), to_send));
        tokio::spawn(listen(pool, node, incoming.clone(), stopped));
        Self {
            outgoing,
            incoming,
            _stop: stop,
        }
    }

    pub(super) fn send(&self, signal: Signal) {
        if self.outgoing.try_send(signal).is_err() {
            tracing::debug!("a signal to the other nodes was dropped: too many waiting");
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.incoming.subscribe()
    }
}

/// Sends what is queued, a statement per [`BATCH`] payloads, until every
/// sender is gone. A statement that fails is dropped (logged once per run
/// of failures): the database is away, and the records say the same.
async fn send(pool: PgPool, node: String, mut to_send: mpsc::Receiver<Signal>) {
    let mut seq = 0;
    let mut failing = false;
    while let Some(first) = to_send.recv().await {
        let mut payloads = payloads(&node, &mut seq, first);
        while payloads.len() < BATCH {
            let Ok(next) = to_send.try_recv() else { break };
            payloads.extend(self::payloads(&node, &mut seq, next));
        }
        for batch in payloads.chunks(BATCH) {
            let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(batch)
                .execute(&pool)
                .await;
            match sent {
                Ok(_) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "signals to the other nodes are failing");
                    }
                    failing = true;
                }
            }
        }
    }
}

/// Hands every other node's signal to this node's receivers until
/// `stopped`; connects again a second after losing the connection.
async fn listen(
    pool: PgPool,
    node: String,
    incoming: broadcast::Sender<Signal>,
    mut stopped: watch::Receiver<()>,
) {
    loop {
        let mut listener = match connect(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, "cannot listen for other nodes' signals yet");
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let note = tokio::select! {
                _ = stopped.changed() => return,
                note = listener.try_recv() => note,
            };
            match note {
                Ok(Some(note)) => match serde_json::from_str::<Envelope>(note.payload()) {
                    Ok(envelope) if envelope.from != node => {
                        // Nobody listening is not an error.
                        let _ = incoming.send(envelope.signal);
                    }
                    Ok(_) => {}
                    // A node of another version may send what this one
                    // does not know.
                    Err(e) => tracing::debug!(error = %e, "a signal not understood was skipped"),
                },
                // The connection was lost and is made again: what was sent
                // meanwhile is missed.
                Ok(None) => tracing::debug!("signals may have been missed (connection lost)"),
                Err(e) => {
                    tracing::debug!(error = %e, "listening for other nodes' signals failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// `signal` as payloads of at most [`MAX_PAYLOAD`] bytes: one, or for
/// output as many as its text needs (none for no text).
fn payloads(node: &str, seq: &mut u64, signal: Signal) -> Vec<String> {
    let mut encode = |signal: Signal| {
        *seq += 1;
        let envelope = Envelope {
            from: node.to_owned(),
            seq: *seq,
            signal,
        };
        serde_json::to_string(&envelope).unwrap_or_default()
    };
    let Signal::Output {
        id,
        to,
        stream,
        at,
        text,
    } = signal
    else {
        return vec![encode(signal)];
    };
    let output = |at: u64, text: &str| Signal::Output {
        id: id.clone(),
        to: to.clone(),
        stream,
        at,
        text: text.to_owned(),
    };
    // The envelope around no text, with the longest sequence number.
    let around = serde_json::to_string(&Envelope {
        from: node.to_owned(),
        seq: u64::MAX,
        signal: output(u64::MAX, ""),
    })
    .map_or(MAX_PAYLOAD, |e| e.len());
    let budget = MAX_PAYLOAD.saturating_sub(around).max(6);
    let mut from = at;
    pieces(&text, budget)
        .into_iter()
        .map(|piece| {
            let signal = output(from, piece);
            from += piece.len() as u64;
            encode(signal)
        })
        .collect()
}

/// `text` cut between characters into pieces whose JSON string bodies
/// (escaped as `serde_json` escapes) are at most `budget` bytes each.
fn pieces(text: &str, budget: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (at, c) in text.char_indices() {
        let escaped = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if size + escaped > budget {
            pieces.push(&text[start..at]);
            (start, size) = (at, 0);
        }
        size += escaped;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PgStore, Store};
    use kiln_runtime::OutputKind;

    fn output(text: &str) -> Signal {
        Signal::Output {
            id: "01a248b7-0495-72f3-9fba-b246ea2239e1".into(),
            to: Some("01a248b7-0495-72f3-9fba-b246ea2239e2".into()),
            stream: OutputKind::Stdout,
            at: 7,
            text: text.into(),
        }
    }

    fn text_of(signal: &Signal) -> &str {
        match signal {
            Signal::Output { text, .. } => text,
            other => panic!("not output: {other:?}"),
        }
    }

    #[test]
    fn output_is_cut_into_payloads_that_fit_however_much_it_escapes() {
        let text = "a\"é\\€\u{1}😀\n".repeat(5_000);
        let mut seq = 0;
        let sent = payloads("node", &mut seq, output(&text));
        assert!(sent.len() > 1);
        let mut joined = String::new();
        for payload in &sent {
            assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
            let envelope: Envelope = serde_json::from_str(payload).unwrap();
            let Signal::Output { at, .. } = envelope.signal else {
                panic!("not output");
            };
            assert_eq!(at, 7 + joined.len() as u64, "each piece where it starts");
            joined.push_str(text_of(&envelope.signal));
        }
        assert_eq!(joined, text);
        assert_eq!(seq, sent.len() as u64, "each its own number");
        assert!(payloads("node", &mut seq, output("")).is_empty());
        let cancel = Signal::Cancel { id: "e".into() };
        assert_eq!(payloads("node", &mut seq, cancel).len(), 1);
    }

    #[tokio::test]
    async fn signals_reach_the_other_nodes_in_order_and_not_their_sender() {
        let url = kiln_testpg::shared().fresh_database();
        let (a, b) = (
            PgStore::connect(&url).await.unwrap(),
            PgStore::connect(&url).await.unwrap(),
        );
        assert!(a.signals().is_none(), "not before it is shared");
        a.share();
        b.share();
        let (mut at_a, mut at_b) = (a.signals().unwrap(), b.signals().unwrap());
        // Both listen once a signal of each reaches the other.
        let ping = Signal::Cancel { id: "ping".into() };
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                a.signal(ping.clone());
                b.signal(ping.clone());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if at_b.try_recv().is_ok() && at_a.try_recv().is_ok() {
                    break;
                }
            }
        })
        .await
        .expect("both listen");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        while at_a.try_recv().is_ok() || at_b.try_recv().is_ok() {}

        // 200 KB of output and the end, then the same cancel twice: B gets
        // it all in order, each once; A hears nothing of its own.
        let text = "line of output\n".repeat(14_000);
        a.signal(output(&text));
        a.signal(Signal::Ended { id: "e".into() });
        a.signal(Signal::Cancel { id: "c".into() });
        a.signal(Signal::Cancel { id: "c".into() });
        let mut joined = String::new();
        let next = async |at: &mut broadcast::Receiver<Signal>| {
            tokio::time::timeout(std::time::Duration::from_secs(10), at.recv())
                .await
                .expect("in time")
                .unwrap()
        };
        let ended = loop {
            match next(&mut at_b).await {
                out @ Signal::Output { .. } => joined.push_str(text_of(&out)),
                other => break other,
            }
        };
        assert_eq!(joined, text);
        assert_eq!(ended, Signal::Ended { id: "e".into() });
        for _ in 0..2 {
            assert_eq!(next(&mut at_b).await, Signal::Cancel { id: "c".into() });
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(at_a.try_recv().is_err(), "its own signals");
    }
}
