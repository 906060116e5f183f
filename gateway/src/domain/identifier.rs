//! Chinese identifiers, validated at the edge so that a malformed key is refused with a message
//! naming the rule it broke, before it reaches policy, the record store or the log.
//!
//! - [`UnifiedSocialCreditCode`] (统一社会信用代码, GB 32100-2015): the key of registration data
//!   and business licenses.
//! - [`ResidentId`] (公民身份号码, GB 11643-1999): personal data. Its `Debug` form is masked, and
//!   errors never repeat the whole number, so neither leaks into logs; it must never reach the
//!   replicated log in clear (store a keyed hash instead).
//!
//! Both types can only be built by `parse` or `generate`, so holding one means it is well formed.
//! `generate(index)` makes deterministic sample identifiers with valid check characters, so that
//! sample and test data never need real ones. Validation is pure: no clock, no lookup tables
//! beyond the standards' own code lists.

use std::fmt;
use std::str::FromStr;

/// Why an identifier was refused. The sender of the identifier is always at fault, and the same
/// input is always refused: fix the identifier, don't retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifierError {
    /// Not 18 characters.
    #[error("unified social credit code must be 18 characters, got {got}")]
    CreditCodeLength {
        /// Characters received.
        got: usize,
    },

    /// A character outside the code alphabet (digits and capital letters except I, O, S, V, Z).
    #[error(
        "unified social credit code character {position} is {found:?}, which is not in the code alphabet: use digits and capital letters except I, O, S, V and Z"
    )]
    CreditCodeCharacter {
        /// 1-based position.
        position: usize,
        /// The refused character.
        found: char,
    },

    /// Position 1 is not a registration authority code of GB 32100-2015.
    #[error(
        "unified social credit code character 1 (registration authority) is {found:?}, but must be one of 1-9, A, N or Y"
    )]
    CreditCodeAuthority {
        /// The refused character.
        found: char,
    },

    /// Position 2, the entity type code, is not a digit.
    #[error(
        "unified social credit code character 2 (entity type) is {found:?}, but must be a digit"
    )]
    CreditCodeEntityType {
        /// The refused character.
        found: char,
    },

    /// Positions 3-8, the administrative division code of the registering office, are not six
    /// digits.
    #[error(
        "unified social credit code characters 3-8 (administrative division code) are {found:?}, but must be 6 digits"
    )]
    CreditCodeDivision {
        /// The six characters found.
        found: String,
    },

    /// The check character does not match the first 17 characters: a typo or a made-up code.
    #[error(
        "unified social credit code check character (18th) is {got:?}, but the first 17 characters require {expected:?}: the code is mistyped"
    )]
    CreditCodeCheck {
        /// Check character computed from the first 17.
        expected: char,
        /// Check character received.
        got: char,
    },

    /// Not 18 characters.
    #[error("resident identity number must be 18 characters, got {got}")]
    ResidentIdLength {
        /// Characters received.
        got: usize,
    },

    /// One of the first 17 characters is not a digit.
    #[error(
        "resident identity number character {position} is {found:?}, but the first 17 must be digits"
    )]
    ResidentIdDigit {
        /// 1-based position.
        position: usize,
        /// The refused character.
        found: char,
    },

    /// The 18th character is neither a digit nor X.
    #[error(
        "resident identity number check character (18th) is {found:?}, but must be a digit or X"
    )]
    ResidentIdCheckCharacter {
        /// The refused character.
        found: char,
    },

    /// Positions 7-14 are not a calendar date `YYYYMMDD`. Only the broken part is named, so the
    /// message does not repeat the birth date.
    #[error(
        "resident identity number birth date (characters 7-14, YYYYMMDD) is not a calendar date: {problem}"
    )]
    ResidentIdBirthDate {
        /// What is wrong with the date.
        problem: String,
    },

    /// The check character does not match the first 17 digits: a typo or a made-up number.
    #[error(
        "resident identity number check character (18th) is {got:?}, but the first 17 digits require {expected:?}: the number is mistyped"
    )]
    ResidentIdCheck {
        /// Check character computed from the first 17.
        expected: char,
        /// Check character received.
        got: char,
    },
}

