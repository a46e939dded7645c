//! What a run reads on stdin: bytes fixed before it starts, or those
//! followed by what the host sends while it runs (an interactive execution's
//! socket), ending when every sender is gone.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::AsyncStdinStream;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;

/// A run's stdin, as [`Invocation`](crate::Invocation) describes it.
pub(crate) enum Stdin {
    Fixed(Vec<u8>),
    /// The bytes, then each chunk received until the channel closes.
    Live(Vec<u8>, mpsc::Receiver<Bytes>),
}

impl Stdin {
    pub(crate) fn new(first: Vec<u8>, live: Option<mpsc::Receiver<Bytes>>) -> Self {
        match live {
            Some(chunks) => Self::Live(first, chunks),
            None => Self::Fixed(first),
        }
    }

    /// Gives the guest this stdin. A live one reads as a pipe would: a read
    /// waits for the next chunk (the run's deadline and cancellation still
    /// hold, the guest being suspended in the host meanwhile).
    pub(crate) fn give(self, builder: &mut WasiCtxBuilder) {
        match self {
            Self::Fixed(bytes) => builder.stdin(MemoryInputPipe::new(bytes)),
            Self::Live(first, chunks) => builder.stdin(AsyncStdinStream::new(Feed {
                pending: Bytes::from(first),
                chunks,
            })),
        };
    }
}

/// `pending`, then the channel's chunks in order; end of file once the
/// channel is closed and drained.
struct Feed {
    pending: Bytes,
    chunks: mpsc::Receiver<Bytes>,
}

impl AsyncRead for Feed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match self.chunks.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => self.pending = chunk,
                // Nothing added to `buf`: end of file.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = buf.remaining().min(self.pending.len());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[tokio::test]
    async fn a_feed_reads_its_first_bytes_then_each_chunk_then_ends_when_the_senders_are_gone() {
        let (sender, chunks) = mpsc::channel(2);
        let mut feed = Feed {
            pending: Bytes::from_static(b"ab"),
            chunks,
        };
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            feed.read_to_end(&mut all).await.map(|_| all)
        });
        sender.send(Bytes::from_static(b"cd")).await.unwrap();
        sender.send(Bytes::new()).await.unwrap();
        sender.send(Bytes::from_static(b"e")).await.unwrap();
        drop(sender);
        assert_eq!(reader.await.unwrap().unwrap(), b"abcde");
    }
}
