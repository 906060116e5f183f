//! serde helpers: bytes and hashes as standard base64 strings in JSON (the encoding C2SP
//! checkpoints use for root hashes), with strict decoding.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

use crate::hash::Hash;

/// `Vec<u8>` as one base64 string.
pub(crate) mod bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        BASE64
            .decode(text)
            .map_err(|e| D::Error::custom(format!("not standard base64: {e}")))
    }
}

/// `Vec<Hash>` as an array of base64 strings of 32 bytes each.
pub(crate) mod hashes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(hashes.iter().map(|h| BASE64.encode(h)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|text| {
                BASE64
                    .decode(&text)
                    .ok()
                    .and_then(|bytes| Hash::try_from(bytes).ok())
                    .ok_or_else(|| {
                        D::Error::custom("a hash must be the standard base64 of 32 bytes")
                    })
            })
            .collect()
    }
}