/// The 31 characters of GB 32100-2015, in value order: a character's value is its index.
const CREDIT_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// Weight of position i (1-based, i <= 17): 3^(i-1) mod 31.
const CREDIT_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];
/// Registration authorities (登记管理部门): 1 机构编制 … 9 工商, A 中央军委改革和编制办公室, N 农业,
/// Y 其他.
const CREDIT_AUTHORITIES: &str = "123456789ANY";

fn credit_value(c: char) -> Option<u32> {
    CREDIT_ALPHABET
        .iter()
        .position(|&a| char::from(a) == c)
        .map(|v| v as u32)
}

/// Check character of the first 17 characters (all in the alphabet).
fn credit_check(body: &[u32]) -> char {
    let sum: u32 = body.iter().zip(CREDIT_WEIGHTS).map(|(v, w)| v * w).sum();
    char::from(CREDIT_ALPHABET[((31 - sum % 31) % 31) as usize])
}

/// A unified social credit code (统一社会信用代码), 18 characters, checked against GB 32100-2015.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnifiedSocialCreditCode(String);

impl UnifiedSocialCreditCode {
    /// Validates a code: length, alphabet, registration authority (1-9, A, N, Y), entity type
    /// (a digit), administrative division (6 digits) and check character, in that order.
    /// Letters must be capitals, as the standard writes them.
    ///
    /// # Errors
    /// The `CreditCode*` variants of [`IdentifierError`].
    pub fn parse(code: &str) -> Result<Self, IdentifierError> {
        let chars: Vec<char> = code.chars().collect();
        if chars.len() != 18 {
            return Err(IdentifierError::CreditCodeLength { got: chars.len() });
        }
        let mut values = [0u32; 18];
        for (i, &c) in chars.iter().enumerate() {
            values[i] = credit_value(c).ok_or(IdentifierError::CreditCodeCharacter {
                position: i + 1,
                found: c,
            })?;
        }
        if !CREDIT_AUTHORITIES.contains(chars[0]) {
            return Err(IdentifierError::CreditCodeAuthority { found: chars[0] });
        }
        if !chars[1].is_ascii_digit() {
            return Err(IdentifierError::CreditCodeEntityType { found: chars[1] });
        }
        if !chars[2..8].iter().all(char::is_ascii_digit) {
            return Err(IdentifierError::CreditCodeDivision {
                found: chars[2..8].iter().collect(),
            });
        }
        let expected = credit_check(&values[..17]);
        if chars[17] != expected {
            return Err(IdentifierError::CreditCodeCheck {
                expected,
                got: chars[17],
            });
        }
        Ok(Self(code.to_owned()))
    }

