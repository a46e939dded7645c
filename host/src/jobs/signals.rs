//! What crosses nodes as it happens (`store::signals`): a cancel reaches
//! the node that runs the execution, and the output and end of a run reach
//! the nodes that stream it or wait for it, in milliseconds rather than at
//! the next read of the records (`leases::follow`, each second, which
//! stays for the signals a node misses). Runs only on a node sharing its
//! store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::{Jobs, Settled};
use crate::store::{Signal, Store};

/// How often output written here is relayed to the nodes that watch it:
/// writes in between go in one signal.
pub const RELAY_EVERY: Duration = Duration::from_millis(50);

/// Acts on the other nodes' signals until the store stops sending them.
pub async fn listen(store: Arc<dyn Store>, jobs: Arc<Jobs>) {
    let Some(mut signals) = store.signals() else {
        return;
    };
    loop {
        match signals.recv().await {
            Ok(signal) => receive(store.node(), &jobs, signal),
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "signals from other nodes were skipped (too many)");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// What one signal does here, as node `me`.
fn receive(me: Option<&str>, jobs: &Jobs, signal: Signal) {
    match signal {
        Signal::Cancel { id } => jobs.cancel_here(&id),
        Signal::Watch { id, node, have } => {
            if jobs.runs_here(&id) {
                jobs.output.watch(&id, &node, have);
            }
        }
        Signal::Output {
            id,
            to,
            stream,
            at,
            text,
        } => {
            if to.is_none_or(|to| Some(to.as_str()) == me) && !jobs.is_here(&id) {
                jobs.output.relayed_in(&id, stream, at, &text);
            }
        }
        // Its record is stored: what waits here for it or streams it ends.
        Signal::Ended { id } => {
            if !jobs.is_here(&id) {
                jobs.settle(&id, Settled::Stored);
            }
        }
    }
}

/// Sends the nodes that watch runs here their output and ends, each
/// [`RELAY_EVERY`], for as long as the process runs.
pub async fn relay(store: Arc<dyn Store>, jobs: Arc<Jobs>) {
    loop {
        tokio::time::sleep(RELAY_EVERY).await;
        for signal in jobs.output.relay() {
            store.signal(signal);
        }
    }
}

/// Asks the node running execution `id` (if another does) to send this one
/// its output and its end: for a request here that streams it or waits for
/// it. Asked again each second while the request lasts (`leases::follow`),
/// which also reaches a node that starts it later and asks again for
/// output that went missing.
pub fn watch(store: &dyn Store, jobs: &Jobs, id: &str) {
    if let Some(me) = store.node()
        && !jobs.is_here(id)
    {
        store.signal(Signal::Watch {
            id: id.to_owned(),
            node: me.to_owned(),
            have: jobs.output.lacking(id),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::tests::jobs;
    use kiln_runtime::OutputKind;

    /// A watch of execution "e" by `node`, holding `have`.
    fn watch(node: &str, have: Option<[u64; 2]>) -> Signal {
        Signal::Watch {
            id: "e".into(),
            node: node.into(),
            have,
        }
    }

    fn frames(stream: &mut crate::jobs::live::Subscription) -> String {
        let mut got = String::new();
        while let Ok(Some(frame)) = stream.rest.try_recv() {
            got.push_str(std::str::from_utf8(&frame).unwrap());
        }
        got
    }

    /// Node B runs an execution that node A streams: A's stream gets B's
    /// output so far, then the rest, then the end, through signals as the
    /// store would carry them; what goes missing on the way is sent again.
    #[tokio::test]
    async fn a_stream_on_one_node_follows_a_run_on_another() {
        let (a, b) = (jobs(10), jobs(10));
        let cancel = kiln_runtime::CancelHandle::new();
        let running = b.track("e", cancel.clone());
        let publisher = b.output.publisher("e");
        publisher.publish(OutputKind::Stdout, "before ");
        let mut stream = a.output.subscribe("e").unwrap();
        assert!(stream.backlog.is_empty());
        let carry = |signals: Vec<Signal>, to: &Jobs, node: &str| {
            for signal in signals {
                receive(Some(node), to, signal);
            }
        };
        assert_eq!(a.output.lacking("e"), Some([0, 0]), "nothing yet");
        receive(Some("b"), &b, watch("a", a.output.lacking("e")));
        receive(Some("b"), &b, watch("a", a.output.lacking("e")));
        publisher.publish(OutputKind::Stdout, "after");
        publisher.publish(OutputKind::Stderr, "oops");
        carry(b.output.relay(), &a, "a");
        assert_eq!(
            frames(&mut stream),
            "event: stdout\ndata: {\"data\":\"before after\"}\n\n\
             event: stderr\ndata: {\"data\":\"oops\"}\n\n",
            "the output so far once, with what is new"
        );
        assert_eq!(a.output.lacking("e"), None, "nothing missing");
        receive(Some("b"), &b, watch("a", a.output.lacking("e")));
        assert!(b.output.relay().is_empty(), "nothing twice");

        // A node that joins later gets the output so far, for it alone.
        receive(Some("b"), &b, watch("c", Some([0, 0])));
        let to_c = b.output.relay();
        assert!(
            to_c.iter()
                .all(|s| matches!(s, Signal::Output { to: Some(to), .. } if to == "c"))
        );
        assert_eq!(to_c.len(), 2);
        carry(to_c, &a, "a");
        assert!(stream.rest.try_recv().is_err(), "not A's");

        // Output lost on the way: what comes after it waits, and the next
        // watch gets the rest, once.
        publisher.publish(OutputKind::Stdout, " lost");
        drop(b.output.relay());
        publisher.publish(OutputKind::Stdout, " found");
        publisher.publish(OutputKind::Stderr, "?");
        carry(b.output.relay(), &a, "a");
        assert_eq!(
            frames(&mut stream),
            "event: stderr\ndata: {\"data\":\"?\"}\n\n",
            "stdout not after its gap; stderr, whole, goes on"
        );
        let lacking = a.output.lacking("e");
        assert_eq!(lacking, Some([12, 5]), "still behind on stdout");
        receive(Some("b"), &b, watch("a", lacking));
        carry(b.output.relay(), &a, "a");
        assert_eq!(
            frames(&mut stream),
            "event: stdout\ndata: {\"data\":\" lost found\"}\n\n"
        );

        // The run ends on B: the rest, then the end, which ends A's stream.
        publisher.publish(OutputKind::Stdout, "!");
        drop(running);
        b.settle("e", Settled::Stored);
        let last = b.output.relay();
        assert_eq!(last.last(), Some(&Signal::Ended { id: "e".into() }));
        carry(last, &a, "a");
        let frame = stream.rest.try_recv().unwrap().unwrap();
        assert!(std::str::from_utf8(&frame).unwrap().contains("\"!\""));
        assert_eq!(stream.rest.try_recv().unwrap(), None, "the end");
        assert!(b.output.relay().is_empty(), "nothing more");

        // A cancel reaches the run it names, where it runs.
        let other = kiln_runtime::CancelHandle::new();
        let _tracked = b.track("f", other.clone());
        receive(Some("b"), &b, Signal::Cancel { id: "f".into() });
        assert!(other.is_cancelled());
        assert!(!cancel.is_cancelled());
    }
}
