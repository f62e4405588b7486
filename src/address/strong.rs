//! Strong addresses (`shared/reference/mesh-formats.md` §2).
//!
//! Two placements of the fingerprint label, both accepted:
//! - suffix `alice@example.com.xx--<fp>`: the fingerprint is the TLD, so legacy software cannot
//!   route it and fails closed (what `meshmail address` prints by default);
//! - prefix `alice@xx--<fp>.example.com`: routable by legacy MTAs where a wildcard MX exists.
//!
//! The label prefix is `xx--` or `mm--` (any case). What the label holds is told apart by shape:
//! Base32 in dashed groups of 4 is a UDF, 40 hex digits an OpenPGP v4 fingerprint, 52 Base32
//! characters an OpenPGP v6 fingerprint. Anything else, more than one fingerprint label, an empty
//! fingerprint or a label over 63 octets is a typed error, never a guess.

use super::udf::{Udf, UdfError};
use std::fmt;
use thiserror::Error;

/// RFC 1035 §2.3.4: a label is at most 63 octets.
const MAX_LABEL_OCTETS: usize = 63;
/// RFC 5321 §4.5.3.1.1 and §4.5.3.1.2.
const MAX_LOCAL_OCTETS: usize = 64;
const MAX_DOMAIN_OCTETS: usize = 255;

/// Why an address is not a usable (strong) address. Every variant maps to `553 5.1.3` in SMTP
/// and exit code 64 on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("no '@' in the address")]
    NoAt,
    #[error("empty local part")]
    EmptyLocalPart,
    #[error("local part longer than {MAX_LOCAL_OCTETS} octets")]
    LocalPartTooLong,
    #[error("empty domain")]
    EmptyDomain,
    #[error("domain longer than {MAX_DOMAIN_OCTETS} octets")]
    DomainTooLong,
    #[error("empty label in the domain")]
    EmptyLabel,
    #[error("label longer than {MAX_LABEL_OCTETS} octets")]
    LabelTooLong,
    #[error("the address has no fingerprint label (xx-- or mm--)")]
    NotStrong,
    #[error("more than one fingerprint label")]
    SeveralFingerprints,
    #[error("the fingerprint label must be the first or the last label of the domain")]
    FingerprintInMiddle,
    #[error("the fingerprint label leaves no domain to route to")]
    NoRoutableDomain,
    #[error("empty fingerprint")]
    EmptyFingerprint,
    #[error("fingerprint is neither a dashed UDF, 40 hex digits (OpenPGP v4) nor 52 Base32 characters (OpenPGP v6)")]
    UnknownFingerprintShape,
    #[error("bad UDF: {0}")]
    Udf(#[from] UdfError),
}

/// The fingerprint a strong address carries.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Fingerprint {
    /// UDF of an Ed25519 policy-signing key: the policy is a signed policy document.
    Udf(Udf),
    /// OpenPGP v4 primary-key fingerprint: the policy is that certificate itself.
    OpenPgpV4([u8; 20]),
    /// OpenPGP v6 fingerprint (32 bytes, written in Base32 to fit a label).
    OpenPgpV6([u8; 32]),
}

impl Fingerprint {
    /// Parses the text of a fingerprint label (after `xx--`), telling the kinds apart by shape.
    pub fn parse_label_text(text: &str) -> Result<Fingerprint, AddressError> {
        if text.is_empty() {
            return Err(AddressError::EmptyFingerprint);
        }
        if text.contains('-') {
            return Ok(Fingerprint::Udf(Udf::parse_grouped(text)?));
        }
        if text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes = data_encoding::HEXLOWER_PERMISSIVE
                .decode(text.as_bytes())
                .map_err(|_| AddressError::UnknownFingerprintShape)?;
            let fpr = bytes
                .try_into()
                .map_err(|_| AddressError::UnknownFingerprintShape)?;
            return Ok(Fingerprint::OpenPgpV4(fpr));
        }
        if text.len() == 52 {
            let upper = text.to_ascii_uppercase();
            if let Ok(bytes) = data_encoding::BASE32_NOPAD.decode(upper.as_bytes()) {
                if let Ok(fpr) = bytes.try_into() {
                    return Ok(Fingerprint::OpenPgpV6(fpr));
                }
            }
        }
        Err(AddressError::UnknownFingerprintShape)
    }

    /// The text written into an address label (lower case).
    pub fn label_text(&self) -> String {
        match self {
            Fingerprint::Udf(udf) => udf.to_label_form(),
            Fingerprint::OpenPgpV4(fpr) => data_encoding::HEXLOWER.encode(fpr),
            Fingerprint::OpenPgpV6(fpr) => {
                data_encoding::BASE32_NOPAD.encode(fpr).to_ascii_lowercase()
            }
        }
    }

    /// The OpenPGP fingerprint as upper-case hex (the form gpg prints), if this is one.
    pub fn openpgp_hex(&self) -> Option<String> {
        match self {
            Fingerprint::Udf(_) => None,
            Fingerprint::OpenPgpV4(fpr) => Some(data_encoding::HEXUPPER.encode(fpr)),
            Fingerprint::OpenPgpV6(fpr) => Some(data_encoding::HEXUPPER.encode(fpr)),
        }
    }

    /// A short name of the kind, used in JSON output and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Fingerprint::Udf(_) => "udf",
            Fingerprint::OpenPgpV4(_) => "openpgp-v4",
            Fingerprint::OpenPgpV6(_) => "openpgp-v6",
        }
    }
}

