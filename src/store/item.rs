//! The private FETCH item between a device proxy and the store proxy (mesh-formats.md §4):
//! the device asks `UID FETCH <n> (BODY.PEEK[] X-MESH-RECRYPT)`; the store removes the item
//! from the command it sends upstream and adds, for the authenticated device, the partials of
//! the message's PKESKs: `X-MESH-RECRYPT (("<device>" <pkesk index> "<base64 of P_i>") ...)`.
//!
//! Neither imap-codec (the session cores) nor imap-proto (async-imap) parses this item, so it
//! is handled here on raw bytes: [`strip_from_command`] before the command is parsed,
//! [`format`] to append to the response, [`add_to_fetch`] and [`parse`] on the device side.
//!
//! [`partials`] reads the PKESKs from the bytes the mail store returned (never from bytes a
//! client supplied): the first ASCII-armored OpenPGP message of the message, at most
//! [`MAX_PKESKS`] PKESKs, from its first [`ARMOR_PREFIX`] bytes.

use crate::crypto::recrypt::{addressed_to_fingerprint, Partial, RecryptError, StoreShare};
use data_encoding::BASE64;
use sequoia_openpgp as sq;

/// The item's name on the wire.
pub const ITEM: &str = "X-MESH-RECRYPT";
/// PKESKs examined per message.
pub const MAX_PKESKS: usize = 16;
/// Bytes of armour read to find them (16 PKESKs of a few hundred bytes each, in base64).
pub const ARMOR_PREFIX: usize = 16 * 1024;
/// Where the armour may start in the message.
const SEARCH: usize = 256 * 1024;
/// The first bytes of a message that [`partials`] needs (the armour's start within
/// [`SEARCH`], then its header lines and [`ARMOR_PREFIX`] of base64 with their line ends,
/// unless the header lines alone run longer): a store that passes a large message on as it
/// arrives computes the partials from this much.
pub const PREFIX: usize = SEARCH + 2 * ARMOR_PREFIX;

/// What the store answers for one message and one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// One partial per PKESK that may be for the account's key (its index among the PKESKs).
    Partials(Vec<(usize, Partial)>),
    /// No PKESK for the account's key (not encrypted to it, or not OpenPGP at all).
    NotForAccount,
    /// A PKESK's ephemeral key is not a usable point (refused, never computed).
    RefusedPoint,
    /// The device has no (unrevoked) share for the logged-in account.
    Revoked,
}

impl Answer {
    /// A word for logs (never the partials).
    pub fn kind(&self) -> &'static str {
        match self {
            Answer::Partials(_) => "partials",
            Answer::NotForAccount => "not-for-account",
            Answer::RefusedPoint => "refused-point",
            Answer::Revoked => "revoked",
        }
    }
}

/// The name meshmail writes over the item where a client's command names it but may not ask
/// for it: the same length, so nothing else in the command moves, and a FETCH naming it fails
/// at the server as any unknown item would.
const MASK: &[u8] = b"X-MESH-REFUSED";

/// True when `bytes` name the item anywhere, in any case (whole word or not).
pub fn mentions(bytes: &[u8]) -> bool {
    bytes
        .windows(ITEM.len())
        .any(|w| w.eq_ignore_ascii_case(ITEM.as_bytes()))
}

/// `bytes` with every mention of the item (any case) overwritten, so that whatever a client
/// writes, the item itself never reaches the mail store.
pub fn mask(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut at = 0;
    while at + ITEM.len() <= out.len() {
        if out[at..at + ITEM.len()].eq_ignore_ascii_case(ITEM.as_bytes()) {
            out[at..at + ITEM.len()].copy_from_slice(MASK);
            at += ITEM.len();
        } else {
            at += 1;
        }
    }
    out
}

