use ciborium::Value;

use super::*;
use crate::license::fixtures::{business_license, construction_permit};

fn encode(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(value, &mut bytes).expect("a Value encodes");
    bytes
}

/// The claims map with one entry changed (or removed when `value` is `None`), re-encoded.
fn with_entry(claims: &LicenseClaims, key: u64, value: Option<Value>) -> Vec<u8> {
    let Value::Map(mut entries) = claims.to_value() else {
        panic!("claims encode as a map");
    };
    let pos = entries
        .iter()
        .position(|(k, _)| *k == Value::Integer(key.into()));
    match (pos, value) {
        (Some(i), Some(v)) => entries[i].1 = v,
        (Some(i), None) => {
            entries.remove(i);
        }
        (None, Some(v)) => entries.push((Value::Integer(key.into()), v)),
        (None, None) => {}
    }
    encode(&Value::Map(entries))
}

#[test]
fn claims_round_trip_through_cbor() {
    for claims in [business_license(), construction_permit()] {
        let bytes = claims.to_cbor().expect("valid claims encode");
        assert_eq!(LicenseClaims::from_cbor(&bytes), Ok(claims));
    }
}

#[test]
fn encoding_is_deterministic_with_integer_keys_in_order() {
    let claims = construction_permit();
    let bytes = claims.to_cbor().expect("valid claims encode");
    assert_eq!(bytes, claims.to_cbor().expect("encodes again"));
    // Map of 11 entries, then key 1 (version) = 1, key 2 (type) = 3 (construction permit).
    assert_eq!(bytes[..5], [0xab, 0x01, 0x01, 0x02, 0x03]);
}

#[test]
fn field_names_are_ordered_shortest_first_as_rfc_8949_demands() {
    let mut claims = business_license();
    claims.fields = BTreeMap::from([
        ("aa".to_owned(), "2".to_owned()),
        ("b".to_owned(), "1".to_owned()),
    ]);
    let bytes = claims.to_cbor().expect("valid claims encode");
    let b = bytes
        .windows(2)
        .position(|w| w == [0x61, b'b'])
        .expect("key b");
    let aa = bytes
        .windows(3)
        .position(|w| w == [0x62, b'a', b'a'])
        .expect("key aa");
    assert!(b < aa, "\"b\" (shorter) must precede \"aa\"");
    assert_eq!(LicenseClaims::from_cbor(&bytes), Ok(claims.clone()));

    // The same map in BTreeMap order is valid CBOR but not the deterministic encoding.
    let fields = Value::Map(vec![
        (Value::Text("aa".into()), Value::Text("2".into())),
        (Value::Text("b".into()), Value::Text("1".into())),
    ]);
    let unordered = with_entry(&claims, KEY_FIELDS, Some(fields));
    assert_eq!(
        LicenseClaims::from_cbor(&unordered),
        Err(ClaimsError::NotCanonical)
    );
}

#[test]
fn non_shortest_integers_and_trailing_bytes_are_refused() {
    let bytes = business_license().to_cbor().expect("valid claims encode");
    assert_eq!(bytes[1..3], [0x01, 0x01]);
    let long_form = [&bytes[..2], &[0x18, 0x01], &bytes[3..]].concat();
    assert_eq!(
        LicenseClaims::from_cbor(&long_form),
        Err(ClaimsError::NotCanonical)
    );
    let trailing = [bytes.as_slice(), &[0x00]].concat();
    assert!(matches!(
        LicenseClaims::from_cbor(&trailing),
        Err(ClaimsError::Cbor { .. })
    ));
}

