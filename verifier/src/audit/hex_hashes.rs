//! serde helper: `Vec<Hash>` as an array of lowercase hex strings, the form proofs take in
//! evidence bundles (as `sha256sum` prints digests). Exactly one spelling is accepted.

use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

use crate::hash::Hash;

pub(crate) fn serialize<S: Serializer>(hashes: &[Hash], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(hashes.iter().map(hex::encode))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .enumerate()
        .map(|(i, text)| {
            parse(text).map_err(|reason| D::Error::custom(format!("hash {i}: {reason}")))
        })
        .collect()
}

/// Parses 64 lowercase hex digits.
pub(crate) fn parse(text: &str) -> Result<Hash, String> {
    let lowercase_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    let mut hash = [0; 32];
    if text.len() != 64 || !text.bytes().all(lowercase_hex) {
        let shown: String = text.chars().take(70).collect();
        return Err(format!("{shown:?} is not 64 lowercase hex digits"));
    }
    hex::decode_to_slice(text, &mut hash).map_err(|e| e.to_string())?;
    Ok(hash)
}
