//! Shamir secret sharing over the scalar field of Curve25519 (mod ℓ), for the account's recovery
//! shares: a secret scalar is the constant term of a random polynomial of degree `quorum − 1`;
//! share `i` is the polynomial at `x = i`; any `quorum` shares give the secret back by Lagrange
//! interpolation at 0, fewer give nothing about it.
//!
//! A share is printable (`MMRS1-…`): its index, the quorum, a set identifier (a hash of the
//! secret's public point, so shares of different splits are never mixed and a wrong result is
//! recognised), the share in base32 groups, and a checksum against typing errors.

use aws_lc_rs::digest::{digest, SHA256};
use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::scalar::Scalar;
use data_encoding::BASE32_NOPAD;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShamirError {
    #[error("a quorum of 2 to 16 out of at most 16 shares, not {quorum} of {shares}")]
    BadCounts { shares: u8, quorum: u8 },
    #[error("not a recovery share (MMRS1-…)")]
    NotAShare,
    #[error("share {0} has a typing error (its checksum does not match)")]
    Checksum(u8),
    #[error("the shares come from different splits")]
    MixedSets,
    #[error("{have} different shares, {need} needed")]
    TooFew { have: usize, need: u8 },
    #[error("no randomness")]
    Random,
}

/// One share of a split secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    index: u8,
    quorum: u8,
    set: [u8; 4],
    value: Scalar,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Share({} of quorum {}, <secret>)",
            self.index, self.quorum
        )
    }
}

/// The set identifier of a secret: the first bytes of SHA-256 of its public point.
fn set_of(secret: &Scalar) -> [u8; 4] {
    let point = (secret * ED25519_BASEPOINT_TABLE).compress();
    let mut input = b"meshmail-recovery-set".to_vec();
    input.extend_from_slice(point.as_bytes());
    let d = digest(&SHA256, &input);
    [d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]
}

/// A fresh random secret scalar.
pub fn random_secret() -> Result<Zeroizing<Scalar>, ShamirError> {
    let mut wide = Zeroizing::new([0u8; 64]);
    aws_lc_rs::rand::fill(&mut wide[..]).map_err(|_| ShamirError::Random)?;
    Ok(Zeroizing::new(Scalar::from_bytes_mod_order_wide(&wide)))
}

/// Splits `secret` into `shares` shares, any `quorum` of which give it back.
pub fn split(secret: &Scalar, shares: u8, quorum: u8) -> Result<Vec<Share>, ShamirError> {
    if !(2..=16).contains(&quorum) || shares < quorum || shares > 16 {
        return Err(ShamirError::BadCounts { shares, quorum });
    }
    let mut coefficients: Vec<Zeroizing<Scalar>> = vec![Zeroizing::new(*secret)];
    for _ in 1..quorum {
        coefficients.push(random_secret()?);
    }
    let set = set_of(secret);
    Ok((1..=shares)
        .map(|i| {
            // Horner's rule at x = i.
            let x = Scalar::from(u64::from(i));
            let mut y = Scalar::ZERO;
            for c in coefficients.iter().rev() {
                y = y * x + **c;
            }
            Share {
                index: i,
                quorum,
                set,
                value: y,
            }
        })
        .collect())
}

/// The secret back from at least a quorum of shares of one split.
pub fn join(shares: &[Share]) -> Result<Zeroizing<Scalar>, ShamirError> {
    let first = shares
        .first()
        .ok_or(ShamirError::TooFew { have: 0, need: 2 })?;
    if shares
        .iter()
        .any(|s| s.set != first.set || s.quorum != first.quorum)
    {
        return Err(ShamirError::MixedSets);
    }
    let mut distinct: Vec<&Share> = Vec::new();
    for s in shares {
        if !distinct.iter().any(|d| d.index == s.index) {
            distinct.push(s);
        }
    }
    if distinct.len() < usize::from(first.quorum) {
        return Err(ShamirError::TooFew {
            have: distinct.len(),
            need: first.quorum,
        });
    }
    let used = &distinct[..usize::from(first.quorum)];
    let mut secret = Zeroizing::new(Scalar::ZERO);
    for (j, sj) in used.iter().enumerate() {
        let xj = Scalar::from(u64::from(sj.index));
        let mut weight = Scalar::ONE;
        for (m, sm) in used.iter().enumerate() {
            if m != j {
                let xm = Scalar::from(u64::from(sm.index));
                weight *= xm * (xm - xj).invert();
            }
        }
        *secret += sj.value * weight;
    }
    if set_of(&secret) != first.set {
        return Err(ShamirError::MixedSets);
    }
    Ok(secret)
}

impl Share {
    pub fn index(&self) -> u8 {
        self.index
    }

    pub fn quorum(&self) -> u8 {
        self.quorum
    }

