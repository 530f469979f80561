//! Frames: the unit of everything Natter sends over a QUIC stream.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of bincode-encoded
//! message. The length is checked against [`MAX_FRAME`] before anything is allocated, and
//! bincode decodes with the same limit, so no input can make us allocate without bound
//! (bincode 2 without a limit will try to allocate whatever a hostile length field says).

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload a frame may carry, in bytes (64 KiB).
pub const MAX_FRAME: usize = 64 * 1024;

/// Size of the length prefix in bytes.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be read, decoded or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame")]
    Truncated,
    /// The bytes are not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message decoded but left unused bytes behind.
    #[error("malformed message: {0} trailing bytes")]
    Trailing(usize),
    /// A message we tried to send does not fit in one frame or cannot be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The underlying stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Encodes `msg` as a complete frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER_LEN];
    bincode::serde::encode_into_std_write(msg, &mut out, config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = out.len() - HEADER_LEN;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    out[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes one message from a frame's payload (without the length prefix).
/// Every byte must be used: trailing garbage is an error.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: payload.len() as u64,
            max: MAX_FRAME,
        });
    }
    let (msg, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Trailing(payload.len() - used));
    }
    Ok(msg)
}

/// Reads the length prefix and checks it against the limit.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: MAX_FRAME,
        });
    }
    Ok(len)
}

/// Reads one frame's payload. Returns `Ok(None)` when the stream ends cleanly between frames.
pub async fn read_payload<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = payload_len(header)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
    Ok(Some(payload))
}

/// Reads and decodes one frame. Returns `Ok(None)` when the stream ends cleanly between frames.
pub async fn read_frame<R, T>(r: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    match read_payload(r).await? {
        Some(payload) => decode(&payload).map(Some),
        None => Ok(None),
    }
}

/// Encodes and writes one frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = encode(msg)?;
    w.write_all(&bytes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Reply, Request};

    #[test]
    fn round_trip() {
        let msg = Request::Lookup {
            user: "bianca".parse().unwrap(),
        };
        let bytes = encode(&msg).unwrap();
        let len = payload_len(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - 4);
        let back: Request = decode(&bytes[4..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn huge_length_prefix_is_refused_before_allocating() {
        let err = payload_len(u32::MAX.to_be_bytes()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn hostile_length_inside_payload_does_not_allocate() {
        // A Vec length of ~2^62 encoded as a bincode varint: must fail, not abort.
        let mut payload = vec![0u8]; // Reply::Welcome? any variant with a Vec works
        payload.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
        assert!(decode::<Reply>(&payload).is_err());
        assert!(decode::<Vec<String>>(&payload[1..]).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&Request::Who).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Request>(&bytes[4..]),
            Err(FrameError::Trailing(1))
        ));
    }

    #[tokio::test]
    async fn truncated_and_clean_end() {
        let bytes = encode(&Request::Who).unwrap();
        let mut r: &[u8] = &[];
        assert!(read_frame::<_, Request>(&mut r).await.unwrap().is_none());
        let mut r: &[u8] = &bytes[..bytes.len() - 1];
        let err = read_frame::<_, Request>(&mut r).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
        let mut r: &[u8] = &bytes[..2];
        let err = read_frame::<_, Request>(&mut r).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
    }
}