    /// A sample code for test and demo data, deterministic in `index` and valid: registration
    /// authority and entity type from a fixed list, a Guizhou division code, a subject code
    /// derived from `index`, and the right check character. Distinct indices below 31^9 give
    /// distinct codes. Such a code may equal a real one by chance; never present it as real.
    pub fn generate(index: u64) -> Self {
        const KINDS: [&str; 8] = ["91", "92", "93", "11", "12", "51", "52", "N2"];
        const DIVISIONS: [&str; 6] = ["520100", "520102", "520103", "520200", "520300", "522600"];
        const SUBJECTS: u64 = 31u64.pow(9);
        let kind = KINDS[(index % KINDS.len() as u64) as usize];
        let division = DIVISIONS[((index / KINDS.len() as u64) % DIVISIONS.len() as u64) as usize];
        // Multiplying by a constant coprime to 31 permutes 0..31^9, so consecutive indices get
        // unrelated-looking but distinct subject codes.
        let mut subject =
            (u128::from(index % SUBJECTS) * 2_654_435_761 % u128::from(SUBJECTS)) as u64;
        let mut code = String::with_capacity(18);
        code.push_str(kind);
        code.push_str(division);
        let mut digits = [b'0'; 9];
        for d in digits.iter_mut().rev() {
            *d = CREDIT_ALPHABET[(subject % 31) as usize];
            subject /= 31;
        }
        code.extend(digits.iter().map(|&b| char::from(b)));
        let values: Vec<u32> = code.chars().filter_map(credit_value).collect();
        code.push(credit_check(&values));
        Self(code)
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Character 1: the registration authority (e.g. `9` for market regulation).
    pub fn registration_authority(&self) -> char {
        char::from(self.0.as_bytes()[0])
    }

    /// Character 2: the entity type within the authority (e.g. `1` enterprise under `9`).
    pub fn entity_type(&self) -> char {
        char::from(self.0.as_bytes()[1])
    }

    /// Characters 3-8: the administrative division code of the registering office (GB/T 2260).
    pub fn division_code(&self) -> &str {
        &self.0[2..8]
    }

    /// Characters 9-17: the subject identifier (the organization code of GB 11714).
    pub fn subject_code(&self) -> &str {
        &self.0[8..17]
    }
}

impl fmt::Display for UnifiedSocialCreditCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UnifiedSocialCreditCode {
    type Err = IdentifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for UnifiedSocialCreditCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// ISO 7064 MOD 11-2 weight of digit i (1-based, i <= 17): 2^(18-i) mod 11.
const RESIDENT_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character by weighted sum mod 11.
const RESIDENT_CHECK: &[u8; 11] = b"10X98765432";

fn resident_check(digits: &[u32]) -> char {
    let sum: u32 = digits
        .iter()
        .zip(RESIDENT_WEIGHTS)
        .map(|(d, w)| d * w)
        .sum();
    char::from(RESIDENT_CHECK[(sum % 11) as usize])
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Checks a Gregorian `YYYYMMDD` date given as digits; says what is wrong without repeating it.
pub(crate) fn check_date(year: u32, month: u32, day: u32) -> Result<(), String> {
    if !(1..=12).contains(&month) {
        return Err(format!("there is no month {month:02}"));
    }
    let last = days_in_month(year, month);
    if !(1..=last).contains(&day) {
        return Err(if month == 2 && day == 29 {
            "February 29 falls in a year that is not a leap year".to_owned()
        } else {
            format!("month {month:02} has no day {day:02}")
        });
    }
    Ok(())
}

/// A resident identity number (公民身份号码), 18 characters, checked against GB 11643-1999 and
/// ISO 7064 MOD 11-2. A lowercase `x` check character is accepted and stored as `X`.
///
/// Personal data: `Debug` shows only the division code and the check character.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResidentId(String);

impl ResidentId {
    /// Validates a number: length, 17 digits, a digit or X last, the birth date in characters
    /// 7-14 is a calendar date, and the check character, in that order.
    ///
    /// # Errors
    /// The `ResidentId*` variants of [`IdentifierError`].
    pub fn parse(number: &str) -> Result<Self, IdentifierError> {
        let chars: Vec<char> = number.chars().collect();
        if chars.len() != 18 {
            return Err(IdentifierError::ResidentIdLength { got: chars.len() });
        }
        let mut digits = [0u32; 17];
        for (i, &c) in chars[..17].iter().enumerate() {
            digits[i] = c.to_digit(10).ok_or(IdentifierError::ResidentIdDigit {
                position: i + 1,
                found: c,
            })?;
        }
        let got = match chars[17] {
            'x' | 'X' => 'X',
            c if c.is_ascii_digit() => c,
            found => return Err(IdentifierError::ResidentIdCheckCharacter { found }),
        };
        let number_at =
            |range: std::ops::Range<usize>| digits[range].iter().fold(0, |n, d| n * 10 + d);
        check_date(number_at(6..10), number_at(10..12), number_at(12..14))
            .map_err(|problem| IdentifierError::ResidentIdBirthDate { problem })?;
        let expected = resident_check(&digits);
        if got != expected {
            return Err(IdentifierError::ResidentIdCheck { expected, got });
        }
        let mut normalised: String = chars[..17].iter().collect();
        normalised.push(got);
        Ok(Self(normalised))
    }

    /// A sample number for test and demo data, deterministic in `index` and valid: a Guizhou
    /// county code, a birth date between 1950-01-01 and 2009-12-31, a sequence number, and the
    /// right check character. Distinct indices below 8 × 21 915 × 1 000 give distinct numbers.
    /// Such a number may equal a real one by chance; never present it as real, and never log it.
    pub fn generate(index: u64) -> Self {
        const DIVISIONS: [&str; 8] = [
            "520102", "520103", "520111", "520113", "520203", "520302", "520402", "522601",
        ];
        const FIRST_YEAR: u32 = 1950;
        const DAYS: u64 = 21_915; // 1950-01-01 ..= 2009-12-31
        const SPACE: u64 = DIVISIONS.len() as u64 * DAYS * 1_000;
        // Multiplying by a constant coprime to SPACE (= 2^6 · 3^2 · 5^4 · 487) permutes 0..SPACE.
        let n = (u128::from(index % SPACE) * 1_000_003 % u128::from(SPACE)) as u64;
        let sequence = n % 1_000;
        let mut day = (n / 1_000 % DAYS) as u32;
        let division = DIVISIONS[(n / 1_000 / DAYS) as usize];

        let mut year = FIRST_YEAR;
        while day >= if is_leap(year) { 366 } else { 365 } {
            day -= if is_leap(year) { 366 } else { 365 };
            year += 1;
        }
        let mut month = 1;
        while day >= days_in_month(year, month) {
            day -= days_in_month(year, month);
            month += 1;
        }
        let mut number = format!("{division}{year:04}{month:02}{:02}{sequence:03}", day + 1);
        let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
        number.push(resident_check(&digits));
        Self(number)
    }

    /// The number, with an uppercase `X` if that is its check character.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Characters 1-6: the administrative division code of the place of registration.
    pub fn division_code(&self) -> &str {
        &self.0[..6]
    }

    /// Characters 7-14: the birth date, `YYYYMMDD`.
    pub fn birth_date(&self) -> &str {
        &self.0[6..14]
    }
}

impl fmt::Display for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ResidentId(\"{}***********{}\")",
            &self.0[..6],
            &self.0[17..]
        )
    }
}

impl FromStr for ResidentId {
    type Err = IdentifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for ResidentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_code_examples_computed_by_hand() {
        // "91520102000000000": values 9,1,5,2,0,1,0,2,0… times weights 1,3,9,27,19,26,16,17,20…
        // = 9 + 3 + 45 + 54 + 0 + 26 + 0 + 34 = 171; 171 mod 31 = 16; 31 - 16 = 15 → 'F'.
        let code = UnifiedSocialCreditCode::parse("91520102000000000F").expect("valid");
        assert_eq!(code.as_str(), "91520102000000000F");
        assert_eq!(code.registration_authority(), '9');
        assert_eq!(code.entity_type(), '1');
        assert_eq!(code.division_code(), "520102");
        assert_eq!(code.subject_code(), "000000000");
        // "N2520103MA6DKL7Q0": N=22, M=21, A=10, D=13, K=19, L=20, Q=24 (letter values skip
        // I, O, S, V, Z). Products: 22·1 + 2·3 + 5·9 + 2·27 + 0·19 + 1·26 + 0·16 + 3·17
        // + 21·20 + 10·29 + 6·25 + 13·13 + 19·8 + 20·24 + 7·10 + 24·30 + 0·28
        // = 22+6+45+54+0+26+0+51+420+290+150+169+152+480+70+720+0 = 2655;
        // 2655 mod 31 = 20; 31 - 20 = 11 → 'B'.
        let code: UnifiedSocialCreditCode = "N2520103MA6DKL7Q0B".parse().expect("valid");
        assert_eq!(code.to_string(), "N2520103MA6DKL7Q0B");
    }