/// The label prefix that marks a fingerprint label.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Label {
    /// `xx--`, the generic reserved pattern (the default).
    #[default]
    Xx,
    /// `mm--`, as in the Mesh drafts.
    Mm,
}

impl Label {
    fn prefix(self) -> &'static str {
        match self {
            Label::Xx => "xx--",
            Label::Mm => "mm--",
        }
    }

    fn of_label(label: &str) -> Option<Label> {
        let head = label.get(..4)?;
        if head.eq_ignore_ascii_case("xx--") {
            Some(Label::Xx)
        } else if head.eq_ignore_ascii_case("mm--") {
            Some(Label::Mm)
        } else {
            None
        }
    }
}

/// Where the fingerprint label stands in the domain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Form {
    /// `alice@example.com.xx--<fp>`: fails closed in legacy software (the default).
    #[default]
    Suffix,
    /// `alice@xx--<fp>.example.com`.
    Prefix,
}

/// A fingerprint address: a routable address bound to a fingerprint.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StrongAddress {
    /// Kept byte for byte as written.
    local: String,
    /// The routable domain, lower case (domains compare case-insensitively).
    domain: String,
    fingerprint: Fingerprint,
    label: Label,
    form: Form,
}

impl StrongAddress {
    /// Binds a routable address to a fingerprint, written in the given label and form.
    pub fn new(
        routable: &str,
        fingerprint: Fingerprint,
        label: Label,
        form: Form,
    ) -> Result<StrongAddress, AddressError> {
        let (local, domain) = split_address(routable)?;
        for l in domain.split('.') {
            check_label(l)?;
            if Label::of_label(l).is_some() {
                return Err(AddressError::SeveralFingerprints);
            }
        }
        let address = StrongAddress {
            local: local.to_owned(),
            domain: domain.to_ascii_lowercase(),
            fingerprint,
            label,
            form,
        };
        // The fingerprint label itself must fit in a label; round-trip to enforce every rule.
        StrongAddress::parse(&address.to_string())?;
        Ok(address)
    }

    /// Parses a strong address in either form. A plain address is `Err(NotStrong)`.
    pub fn parse(text: &str) -> Result<StrongAddress, AddressError> {
        let (local, domain) = split_address(text)?;
        let labels: Vec<&str> = domain.split('.').collect();
        for l in &labels {
            check_label(l)?;
        }
        let marked: Vec<(usize, Label)> = labels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Label::of_label(l).map(|k| (i, k)))
            .collect();
        let (index, label) = match marked.as_slice() {
            [] => return Err(AddressError::NotStrong),
            [one] => *one,
            _ => return Err(AddressError::SeveralFingerprints),
        };
        if labels.len() < 2 {
            return Err(AddressError::NoRoutableDomain);
        }
        let form = if index + 1 == labels.len() {
            Form::Suffix
        } else if index == 0 {
            Form::Prefix
        } else {
            return Err(AddressError::FingerprintInMiddle);
        };
        let fingerprint = Fingerprint::parse_label_text(&labels[index][4..])?;
        let routable_labels: Vec<&str> = labels
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, l)| *l)
            .collect();
        Ok(StrongAddress {
            local: local.to_owned(),
            domain: routable_labels.join(".").to_ascii_lowercase(),
            fingerprint,
            label,
            form,
        })
    }

    /// The address mail is delivered to: the fingerprint label removed.
    pub fn routable(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    /// The local part, byte for byte as written.
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The routable domain, lower case.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    pub fn label(&self) -> Label {
        self.label
    }

    pub fn form(&self) -> Form {
        self.form
    }

    /// The same address written in another label and form.
    pub fn with_style(&self, label: Label, form: Form) -> StrongAddress {
        StrongAddress {
            label,
            form,
            ..self.clone()
        }
    }
}

