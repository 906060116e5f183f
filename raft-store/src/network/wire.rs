//! The envelope of every message between nodes, Raft's and the node calls' alike:
//! `RaftMessage.data = [WIRE_FORMAT_V1] ++ postcard(T)`, and the size limit on it both ways.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// First byte of every `RaftMessage.data`.
pub const WIRE_FORMAT_V1: u8 = 1;

/// Largest Raft message sent or accepted, both ways. A full AppendEntries carries up to
/// `max_payload_entries` batches of up to `max_batch` records each; see `notary`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Why a Raft message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Serialising failed: a bug here, not the peer's fault. No retry helps.
    #[error("encoding raft message: {0}")]
    Encode(String),
    /// The peer speaks a newer wire format: upgrade this node. No retry helps.
    #[error("raft message has unknown wire format {0}")]
    UnknownFormat(u8),
    /// The bytes are not a message of the expected type: a mismatched or faulty peer.
    #[error("malformed raft message: {0}")]
    Malformed(String),
}

/// `[WIRE_FORMAT_V1] ++ postcard(value)`.
pub fn encode_message<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![WIRE_FORMAT_V1];
    postcard::to_io(value, &mut out).map_err(|e| WireError::Encode(e.to_string()))?;
    Ok(out)
}

/// Inverse of [`encode_message`]; refuses other formats and trailing bytes.
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (&format, body) = bytes
        .split_first()
        .ok_or_else(|| WireError::Malformed("empty message".into()))?;
    if format != WIRE_FORMAT_V1 {
        return Err(WireError::UnknownFormat(format));
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}
