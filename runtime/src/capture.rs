//! Bounded capture of a guest's stdout and stderr, with live streaming.
//!
//! Output past the cap is dropped (and the run flagged) rather than trapping the
//! guest: a chatty script still finishes, and the host's memory stays bounded.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Which of the guest's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// The guest's standard output.
    Stdout,
    /// The guest's standard error.
    Stderr,
}

/// Receives output as the guest writes it (only the part within the cap). It is
/// called on the thread running the guest, so it must return quickly: send the
/// chunk to a channel, don't do I/O.
pub type OutputSink = Arc<dyn Fn(OutputKind, &[u8]) + Send + Sync>;

/// The largest write the guest is invited to make at once.
const WRITE_BUDGET: usize = 64 << 10;

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// One capped stream; clones share the same buffer.
#[derive(Clone)]
pub(crate) struct CapturePipe {
    kind: OutputKind,
    cap: usize,
    captured: Arc<Mutex<Captured>>,
    sink: Option<OutputSink>,
}

impl CapturePipe {
    pub(crate) fn new(kind: OutputKind, cap: usize, sink: Option<OutputSink>) -> Self {
        Self {
            kind,
            cap,
            captured: Arc::default(),
            sink,
        }
    }

    pub(crate) fn push(&self, bytes: &[u8]) {
        let mut captured = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.cap.saturating_sub(captured.bytes.len());
        let kept = &bytes[..bytes.len().min(room)];
        if kept.len() < bytes.len() {
            captured.truncated = true;
        }
        if kept.is_empty() {
            return;
        }
        captured.bytes.extend_from_slice(kept);
        drop(captured);
        if let Some(sink) = &self.sink {
            sink(self.kind, kept);
        }
    }

    /// Everything kept so far and whether anything was dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, bool) {
        let mut captured = self.captured.lock().unwrap_or_else(PoisonError::into_inner);
        (std::mem::take(&mut captured.bytes), captured.truncated)
    }
}

impl IsTerminal for CapturePipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturePipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturePipe {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturePipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl tokio::io::AsyncWrite for CapturePipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_flags_the_rest() {
        let pipe = CapturePipe::new(OutputKind::Stdout, 5, None);
        pipe.push(b"abc");
        pipe.push(b"defgh");
        pipe.push(b"ij");
        assert_eq!(pipe.take(), (b"abcde".to_vec(), true));
    }

    #[test]
    fn streams_only_what_it_keeps() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let sink: OutputSink = Arc::new(move |kind, bytes| {
            sink_seen.lock().unwrap().push((kind, bytes.to_vec()));
        });
        let pipe = CapturePipe::new(OutputKind::Stderr, 4, Some(sink));
        pipe.push(b"ab");
        pipe.push(b"cdef");
        pipe.push(b"gh");
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![
                (OutputKind::Stderr, b"ab".to_vec()),
                (OutputKind::Stderr, b"cd".to_vec())
            ]
        );
        assert_eq!(pipe.take(), (b"abcd".to_vec(), true));
    }

    #[test]
    fn output_within_the_cap_is_not_flagged() {
        let pipe = CapturePipe::new(OutputKind::Stdout, 4, None);
        pipe.push(b"abcd");
        assert_eq!(pipe.take(), (b"abcd".to_vec(), false));
    }
}
