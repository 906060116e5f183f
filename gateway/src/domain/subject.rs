//! Keyed hashes of citizen identifiers: how the log names a data subject without exposing them.
//!
//! The key (32 bytes, `subject.key` from `qianlian pki init`, config `licenses.subject_key`) is
//! the same on every node of a cluster and never leaves it, so the same identifier always gives
//! the same hash, and only the cluster can compute it from an identifier.
//!
//! There is one way to hash: [`SubjectKey::hash`] takes the value as written and folds it to one
//! form ([`normalise`]) before the HMAC, so a resident number written `52010219500101001x`,
//! `５２０１０２１９５００１０１００１Ｘ` or `520102 19500101 001X` names the same subject as
//! `52010219500101001X`, whichever path hashes it: a write, a record read from the store or
//! from an HTTP backend, a record passed on by an owner's gateway, a query, an audit lookup, a
//! license. No caller can skip the folding, so a department cannot hide its reads of a person
//! by writing that person's number in another form.
//!
//! Records written before the hash folded its input carry the HMAC of the bytes as they were
//! written. [`SubjectKey::lookup`] lists the hashes to look for when asking about one
//! identifier: its folded form first, then the forms older records may carry for it (the value
//! exactly as asked, the old trimmed upper-case form, the folded form in lower case, as a
//! lower-case check character `x` was written). Older records holding other variants (inner
//! spaces, full-width digits) stay in the log and its proofs, and are found by asking for the
//! value exactly as the department wrote it.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use qianlian_verifier::record::SubjectHash;
use unicode_normalization::UnicodeNormalization;

/// The cluster's subject key.
#[derive(Clone)]
pub struct SubjectKey(Arc<[u8; 32]>);

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl SubjectKey {
    pub fn new(key: [u8; 32]) -> SubjectKey {
        SubjectKey(Arc::new(key))
    }

    /// The subject hash of an identifier as written: HMAC-SHA256 of its [`normalise`]d form.
    /// The only hash new records carry.
    pub fn hash(&self, value: &str) -> SubjectHash {
        self.mac(normalise(value).as_bytes())
    }

    /// Every hash under which the log may name the subject of `value`: [`SubjectKey::hash`]
    /// first, then the forms records written before the hash folded its input may carry for
    /// it, without repeats. At most four.
    pub fn lookup(&self, value: &str) -> Vec<SubjectHash> {
        let folded = normalise(value);
        let mut out = vec![self.mac(folded.as_bytes())];
        for legacy in [
            value.to_owned(),
            value.trim().to_ascii_uppercase(),
            folded.to_ascii_lowercase(),
        ] {
            let h = self.mac(legacy.as_bytes());
            if !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }

    /// HMAC-SHA256 of exactly `bytes`; private so that every hash of a value is folded first.
    fn mac(&self, bytes: &[u8]) -> SubjectHash {
        // HMAC takes a key of any length: a 32-byte key is never refused.
        let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.0.as_slice()) {
            Ok(m) => m,
            Err(e) => unreachable!("{e}"),
        };
        mac.update(bytes);
        SubjectHash(mac.finalize().into_bytes().into())
    }
}

/// The one form in which an identifier is hashed and stored: Unicode compatibility forms folded
/// (NFKC: full-width digits and letters, the ideographic space, Roman numeral Ⅹ), then white
/// space, invisible format characters and dashes removed, and ASCII letters in upper case.
/// An identifier already in its standard form (18 ASCII digits and capitals) is unchanged.
pub fn normalise(value: &str) -> String {
    value
        .nfkc()
        .filter(|c| !meaningless(*c))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Characters that carry nothing in an identifier: white space, the invisible format
/// characters (soft hyphen, zero-width and direction marks, word joiners, byte order mark)
/// and dashes.
fn meaningless(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '-'
                | '\u{2010}'..='\u{2015}'
                | '\u{2212}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANONICAL: &str = "52010219500101001X";

    /// HMAC-SHA256 of exactly `bytes`, computed here without the module's code.
    fn raw_hmac(key: [u8; 32], bytes: &str) -> SubjectHash {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("key");
        mac.update(bytes.as_bytes());
        SubjectHash(mac.finalize().into_bytes().into())
    }

    #[test]
    fn every_written_form_of_one_identifier_gives_one_hash() {
        let key = SubjectKey::new([1; 32]);
        let want = key.hash(CANONICAL);
        // The canonical form hashes as before: records written from it are unchanged.
        assert_eq!(want, raw_hmac([1; 32], CANONICAL));
        for written in [
            "52010219500101001x",
            " 52010219500101001X ",
            "520102 19500101 001x",
            "520102\u{3000}19500101\u{3000}001X",
            "５２０１０２１９５００１０１００１Ｘ",
            "５２０１０２１９５００１０１００１ｘ",
            "52010219500101001\u{2169}",
            "520102-19500101-001X",
            "5201021950\u{200B}0101001X",
            "\u{FEFF}52010219500101001X\n",
        ] {
            assert_eq!(normalise(written), CANONICAL, "{written:?}");
            assert_eq!(key.hash(written), want, "{written:?}");
        }
        assert_ne!(key.hash("52010219500101001"), want);
        assert_ne!(key.hash("520102195001010011"), want);
        assert_ne!(SubjectKey::new([2; 32]).hash(CANONICAL), want);
        // Credit codes are folded the same way.
        assert_eq!(normalise("91520102mA6dkl7q0b"), "91520102MA6DKL7Q0B");
    }

    #[test]
    fn a_lookup_also_finds_the_hashes_older_records_carry() {
        let k = [7; 32];
        let key = SubjectKey::new(k);
        let found = key.lookup(CANONICAL);
        assert_eq!(found[0], key.hash(CANONICAL));
        // Written before folding: the lower-case check character, as sent.
        assert!(found.contains(&raw_hmac(k, "52010219500101001x")));
        assert_eq!(found.len(), 2, "no repeats");
        // Asked exactly as a department wrote it: that form's older hash is found too.
        let spaced = "520102 19500101 001X";
        let found = key.lookup(spaced);
        assert_eq!(found[0], key.hash(CANONICAL));
        assert!(found.contains(&raw_hmac(k, spaced)));
        assert!(found.contains(&raw_hmac(k, "52010219500101001x")));
        let padded = key.lookup(" 52010219500101001x ");
        assert!(padded.contains(&raw_hmac(k, " 52010219500101001x ")));
        assert!(padded.contains(&raw_hmac(k, "52010219500101001X")));
        assert!(padded.len() <= 4);
    }
}
