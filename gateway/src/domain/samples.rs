//! The sample data of the embedded default: registrations, land certificates and permits of
//! three departments, with identifiers that carry valid check characters.

use crate::domain::identifier::{ResidentId, UnifiedSocialCreditCode};

/// Sample records for the three departments, each put by its owner through the gateway (so each
/// is notarized like any other write). Identifiers are generated with valid check characters.
pub fn samples() -> Vec<(&'static str, &'static str, String, serde_json::Value)> {
    let mut out = Vec::new();
    let names = [
        ("贵州黔云数据科技有限公司", "张伟"),
        ("贵阳筑城建设工程有限公司", "李娜"),
        ("遵义红城食品有限公司", "王芳"),
        ("安顺黄果树旅游开发有限公司", "刘洋"),
        ("六盘水凉都新能源有限公司", "陈静"),
    ];
    let mut codes = Vec::new();
    for (i, (name, rep)) in names.iter().enumerate() {
        let code = UnifiedSocialCreditCode::generate(i as u64)
            .as_str()
            .to_owned();
        codes.push(code.clone());
        out.push((
            "market-regulation",
            "enterprise-registration",
            code.clone(),
            serde_json::json!({
                "unified_social_credit_code": code,
                "name": name,
                "legal_representative": rep,
                "legal_representative_id": ResidentId::generate(i as u64).as_str(),
                "registered_capital_cny": 1_000_000 * (i as u64 + 1),
                "established": format!("20{:02}-0{}-1{}", 10 + i, 1 + i, i),
                "status": "存续",
            }),
        ));
    }
    for i in 0..3u64 {
        let cert = format!("黔（2024）贵阳市不动产权第{:07}号", 12_345 + i);
        out.push((
            "natural-resources",
            "real-estate-registration",
            cert.clone(),
            serde_json::json!({
                "certificate_number": cert,
                "holder_credit_code": codes[i as usize],
                "location": format!("贵阳市观山湖区林城西路{}号", 10 + i),
                "area_m2": 1200 + 300 * i,
                "use": "商服用地",
            }),
        ));
    }
    for i in 0..3u64 {
        let permit = format!("5201152024031{}{:04}", i + 1, i + 1);
        out.push((
            "housing",
            "construction-permit",
            permit.clone(),
            serde_json::json!({
                "permit_number": permit,
                "builder_credit_code": codes[1],
                "project": format!("观山湖区第{}期综合楼", i + 1),
                "land_certificate": format!("黔（2024）贵阳市不动产权第{:07}号", 12_345 + i),
                "contract_price_cny": 25_000_000 + 5_000_000 * i,
            }),
        ));
    }
    out
}
