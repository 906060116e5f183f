//! Request ids: the UUID naming one request in the log.

/// A fresh random (version 4) UUID naming one request in the log. Drawn from the thread's
/// cryptographic generator, reseeded from the OS, rather than one `getrandom` system call per
/// request.
pub fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let a = uuid::Uuid::parse_str(&super::new_request_id()).expect("a UUID");
        let b = uuid::Uuid::parse_str(&super::new_request_id()).expect("a UUID");
        assert_eq!(a.get_version(), Some(uuid::Version::Random));
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a, b);
    }
}