    #[test]
    fn credit_code_errors_name_the_rule() {
        use IdentifierError::*;
        let cases = [
            ("91520102000000000", CreditCodeLength { got: 17 }),
            ("91520102000000000FF", CreditCodeLength { got: 19 }),
            (
                "9152010200000000I0",
                CreditCodeCharacter {
                    position: 17,
                    found: 'I',
                },
            ),
            (
                "91520102o00000000F",
                CreditCodeCharacter {
                    position: 9,
                    found: 'o',
                },
            ),
            (
                "9152010200000000统F",
                CreditCodeCharacter {
                    position: 17,
                    found: '统',
                },
            ),
            ("B1520102000000000F", CreditCodeAuthority { found: 'B' }),
            ("9A520102000000000F", CreditCodeEntityType { found: 'A' }),
            (
                "91A20102000000000F",
                CreditCodeDivision {
                    found: "A20102".into(),
                },
            ),
            (
                "91520102000000000E",
                CreditCodeCheck {
                    expected: 'F',
                    got: 'E',
                },
            ),
        ];
        for (input, err) in cases {
            assert_eq!(UnifiedSocialCreditCode::parse(input), Err(err), "{input}");
        }
        assert_eq!(
            CreditCodeLength { got: 17 }.to_string(),
            "unified social credit code must be 18 characters, got 17"
        );
        assert_eq!(
            CreditCodeCheck {
                expected: 'F',
                got: 'E'
            }
            .to_string(),
            "unified social credit code check character (18th) is 'E', but the first 17 characters require 'F': the code is mistyped"
        );
        // Lowercase letters are outside the alphabet; the message says to use capitals.
        let err = UnifiedSocialCreditCode::parse("n2520103MA6DKL7Q0B").expect_err("lowercase");
        assert!(err.to_string().contains("capital letters"), "{err}");
    }