/// `line` (one command line, CRLF included) without the item, when it is a FETCH or UID
/// FETCH whose item list names it; `None` when it does not. A list left empty asks for UID.
pub fn strip_from_command(line: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let upper = text.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_ascii_whitespace().collect();
    let is_fetch =
        matches!(words.get(1..3), Some(["UID", "FETCH"])) || matches!(words.get(1), Some(&"FETCH"));
    if !is_fetch {
        return None;
    }
    let at = find_item(&upper)?;
    let end = at + ITEM.len();
    let before = &text[..at];
    let after = &text[end..];
    // Only the item and one space beside it change; the rest of the line stays as it came.
    let out = match (before.chars().next_back(), after.chars().next()) {
        // The only item of a list, or a bare one: UID is asked for instead.
        (Some('('), Some(')')) | (Some(' '), Some('\r' | '\n') | None) => {
            format!("{before}UID{after}")
        }
        // The first of several: the space after it goes.
        (Some('('), Some(' ')) => format!("{before}{}", &after[1..]),
        // After another item: the space before it goes.
        (Some(' '), _) => format!("{}{after}", &before[..before.len() - 1]),
        _ => return None,
    };
    Some(out.into_bytes())
}

/// `line` (a FETCH or UID FETCH command line as meshmail encoded it, CRLF included) asking
/// for the item as well: a device's own FETCH of whole messages, so the partials come with
/// the ciphertext in one answer. `None` when the line is not of that simple shape (a literal,
/// a single item with modifiers): the device then asks for the partials on its own
/// connection instead.
pub fn add_to_fetch(line: &[u8]) -> Option<Vec<u8>> {
    if mentions(line) {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let body = text.strip_suffix("\r\n")?;
    // Words apart by single spaces only, as meshmail's encoder writes them (the store reads
    // any whitespace as a separator: a tab would make the two read the line differently).
    if body.contains('{') || body.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    // Tag, [UID], FETCH and the sequence set: the items start after them.
    let uid = body.split(' ').nth(1)?.eq_ignore_ascii_case("UID");
    let before = if uid { 4 } else { 3 };
    let words: Vec<&str> = body.splitn(before + 1, ' ').collect();
    let fetch = words.len() == before + 1 && words[before - 2].eq_ignore_ascii_case("FETCH");
    if !fetch || words[..before].iter().any(|w| w.is_empty()) {
        return None;
    }
    let at: usize = words[..before].iter().map(|w| w.len() + 1).sum();
    let (head, items) = body.split_at(at);
    let out = if let Some(list) = items.strip_prefix('(') {
        format!("{head}({ITEM} {list}\r\n")
    } else if !items.is_empty() && !items.contains([' ', '(', ')', '"']) {
        // One bare item and no modifiers (`BODY.PEEK[]`): made a list of two.
        format!("{head}({items} {ITEM})\r\n")
    } else {
        return None;
    };
    Some(out.into_bytes())
}

/// Where the item stands in `upper` as a whole word, after the sequence set.
fn find_item(upper: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = upper[from..].find(ITEM) {
        let at = from + i;
        let before = upper[..at].chars().next_back();
        let after = upper[at + ITEM.len()..].chars().next();
        let boundary_before = matches!(before, Some(' ' | '('));
        let boundary_after = matches!(after, Some(' ' | ')' | '\r' | '\n') | None);
        if boundary_before && boundary_after {
            return Some(at);
        }
        from = at + ITEM.len();
    }
    None
}

/// The item as the store appends it to a FETCH response (` X-MESH-RECRYPT (...)`, a leading
/// space included), for `device`.
pub fn format(device: &str, answer: &Answer) -> String {
    let quoted = quote(device);
    match answer {
        Answer::Partials(list) if !list.is_empty() => {
            let items: Vec<String> = list
                .iter()
                .map(|(i, p)| format!("({quoted} {i} \"{}\")", BASE64.encode(&p.0)))
                .collect();
            format!(" {ITEM} ({})", items.join(" "))
        }
        Answer::Partials(_) | Answer::NotForAccount => format!(" {ITEM} NIL"),
        Answer::RefusedPoint => format!(" {ITEM} \"refused\""),
        Answer::Revoked => format!(" {ITEM} \"revoked\""),
    }
}

/// The partials for `device` in the text of a FETCH response that carries the item.
pub fn parse(response: &str, device: &str) -> Option<Answer> {
    let at = response.find(ITEM)? + ITEM.len();
    let rest = response[at..].trim_start();
    if rest.starts_with("NIL") {
        return Some(Answer::NotForAccount);
    }
    if rest.starts_with("\"refused\"") {
        return Some(Answer::RefusedPoint);
    }
    if rest.starts_with("\"revoked\"") {
        return Some(Answer::Revoked);
    }
    let rest = rest.strip_prefix('(')?;
    let mut list = Vec::new();
    let mut tail = rest;
    while let Some(inner) = tail.strip_prefix('(') {
        let end = inner.find(')')?;
        let mut fields = inner[..end].split(' ');
        let name = unquote(fields.next()?)?;
        let index: usize = fields.next()?.parse().ok()?;
        let b64 = unquote(fields.next()?)?;
        let bytes: [u8; 32] = BASE64.decode(b64.as_bytes()).ok()?.try_into().ok()?;
        if name == device {
            list.push((index, Partial(bytes)));
        }
        tail = inner[end + 1..].trim_start();
        if list.len() > MAX_PKESKS {
            return None;
        }
    }
    tail.starts_with(')').then_some(Answer::Partials(list))
}

fn quote(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' && *c != '(' && *c != ')')
        .collect();
    format!("\"{clean}\"")
}

fn unquote(s: &str) -> Option<&str> {
    s.strip_prefix('"')?.strip_suffix('"')
}

/// The PKESKs at the start of the first ASCII-armored OpenPGP message in `message`, counted
/// as the store counts them (at most [`MAX_PKESKS`]).
pub fn pkesks(message: &[u8]) -> Vec<sq::packet::PKESK> {
    armor_prefix(message)
        .map(|binary| leading_pkesks(&binary))
        .unwrap_or_default()
}

/// The partials of `message` (as the mail store returned it) for the account's encryption
/// subkey `subkey` (its fingerprint: the PKESK names it by key ID), computed with `share`.
pub fn partials(message: &[u8], subkey: &sq::Fingerprint, share: &StoreShare) -> Answer {
    let Some(binary) = armor_prefix(message) else {
        return Answer::NotForAccount;
    };
    let mut out = Vec::new();
    for (index, pkesk) in leading_pkesks(&binary).iter().enumerate() {
        if !addressed_to_fingerprint(pkesk, subkey) {
            continue;
        }
        match share.partial(pkesk) {
            Ok(p) => out.push((index, p)),
            Err(RecryptError::BadPoint) => return Answer::RefusedPoint,
            // Another algorithm, or a PKESK that is not ECDH: not for this key.
            Err(_) => {}
        }
    }
    if out.is_empty() {
        Answer::NotForAccount
    } else {
        Answer::Partials(out)
    }
}

/// The first bytes of the first ASCII-armored OpenPGP message in `message`, decoded.
fn armor_prefix(message: &[u8]) -> Option<Vec<u8>> {
    const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
    let window = &message[..message.len().min(SEARCH)];
    let start = window.windows(BEGIN.len()).position(|w| w == BEGIN)?;
    let block = &message[start..];
    // The armour body starts after the first empty line.
    let body = block
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| block.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))?;
    let mut b64 = Vec::with_capacity(ARMOR_PREFIX);
    for line in block[body..].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"=") || line.starts_with(b"-----") || b64.len() >= ARMOR_PREFIX {
            break;
        }
        b64.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
    }
    b64.truncate(b64.len() / 4 * 4);
    BASE64.decode(&b64).ok()
}

/// The PKESK packets at the start of a (possibly truncated) binary OpenPGP message.
fn leading_pkesks(binary: &[u8]) -> Vec<sq::packet::PKESK> {
    use sq::parse::{PacketParserResult, Parse};
    let mut out = Vec::new();
    let Ok(mut ppr) = sq::parse::PacketParser::from_bytes(binary) else {
        return out;
    };
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            sq::Packet::PKESK(p) => out.push(p.clone()),
            sq::Packet::SKESK(_) => {}
            _ => break,
        }
        if out.len() >= MAX_PKESKS {
            break;
        }
        ppr = match pp.next() {
            Ok((_, next)) => next,
            Err(_) => break,
        };
    }
    out
}

#[cfg(test)]
mod tests;