#[test]
fn structural_errors_are_named() {
    let claims = business_license();
    let cases: Vec<(Vec<u8>, ClaimsError)> = vec![
        (encode(&Value::Array(vec![])), ClaimsError::NotAMap),
        (
            with_entry(&claims, 12, Some(Value::Integer(0.into()))),
            ClaimsError::UnknownKey { key: "12".into() },
        ),
        (
            with_entry(&claims, KEY_NUMBER, None),
            ClaimsError::MissingClaim {
                key: 3,
                name: "number",
            },
        ),
        (
            with_entry(&claims, KEY_NUMBER, Some(Value::Integer(7.into()))),
            ClaimsError::WrongType {
                name: "number",
                expected: "a text string",
            },
        ),
        (
            with_entry(&claims, KEY_VERSION, Some(Value::Integer(2.into()))),
            ClaimsError::UnsupportedVersion { version: 2 },
        ),
        (
            with_entry(&claims, KEY_TYPE, Some(Value::Integer(9.into()))),
            ClaimsError::UnknownLicenseType { code: 9 },
        ),
        (
            with_entry(&claims, KEY_ISSUED_AT, Some(Value::Integer((-1).into()))),
            ClaimsError::DateOutOfRange {
                field: "issued_at",
                value: -1,
            },
        ),
        (
            with_entry(&claims, KEY_FIELDS, Some(Value::Text("x".into()))),
            ClaimsError::WrongType {
                name: "fields",
                expected: "a map of text to text",
            },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(LicenseClaims::from_cbor(&bytes), Err(expected));
    }

    let Value::Map(mut entries) = claims.to_value() else {
        panic!("claims encode as a map");
    };
    entries.push(entries[0].clone());
    assert_eq!(
        LicenseClaims::from_cbor(&encode(&Value::Map(entries))),
        Err(ClaimsError::DuplicateKey { key: 1 })
    );
    assert!(matches!(
        LicenseClaims::from_cbor(&[0xbf]),
        Err(ClaimsError::Cbor { .. })
    ));
}

#[test]
fn text_and_date_rules_hold_at_encoding_and_decoding() {
    let base = business_license();
    let mut cases: Vec<LicenseClaims> = Vec::new();
    let mut c = base.clone();
    c.number = String::new();
    cases.push(c);
    let mut c = base.clone();
    c.holder_name = " 贵州黔链数据服务有限公司".into();
    cases.push(c);
    let mut c = base.clone();
    c.holder_name = "贵州\n黔链".into();
    cases.push(c);
    let mut c = base.clone();
    c.department = "market regulation".into();
    cases.push(c);
    let mut c = base.clone();
    c.issuer_key_id = "密钥".into();
    cases.push(c);
    let mut c = base.clone();
    c.number = "9".repeat(65);
    cases.push(c);
    let mut c = base.clone();
    c.fields.insert("empty".into(), String::new());
    cases.push(c);
    let mut c = base.clone();
    c.fields = (0..=MAX_FIELDS)
        .map(|i| (format!("f{i}"), "v".into()))
        .collect();
    cases.push(c);
    let mut c = base.clone();
    c.valid_until = Some(c.valid_from);
    cases.push(c);
    let mut c = base.clone();
    c.valid_from = MAX_UNIX_TIME + 1;
    cases.push(c);
    for claims in cases {
        let err = claims.to_cbor().expect_err("invalid claims are refused");
        // The decoder refuses the same claims when someone encodes them anyway.
        assert_eq!(
            LicenseClaims::from_cbor(&encode(&claims.to_value())),
            Err(err.clone()),
            "{err}"
        );
    }
}

#[test]
fn json_view_keeps_chinese_and_both_date_forms() {
    let json = business_license().to_json();
    assert_eq!(json["type"], "business-license");
    assert_eq!(json["type_name"], "营业执照");
    assert_eq!(json["holder"]["name"], "贵州黔链数据服务有限公司");
    assert_eq!(json["holder"]["id"], "91520115MA6DKXQ43E");
    assert_eq!(json["issuer"]["department"], "market-regulation");
    assert_eq!(json["issued_at"], "2026-01-15T00:00:00Z");
    assert_eq!(json["issued_at_unix"], 1_768_435_200);
    assert_eq!(json["valid_until"], serde_json::Value::Null);
    assert_eq!(json["fields"]["legal-representative"], "张明");
    let text = serde_json::to_string(&json).expect("JSON prints");
    assert!(text.contains("营业执照") && !text.contains("\\u"), "{text}");

    let permit = construction_permit().to_json();
    assert_eq!(permit["type_name"], "建筑工程施工许可证");
    assert_eq!(permit["valid_until"], "2027-01-15T00:00:00Z");
}

#[test]
fn license_types_have_stable_codes_slugs_and_names() {
    let expected = [
        (1, "business-license", "营业执照"),
        (2, "real-estate-certificate", "不动产权证书"),
        (3, "construction-permit", "建筑工程施工许可证"),
    ];
    for (t, (code, slug, name)) in LicenseType::ALL.into_iter().zip(expected) {
        assert_eq!((t.code(), t.slug(), t.name_zh()), (code, slug, name));
        assert_eq!(LicenseType::from_code(code), Some(t));
        assert_eq!(slug.parse::<LicenseType>(), Ok(t));
        assert_eq!(
            serde_json::to_string(&t).expect("serialises"),
            format!("\"{slug}\"")
        );
    }
    assert_eq!(LicenseType::from_code(0), None);
    assert!("营业执照".parse::<LicenseType>().is_err());
}