    #[test]
    fn resident_id_examples_computed_by_hand() {
        // GB 11643-1999's own example "11010519491231002X":
        // digits 1,1,0,1,0,5,1,9,4,9,1,2,3,1,0,0,2
        // times weights 7,9,10,5,8,4,2,1,6,3,7,9,10,5,8,4,2
        // = 7+9+0+5+0+20+2+9+24+27+7+18+30+5+0+0+4 = 167; 167 mod 11 = 2 → "10X98765432"[2] = 'X'.
        let id = ResidentId::parse("11010519491231002X").expect("valid");
        assert_eq!(id.as_str(), "11010519491231002X");
        assert_eq!(id.division_code(), "110105");
        assert_eq!(id.birth_date(), "19491231");
        // Lowercase x is accepted and normalised.
        assert_eq!(ResidentId::parse("11010519491231002x"), Ok(id));
        // The standard's other example "440524188001010014": 4·7 + 4·9 + 0 + 5·5 + 2·8 + 4·4
        // + 1·2 + 8·1 + 8·6 + 0 + 0 + 1·9 + 0 + 1·5 + 0 + 0 + 1·2 = 195; 195 mod 11 = 8 → '4'.
        let id: ResidentId = "440524188001010014".parse().expect("valid");
        assert_eq!(id.to_string(), "440524188001010014");
    }

