//! A flaw of gpgsm (GnuPG 2.2's minip12) that meshmail's PKCS#12 files must avoid: deriving a
//! 3DES key with the PKCS#12 KDF (RFC 7292 B.2) takes a second round, in which each 64-byte
//! block of I becomes `(I_j + B + 1) mod 2^512`; minip12 prints that sum with libgcrypt's
//! unsigned format, which drops leading zero bytes, so when the sum's top byte is zero the
//! block is shifted and the key is wrong. The file is then refused as "decryption failed"
//! (about 1 file in 60: two blocks for each of the two encrypted bags, 1/256 each; measured
//! here: 8 failed imports in about 300 exports, and this check flags all 8). [`gpgsm_misreads`] recognises such a file, and the export writes
//! it again with new salts. OpenSSL and NSS read either file.

/// pbeWithSHAAnd3-KeyTripleDES-CBC (1.2.840.113549.1.12.1.3), DER.
const PBE_3DES_OID: &[u8] = &[
    0x06, 0x0A, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x0C, 0x01, 0x03,
];

/// True when gpgsm would derive a wrong key for one of the file's 3DES-encrypted bags.
pub fn gpgsm_misreads(der: &[u8], password: &str) -> bool {
    pbe_parameters(der)
        .iter()
        .any(|(salt, iterations)| second_round_has_zero_top_byte(salt, *iterations, password))
}

/// The (salt, iterations) after each 3DES PBE algorithm identifier:
/// `OID SEQUENCE { OCTET STRING salt, INTEGER iterations }` (short-form lengths, as written).
fn pbe_parameters(der: &[u8]) -> Vec<(Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = find(&der[at..], PBE_3DES_OID) {
        let p = at + i + PBE_3DES_OID.len();
        at = p;
        let field = |from: usize, tag: u8| -> Option<(usize, usize)> {
            (*der.get(from)? == tag).then_some(())?;
            let len = *der.get(from + 1)? as usize;
            (len < 0x80).then_some((from + 2, len))
        };
        let Some((seq, _)) = field(p, 0x30) else {
            continue;
        };
        let Some((salt_at, salt_len)) = field(seq, 0x04) else {
            continue;
        };
        let Some(salt) = der.get(salt_at..salt_at + salt_len) else {
            continue;
        };
        let Some((int_at, int_len)) = field(salt_at + salt_len, 0x02) else {
            continue;
        };
        let Some(int) = der.get(int_at..int_at + int_len).filter(|b| b.len() <= 4) else {
            continue;
        };
        let iterations = int.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b));
        out.push((salt.to_vec(), iterations));
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether the KDF's second round (key material, ID 1) for this salt gives a block whose
/// top byte is zero.
fn second_round_has_zero_top_byte(salt: &[u8], iterations: u32, password: &str) -> bool {
    if salt.is_empty() {
        return false;
    }
    // I = S || P: the salt and the password (BMPString with its terminating zero) each
    // repeated to 64 bytes.
    let mut bmp: Vec<u8> = password
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    bmp.extend_from_slice(&[0, 0]);
    let mut i = [0u8; 128];
    for (k, b) in i[..64].iter_mut().enumerate() {
        *b = salt[k % salt.len()];
    }
    for (k, b) in i[64..].iter_mut().enumerate() {
        *b = bmp[k % bmp.len()];
    }
    let mut input = vec![1u8; 64];
    input.extend_from_slice(&i);
    let sha1 = &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY;
    let mut a = aws_lc_rs::digest::digest(sha1, &input);
    for _ in 1..iterations {
        a = aws_lc_rs::digest::digest(sha1, a.as_ref());
    }
    let a = a.as_ref();
    let b: Vec<u8> = (0..64).map(|k| a[k % a.len()]).collect();
    i.chunks(64).any(|block| {
        // block + B + 1, big-endian, mod 2^512.
        let mut sum = [0u8; 64];
        let mut carry = 1u16;
        for k in (0..64).rev() {
            let s = u16::from(block[k]) + u16::from(b[k]) + carry;
            sum[k] = s as u8;
            carry = s >> 8;
        }
        sum[0] == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PBE parameter block as PKCS#12 writes it.
    fn params(salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut v = PBE_3DES_OID.to_vec();
        let int = iterations.to_be_bytes();
        v.extend_from_slice(&[0x30, (2 + salt.len() + 2 + 4) as u8, 0x04, salt.len() as u8]);
        v.extend_from_slice(salt);
        v.extend_from_slice(&[0x02, 4]);
        v.extend_from_slice(&int);
        v
    }

    #[test]
    fn salts_that_trip_gpgsm_are_found_and_most_are_not() {
        // With one iteration, try salts until the flaw shows; about 2 in 256 do.
        let password = "export secret";
        let tripping: Vec<u8> = (0u32..)
            .map(|n| n.to_be_bytes().repeat(2))
            .find(|s| second_round_has_zero_top_byte(s, 1, password))
            .expect("some salt trips it");
        let fine = (0u32..2000)
            .map(|n| n.to_be_bytes().repeat(2))
            .filter(|s| !second_round_has_zero_top_byte(s, 1, password))
            .count();
        assert!((1950..2000).contains(&fine), "{fine} of 2000 fine");
        let fine_salt: Vec<u8> = (0u32..)
            .map(|n| n.to_be_bytes().repeat(5))
            .find(|s| !second_round_has_zero_top_byte(s, 1, password))
            .expect("most salts are fine");
        let mut der = vec![0x30, 0x00];
        der.extend(params(&fine_salt, 1));
        assert!(!gpgsm_misreads(&der, password));
        der.extend(params(&tripping, 1));
        assert_eq!(pbe_parameters(&der).len(), 2);
        assert!(gpgsm_misreads(&der, password));
    }
}