impl fmt::Display for StrongAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fp = format!("{}{}", self.label.prefix(), self.fingerprint.label_text());
        match self.form {
            Form::Suffix => write!(f, "{}@{}.{}", self.local, self.domain, fp),
            Form::Prefix => write!(f, "{}@{}.{}", self.local, fp, self.domain),
        }
    }
}

/// An envelope address as meshmail classifies it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MailAddress {
    /// Carries a fingerprint: the policy is a MUST.
    Strong(StrongAddress),
    /// An ordinary address: local rules decide.
    Plain(String),
}

impl MailAddress {
    /// Classifies an address: strong when it has a fingerprint label, plain otherwise; a
    /// malformed fingerprint is an error, never taken for a plain address.
    pub fn classify(text: &str) -> Result<MailAddress, AddressError> {
        match StrongAddress::parse(text) {
            Ok(strong) => Ok(MailAddress::Strong(strong)),
            Err(AddressError::NotStrong) => Ok(MailAddress::Plain(text.to_owned())),
            Err(e) => Err(e),
        }
    }
}

fn split_address(text: &str) -> Result<(&str, &str), AddressError> {
    let (local, domain) = text.rsplit_once('@').ok_or(AddressError::NoAt)?;
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    if local.len() > MAX_LOCAL_OCTETS {
        return Err(AddressError::LocalPartTooLong);
    }
    if domain.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if domain.len() > MAX_DOMAIN_OCTETS {
        return Err(AddressError::DomainTooLong);
    }
    Ok((local, domain))
}

