//! The control stream's mechanics: reading request frames with deadlines, writing server
//! messages, and closing the connection so that the last message arrives.
//!
//! Reading checks the length prefix against [`proto::frame::MAX_FRAME`] before allocating,
//! and once a frame has started it must be complete within the frame timeout
//! ([`FRAME_TIMEOUT`] unless configured): a client that sends half a frame and stalls is
//! cut off instead of holding its task forever. A write must complete within the write
//! timeout ([`WRITE_TIMEOUT`]): a client that stops reading is not buffered for.
//! Waiting for the *first* byte of a frame has no deadline after `Hello` (an idle,
//! logged-in peer is the normal case) and is cancel-safe, so the connection task can wait
//! for a request, the shutdown signal and presence events at once.

use std::time::Duration;

use proto::frame::{self, FrameError, HEADER_LEN};
use proto::message::ServerMsg;
use quinn::{ReadExactError, RecvStream, SendStream, VarInt};
use tokio::time::timeout;
use zeroize::Zeroizing;

pub use crate::config::{FRAME_TIMEOUT, HELLO_TIMEOUT, WRITE_TIMEOUT};
/// How long we wait, before closing, for the client to acknowledge our last message:
/// closing a QUIC connection abandons data not yet delivered.
pub const LINGER: Duration = Duration::from_secs(2);

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadFailure {
    /// The client was too slow (a deadline passed).
    TimedOut,
    /// The bytes are not a valid frame.
    Frame(FrameError),
    /// The stream or connection is gone.
    Lost(String),
}

/// Why a message could not be written.
#[derive(Debug)]
pub enum WriteFailure {
    /// The client stopped reading.
    TimedOut,
    /// The stream or connection is gone (or the message could not be encoded).
    Lost(String),
}

/// One connection's control stream.
#[derive(Debug)]
pub struct ControlStream {
    send: SendStream,
    recv: RecvStream,
    frame_timeout: Duration,
    write_timeout: Duration,
}

impl ControlStream {
    /// Wraps the bidirectional stream the client opened, with the default timeouts.
    pub fn new(send: SendStream, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            frame_timeout: FRAME_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }

    /// Sets how long the rest of a started frame may take, and one write.
    pub fn with_timeouts(mut self, frame_timeout: Duration, write_timeout: Duration) -> Self {
        self.frame_timeout = frame_timeout;
        self.write_timeout = write_timeout;
        self
    }

    /// Reads one frame's payload. `Ok(None)`: the client finished the stream cleanly
    /// between frames. With `start_within`, the frame must also start within that time.
    /// The payload may hold a password, so it is zeroed when dropped.
    pub async fn read_payload(
        &mut self,
        start_within: Option<Duration>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ReadFailure> {
        let mut header = [0u8; HEADER_LEN];
        let first = async {
            loop {
                match self.recv.read(&mut header[..1]).await {
                    Ok(None) => return Ok(false),
                    Ok(Some(0)) => continue,
                    Ok(Some(_)) => return Ok(true),
                    Err(e) => return Err(ReadFailure::Lost(e.to_string())),
                }
            }
        };
        let started = match start_within {
            Some(limit) => timeout(limit, first)
                .await
                .map_err(|_| ReadFailure::TimedOut)??,
            None => first.await?,
        };
        if !started {
            return Ok(None);
        }
        let rest = async {
            self.recv
                .read_exact(&mut header[1..])
                .await
                .map_err(exact)?;
            let len = frame::payload_len(header).map_err(ReadFailure::Frame)?;
            let mut payload = Zeroizing::new(vec![0u8; len]);
            self.recv.read_exact(&mut payload).await.map_err(exact)?;
            Ok(payload)
        };
        let payload = timeout(self.frame_timeout, rest)
            .await
            .map_err(|_| ReadFailure::TimedOut)??;
        Ok(Some(payload))
    }

    /// Writes one message.
    pub async fn write(&mut self, msg: &ServerMsg) -> Result<(), WriteFailure> {
        match timeout(self.write_timeout, frame::write_frame(&mut self.send, msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WriteFailure::Lost(e.to_string())),
            Err(_) => Err(WriteFailure::TimedOut),
        }
    }

    /// Sends `last` (if any), finishes the stream, waits briefly for the client to
    /// acknowledge it, and closes the connection with `code` and `reason`.
    pub async fn close(
        mut self,
        conn: &quinn::Connection,
        last: Option<ServerMsg>,
        code: u32,
        reason: &str,
    ) {
        if let Some(msg) = last {
            let _ = self.write(&msg).await;
        }
        let _ = self.send.finish();
        let _ = timeout(LINGER, self.send.stopped()).await;
        conn.close(VarInt::from_u32(code), reason.as_bytes());
    }
}

fn exact(e: ReadExactError) -> ReadFailure {
    match e {
        ReadExactError::FinishedEarly(_) => ReadFailure::Frame(FrameError::Truncated),
        ReadExactError::ReadError(e) => ReadFailure::Lost(e.to_string()),
    }
}