    /// `MMRS1-<index>-<quorum>-<set>-<share in groups of 4>-<checksum>`: base32, no padding.
    pub fn to_printable(&self) -> Zeroizing<String> {
        let mut body = Zeroizing::new(vec![self.index, self.quorum]);
        body.extend_from_slice(&self.set);
        body.extend_from_slice(self.value.as_bytes());
        let check = checksum(&body);
        let value = Zeroizing::new(BASE32_NOPAD.encode(self.value.as_bytes()));
        let groups: Vec<&str> = value
            .as_bytes()
            .chunks(4)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        Zeroizing::new(format!(
            "MMRS1-{}-{}-{}-{}-{}",
            self.index,
            self.quorum,
            BASE32_NOPAD.encode(&self.set),
            groups.join("-"),
            BASE32_NOPAD.encode(&check)
        ))
    }

    /// Reads a printable share; case, spaces and line breaks do not matter.
    pub fn parse(text: &str) -> Result<Share, ShamirError> {
        let compact: Zeroizing<String> = Zeroizing::new(
            text.chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_uppercase(),
        );
        let mut parts = compact.split('-');
        if parts.next() != Some("MMRS1") {
            return Err(ShamirError::NotAShare);
        }
        let index: u8 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or(ShamirError::NotAShare)?;
        let quorum: u8 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or(ShamirError::NotAShare)?;
        let set: [u8; 4] = parts
            .next()
            .and_then(|p| BASE32_NOPAD.decode(p.as_bytes()).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or(ShamirError::NotAShare)?;
        let rest: Vec<&str> = parts.collect();
        let (check, groups) = rest.split_last().ok_or(ShamirError::NotAShare)?;
        let value = Zeroizing::new(
            BASE32_NOPAD
                .decode(groups.concat().as_bytes())
                .map_err(|_| ShamirError::NotAShare)?,
        );
        let value: [u8; 32] = value[..].try_into().map_err(|_| ShamirError::NotAShare)?;
        let mut body = Zeroizing::new(vec![index, quorum]);
        body.extend_from_slice(&set);
        body.extend_from_slice(&value);
        let want = BASE32_NOPAD
            .decode(check.as_bytes())
            .map_err(|_| ShamirError::NotAShare)?;
        if want != checksum(&body) {
            return Err(ShamirError::Checksum(index));
        }
        let value = Option::<Scalar>::from(Scalar::from_canonical_bytes(value))
            .ok_or(ShamirError::Checksum(index))?;
        if index == 0 || !(2..=16).contains(&quorum) {
            return Err(ShamirError::NotAShare);
        }
        Ok(Share {
            index,
            quorum,
            set,
            value,
        })
    }
}

fn checksum(body: &[u8]) -> [u8; 5] {
    let d = digest(&SHA256, body);
    let mut out = [0u8; 5];
    out.copy_from_slice(&d.as_ref()[..5]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_quorum_of_shares_gives_the_secret_and_fewer_do_not() {
        let secret = random_secret().unwrap();
        let shares = split(&secret, 5, 3).unwrap();
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let got =
                        join(&[shares[a].clone(), shares[c].clone(), shares[b].clone()]).unwrap();
                    assert_eq!(*got, *secret);
                }
                let two = join(&[shares[a].clone(), shares[b].clone()]);
                assert_eq!(two.unwrap_err(), ShamirError::TooFew { have: 2, need: 3 });
            }
        }
        // A repeated share does not count twice.
        let dup = join(&[shares[0].clone(), shares[0].clone(), shares[1].clone()]);
        assert!(matches!(dup, Err(ShamirError::TooFew { have: 2, .. })));
    }

    #[test]
    fn printable_shares_round_trip_and_catch_typing_errors_and_mixed_sets() {
        let secret = random_secret().unwrap();
        let shares = split(&secret, 3, 2).unwrap();
        let texts: Vec<String> = shares
            .iter()
            .map(|s| s.to_printable().to_string())
            .collect();
        assert!(texts[0].starts_with("MMRS1-1-2-"));
        let back: Vec<Share> = texts
            .iter()
            .map(|t| Share::parse(&t.to_lowercase().replace('-', "-\n ")).unwrap())
            .collect();
        assert_eq!(back, shares);
        assert_eq!(*join(&back[1..]).unwrap(), *secret);
        // One character changed in the share part.
        let mut typo = texts[1].clone().into_bytes();
        let at = typo.len() - 12;
        typo[at] = if typo[at] == b'A' { b'B' } else { b'A' };
        let typo = String::from_utf8(typo).unwrap();
        assert!(matches!(
            Share::parse(&typo),
            Err(ShamirError::Checksum(2)) | Err(ShamirError::NotAShare)
        ));
        // Shares of another split of another secret are refused.
        let other = split(&random_secret().unwrap(), 3, 2).unwrap();
        assert_eq!(
            join(&[shares[0].clone(), other[1].clone()]).unwrap_err(),
            ShamirError::MixedSets
        );
        assert_eq!(Share::parse("hello").unwrap_err(), ShamirError::NotAShare);
        assert!(
            !format!("{:?}", shares[0]).contains(&texts[0][12..20]),
            "never printed"
        );
        assert!(
            split(&secret, 3, 4).is_err()
                && split(&secret, 17, 2).is_err()
                && split(&secret, 3, 1).is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in "[ -~\\n]{0,200}") {
            let _ = Share::parse(&text);
        }
    }
}