    #[test]
    fn resident_id_errors_name_the_rule() {
        use IdentifierError::*;
        let cases = [
            ("11010519491231002", ResidentIdLength { got: 17 }),
            (
                "1101051949123100２X",
                ResidentIdDigit {
                    position: 17,
                    found: '２',
                },
            ),
            (
                "1101051949A231002X",
                ResidentIdDigit {
                    position: 11,
                    found: 'A',
                },
            ),
            (
                "11010519491231002Y",
                ResidentIdCheckCharacter { found: 'Y' },
            ),
            (
                "110105194913310025",
                ResidentIdBirthDate {
                    problem: "there is no month 13".into(),
                },
            ),
            (
                "110105194904310025",
                ResidentIdBirthDate {
                    problem: "month 04 has no day 31".into(),
                },
            ),
            (
                "110105190002290025",
                ResidentIdBirthDate {
                    problem: "February 29 falls in a year that is not a leap year".into(),
                },
            ),
            (
                "110105194912000025",
                ResidentIdBirthDate {
                    problem: "month 12 has no day 00".into(),
                },
            ),
            (
                "110105194912310021",
                ResidentIdCheck {
                    expected: 'X',
                    got: '1',
                },
            ),
        ];
        for (input, err) in cases {
            assert_eq!(ResidentId::parse(input), Err(err), "{input}");
        }
        // 2000 is a leap year (divisible by 400), so its February 29 is a date; 1900 was not.
        let body = "11010520000229002";
        let digits: Vec<u32> = body.chars().filter_map(|c| c.to_digit(10)).collect();
        assert!(ResidentId::parse(&format!("{body}{}", resident_check(&digits))).is_ok());
        assert_eq!(
            ResidentIdLength { got: 17 }.to_string(),
            "resident identity number must be 18 characters, got 17"
        );
    }

    #[test]
    fn resident_id_debug_is_masked() {
        let id = ResidentId::parse("11010519491231002X").expect("valid");
        assert_eq!(format!("{id:?}"), "ResidentId(\"110105***********X\")");
    }

    #[test]
    fn generated_identifiers_always_parse_and_do_not_repeat() {
        let mut codes = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for index in 0..5_000 {
            let code = UnifiedSocialCreditCode::generate(index);
            assert_eq!(
                UnifiedSocialCreditCode::parse(code.as_str()).as_ref(),
                Ok(&code)
            );
            assert!(codes.insert(code), "code {index} repeats");
            let id = ResidentId::generate(index);
            assert_eq!(ResidentId::parse(id.as_str()).as_ref(), Ok(&id));
            assert!(ids.insert(id), "id {index} repeats");
        }
        for index in [u64::MAX, u64::MAX / 3, 31u64.pow(9), 8 * 21_915 * 1_000 - 1] {
            assert!(
                UnifiedSocialCreditCode::parse(UnifiedSocialCreditCode::generate(index).as_str())
                    .is_ok()
            );
            assert!(ResidentId::parse(ResidentId::generate(index).as_str()).is_ok());
        }
        // Subject codes alone are distinct for distinct indices spread over 0..31^9.
        let subjects: std::collections::HashSet<String> = (0..5_000)
            .map(|i| {
                UnifiedSocialCreditCode::generate(i * 5_000_000_011)
                    .subject_code()
                    .to_owned()
            })
            .collect();
        assert_eq!(subjects.len(), 5_000);
        assert_eq!(
            UnifiedSocialCreditCode::generate(7),
            UnifiedSocialCreditCode::generate(7)
        );
        assert_eq!(ResidentId::generate(7), ResidentId::generate(7));
    }

    #[test]
    fn generated_birth_dates_cover_the_whole_range() {
        let dates: Vec<String> = (0..50_000)
            .map(|i| ResidentId::generate(i).birth_date().to_owned())
            .collect();
        assert!(
            dates
                .iter()
                .all(|d| ("19500101"..="20091231").contains(&d.as_str()))
        );
        assert!(
            dates.iter().any(|d| d.ends_with("0229")),
            "leap days are generated too"
        );
        assert!(
            dates.iter().any(|d| d.starts_with("1950"))
                && dates.iter().any(|d| d.starts_with("2009"))
        );
    }
}