fn check_label(label: &str) -> Result<(), AddressError> {
    if label.is_empty() {
        return Err(AddressError::EmptyLabel);
    }
    if label.len() > MAX_LABEL_OCTETS {
        return Err(AddressError::LabelTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UDF: &str = "mddk-7n6a-727a-jzno-strx-xks7-djaf";

    #[test]
    fn suffix_and_prefix_forms() {
        let s = StrongAddress::parse(&format!("alice@example.com.xx--{UDF}")).unwrap();
        assert_eq!(s.routable(), "alice@example.com");
        assert_eq!(s.form(), Form::Suffix);
        assert_eq!(s.label(), Label::Xx);
        let p =
            StrongAddress::parse(&format!("alice@MM--{}.Example.COM", UDF.to_uppercase())).unwrap();
        assert_eq!(p.routable(), "alice@example.com");
        assert_eq!(p.form(), Form::Prefix);
        assert_eq!(p.label(), Label::Mm);
        assert_eq!(s.fingerprint(), p.fingerprint());
        assert_eq!(s.with_style(Label::Mm, Form::Prefix), p);
    }

    #[test]
    fn local_part_kept_byte_for_byte() {
        let s = StrongAddress::parse(&format!("Alice.Smith+tag@example.com.xx--{UDF}")).unwrap();
        assert_eq!(s.routable(), "Alice.Smith+tag@example.com");
    }

    #[test]
    fn openpgp_shapes() {
        let v4 = "0123456789abcdef0123456789ABCDEF01234567";
        let a = StrongAddress::parse(&format!("bob@example.org.xx--{v4}")).unwrap();
        assert!(matches!(a.fingerprint(), Fingerprint::OpenPgpV4(_)));
        assert_eq!(
            a.fingerprint().openpgp_hex().unwrap(),
            "0123456789ABCDEF0123456789ABCDEF01234567"
        );
        let v6 = data_encoding::BASE32_NOPAD
            .encode(&[7u8; 32])
            .to_ascii_lowercase();
        assert_eq!(v6.len(), 52);
        let b = StrongAddress::parse(&format!("bob@example.org.xx--{v6}")).unwrap();
        assert_eq!(b.fingerprint(), &Fingerprint::OpenPgpV6([7u8; 32]));
    }

    #[test]
    fn refusals() {
        use AddressError::*;
        let cases: &[(&str, AddressError)] = &[
            // dashless UDF: neither 40 hex nor 52 Base32
            (
                "a@example.com.xx--mddk7n6a727ajznostrxxks7djaf",
                UnknownFingerprintShape,
            ),
            // 52 characters that are not Base32 ('1' and '0' are not in the alphabet)
            (
                &format!("a@example.com.xx--{}", "1".repeat(52)),
                UnknownFingerprintShape,
            ),
            // 51 and 53 Base32 characters
            (
                &format!("a@example.com.xx--{}", "a".repeat(51)),
                UnknownFingerprintShape,
            ),
            (
                &format!("a@example.com.xx--{}", "a".repeat(53)),
                UnknownFingerprintShape,
            ),
            // 39 hex digits
            (
                &format!("a@example.com.xx--{}", "a".repeat(39)),
                UnknownFingerprintShape,
            ),
            (
                &format!("a@xx--{UDF}.example.com.mm--{UDF}"),
                SeveralFingerprints,
            ),
            (&format!("a@example.xx--{UDF}.com"), FingerprintInMiddle),
            ("a@example.com.xx--", EmptyFingerprint),
            (&format!("a@xx--{UDF}"), NoRoutableDomain),
            (
                &format!("a@example.com.xx--{UDF}-{}", "aaaa-".repeat(5) + "aaaa"),
                LabelTooLong,
            ),
            (&format!("a@example..com.xx--{UDF}"), EmptyLabel),
            ("example.com", NoAt),
            (&format!("@example.com.xx--{UDF}"), EmptyLocalPart),
            (
                &format!("{}@example.com.xx--{UDF}", "a".repeat(65)),
                LocalPartTooLong,
            ),
            ("alice@example.com", NotStrong),
            (
                "a@example.com.xx--mddk-7n6a-727a-jzno-strx",
                Udf(UdfError::TooShort(100)),
            ),
            (
                "a@example.com.xx--mddk-7n6a-727a-jzno-str-xxks7",
                Udf(UdfError::BadGrouping),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(StrongAddress::parse(text).as_ref(), Err(want), "{text}");
        }
    }

    #[test]
    fn classify_plain_and_strong() {
        assert_eq!(
            MailAddress::classify("bob@example.com"),
            Ok(MailAddress::Plain("bob@example.com".into()))
        );
        assert!(matches!(
            MailAddress::classify(&format!("bob@example.com.xx--{UDF}")),
            Ok(MailAddress::Strong(_))
        ));
        // A broken fingerprint is never taken for a plain address.
        assert!(MailAddress::classify("bob@example.com.xx--zzz").is_err());
        // IDNA labels are not fingerprint labels.
        assert!(matches!(
            MailAddress::classify("bob@xn--bcher-kva.example"),
            Ok(MailAddress::Plain(_))
        ));
    }

    fn fingerprint_strategy() -> impl Strategy<Value = Fingerprint> {
        prop_oneof![
            (any::<[u8; 32]>(), 120usize..=235).prop_map(|(key, bits)| Fingerprint::Udf(
                crate::address::Udf::of_ed25519_key(&key, bits)
            )),
            any::<[u8; 20]>().prop_map(Fingerprint::OpenPgpV4),
            any::<[u8; 32]>().prop_map(Fingerprint::OpenPgpV6),
        ]
    }

    proptest! {
        #[test]
        fn format_parse_round_trips(
            local in "[A-Za-z0-9._%+=-]{1,64}",
            domain in "[a-z0-9]{1,20}(\\.[a-z0-9-]{1,20}){0,3}",
            fp in fingerprint_strategy(),
            mm in any::<bool>(),
            prefix in any::<bool>(),
        ) {
            let label = if mm { Label::Mm } else { Label::Xx };
            let form = if prefix { Form::Prefix } else { Form::Suffix };
            let routable = format!("{local}@{domain}");
            match StrongAddress::new(&routable, fp.clone(), label, form) {
                Ok(addr) => {
                    let text = addr.to_string();
                    let back = StrongAddress::parse(&text).unwrap();
                    prop_assert_eq!(&back, &addr);
                    prop_assert_eq!(back.routable(), routable);
                    prop_assert_eq!(back.fingerprint(), &fp);
                    // Case does not matter.
                    let upper = StrongAddress::parse(&text.to_ascii_uppercase()).unwrap();
                    prop_assert_eq!(upper.fingerprint(), &fp);
                }
                // A domain that already has a fingerprint label is ambiguous: refused.
                Err(AddressError::SeveralFingerprints) => prop_assert!(domain
                    .split('.')
                    .any(|l| l.starts_with("xx--") || l.starts_with("mm--"))),
                // Otherwise only a UDF too long for a 63-octet label may be refused.
                Err(e) => prop_assert_eq!(e, AddressError::LabelTooLong),
            }
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,300}") {
            let _ = StrongAddress::parse(&text);
        }
    }
}
