//! FETCH through the decrypted view: which client FETCHes need it, what is asked of the
//! upstream instead (the same items plus UID and BODYSTRUCTURE, to tell encrypted messages
//! apart), and how an upstream FETCH response is answered: unencrypted messages as the server
//! sent them, encrypted ones from the view.

use super::view::View;
use imap_codec::encode::Encoder;
use imap_codec::imap_types::body::{BodyStructure, SpecificFields};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{AString, Vec1};
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Part, Section,
};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::imap_types::IntoStatic;
use imap_codec::ResponseCodec;
use std::num::NonZeroU32;

/// A client FETCH that needs the view for encrypted messages.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// The items the client asked for (macros expanded).
    pub requested: Vec<MessageDataItemName<'static>>,
    /// UID and BODYSTRUCTURE were added for classification and are removed from answers.
    pub added_uid: bool,
    pub added_bodystructure: bool,
    /// The command to send upstream instead.
    pub upstream: Command<'static>,
}

/// Items whose value depends on the message's content (and so differ in the view).
fn needs_view(name: &MessageDataItemName) -> bool {
    use MessageDataItemName as N;
    matches!(
        name,
        N::Body
            | N::BodyExt { .. }
            | N::BodyStructure
            | N::Envelope
            | N::Rfc822
            | N::Rfc822Header
            | N::Rfc822Size
            | N::Rfc822Text
            | N::Binary { .. }
            | N::BinarySize { .. }
    )
}

/// Plans a FETCH / UID FETCH, or `None` when no requested item depends on the content (FLAGS,
/// UID, INTERNALDATE, MODSEQ only): then it is relayed untouched.
pub fn plan(command: &Command<'_>) -> Option<FetchPlan> {
    let CommandBody::Fetch {
        sequence_set,
        macro_or_item_names,
        uid,
        modifiers,
    } = &command.body
    else {
        return None;
    };
    let requested: Vec<MessageDataItemName<'static>> = match macro_or_item_names {
        MacroOrMessageDataItemNames::Macro(m) => {
            m.expand().into_iter().map(|n| n.into_static()).collect()
        }
        MacroOrMessageDataItemNames::MessageDataItemNames(v) => {
            v.iter().cloned().map(|n| n.into_static()).collect()
        }
    };
    if !requested.iter().any(needs_view) {
        return None;
    }
    let mut upstream_items = requested.clone();
    // A UID FETCH answers with UIDs anyway.
    let added_uid = !*uid && !upstream_items.contains(&MessageDataItemName::Uid);
    if added_uid {
        upstream_items.push(MessageDataItemName::Uid);
    }
    let added_bodystructure = !upstream_items.contains(&MessageDataItemName::BodyStructure);
    if added_bodystructure {
        upstream_items.push(MessageDataItemName::BodyStructure);
    }
    let upstream = Command {
        tag: command.tag.clone().into_static(),
        body: CommandBody::Fetch {
            sequence_set: sequence_set.clone(),
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(upstream_items),
            uid: *uid,
            modifiers: modifiers.clone(),
        },
    };
    Some(FetchPlan {
        requested,
        added_uid,
        added_bodystructure,
        upstream,
    })
}

impl FetchPlan {
    /// True when no item sets \Seen (every BODY[…] is PEEK, no RFC822 or RFC822.TEXT).
    pub fn peek_only(&self) -> bool {
        !self.requested.iter().any(|n| match n {
            MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text => true,
            MessageDataItemName::BodyExt { peek, .. } => !peek,
            _ => false,
        })
    }

    /// True when an item needs the message body (not only what the index keeps: size,
    /// structure, envelope, the top-level header).
    pub fn needs_body(&self) -> bool {
        self.requested.iter().any(|n| match n {
            MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text => true,
            MessageDataItemName::BodyExt { section, .. } => !matches!(
                section,
                Some(Section::Header(None))
                    | Some(Section::HeaderFields(None, _))
                    | Some(Section::HeaderFieldsNot(None, _))
            ),
            _ => false,
        })
    }
}

/// True when a BINARY item is asked for: meshmail does not offer BINARY, and the upstream's
/// answer would be computed from ciphertext.
pub fn asks_binary(plan: &FetchPlan) -> bool {
    plan.requested.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }
        )
    })
}

/// What meshmail learns from one upstream FETCH response.
pub struct UpstreamFetch {
    pub seq: NonZeroU32,
    pub uid: Option<NonZeroU32>,
    pub encrypted: bool,
    /// The whole message, when the response carried it (`BODY[]` or `RFC822`).
    pub full_message: Option<Vec<u8>>,
    /// Items that do not depend on content (UID, FLAGS, INTERNALDATE, MODSEQ).
    pub passthrough: Vec<MessageDataItem<'static>>,
    /// The response without the items meshmail added, for an unencrypted message.
    pub stripped: Option<Vec<MessageDataItem<'static>>>,
    /// Only FLAGS (with UID or MODSEQ): a flag update, possibly unsolicited (another client
    /// changed the flags).
    pub flags_only: bool,
}

/// Parses an untagged FETCH response; `None` when the bytes are not one.
pub fn parse_response(bytes: &[u8], plan: &FetchPlan) -> Option<UpstreamFetch> {
    let (rest, response) =
        imap_codec::decode::Decoder::decode(&ResponseCodec::default(), bytes).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let Response::Data(Data::Fetch { seq, items }) = response else {
        return None;
    };
    let items = items.into_inner();
    let mut out = UpstreamFetch {
        seq,
        uid: None,
        encrypted: false,
        full_message: None,
        passthrough: Vec::new(),
        stripped: None,
        flags_only: items.iter().any(|i| matches!(i, MessageDataItem::Flags(_)))
            && items.iter().all(|i| {
                matches!(
                    i,
                    MessageDataItem::Flags(_)
                        | MessageDataItem::Uid(_)
                        | MessageDataItem::ModSeq(_)
                )
            }),
    };
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        match &item {
            MessageDataItem::Uid(u) => {
                out.uid = Some(*u);
                out.passthrough.push(item.clone().into_static());
                if plan.added_uid {
                    continue;
                }
            }
            MessageDataItem::BodyStructure(bs) => {
                out.encrypted = is_encrypted(bs);
                if plan.added_bodystructure {
                    continue;
                }
            }
            MessageDataItem::Flags(_) | MessageDataItem::InternalDate(_) => {
                out.passthrough.push(item.clone().into_static())
            }
            MessageDataItem::ModSeq(_) => out.passthrough.push(item.clone().into_static()),
            MessageDataItem::BodyExt {
                section: None,
                origin: None,
                data,
            }
            | MessageDataItem::Rfc822(data) => {
                if let Some(d) = &data.0 {
                    out.full_message = Some(d.as_ref().to_vec());
                }
            }
            _ => {}
        }
        kept.push(item.into_static());
    }
    if plan.added_uid || plan.added_bodystructure {
        out.stripped = Some(kept);
    }
    Some(out)
}

/// True for the encrypted forms meshmail decrypts: `multipart/encrypted` with the PGP/MIME
/// protocol, and `application/(x-)pkcs7-mime` with `smime-type` enveloped-data or
/// authEnveloped-data.
pub fn is_encrypted(bs: &BodyStructure) -> bool {
    let eq = |a: &[u8], b: &str| a.eq_ignore_ascii_case(b.as_bytes());
    match bs {
        BodyStructure::Multi {
            subtype,
            extension_data,
            ..
        } => {
            eq(subtype.as_ref(), "encrypted")
                && extension_data.as_ref().is_some_and(|x| {
                    x.parameter_list.iter().any(|(k, v)| {
                        eq(k.as_ref(), "protocol") && eq(v.as_ref(), "application/pgp-encrypted")
                    })
                })
        }
        BodyStructure::Single { body, .. } => {
            let SpecificFields::Basic { r#type, subtype } = &body.specific else {
                return false;
            };
            eq(r#type.as_ref(), "application")
                && (eq(subtype.as_ref(), "pkcs7-mime") || eq(subtype.as_ref(), "x-pkcs7-mime"))
                && body.basic.parameter_list.iter().any(|(k, v)| {
                    eq(k.as_ref(), "smime-type")
                        && (eq(v.as_ref(), "enveloped-data")
                            || eq(v.as_ref(), "authEnveloped-data"))
                })
        }
    }
}

/// Re-encodes an unencrypted message's response without the items meshmail added.
pub fn encode_items(seq: NonZeroU32, items: Vec<MessageDataItem<'static>>) -> Vec<u8> {
    match Vec1::try_from(items) {
        Ok(items) => ResponseCodec::default()
            .encode(&Response::Data(Data::Fetch { seq, items }))
            .dump(),
        // Nothing left to say about this message (only added items were returned).
        Err(_) => Vec::new(),
    }
}

/// Removes the named items (e.g. `UID`, `BODYSTRUCTURE`) from a raw `* n FETCH (…)` response,
/// leaving every other byte as the server sent it. `None` when the response cannot be read.
pub fn strip_items(raw: &[u8], names: &[&str]) -> Option<Vec<u8>> {
    let open = raw.iter().position(|&b| b == b'(')?;
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut i = open + 1;
    loop {
        while raw.get(i) == Some(&b' ') {
            i += 1;
        }
        if *raw.get(i)? == b')' {
            break;
        }
        let start = i;
        // The item name, with its section and partial (`BODY[HEADER.FIELDS (A B)]<0>`).
        let mut depth = 0usize;
        while let Some(&b) = raw.get(i) {
            match b {
                b'[' => depth += 1,
                b']' => depth = depth.saturating_sub(1),
                b' ' | b')' if depth == 0 => break,
                _ => {}
            }
            i += 1;
        }
        let name = std::str::from_utf8(&raw[start..i])
            .ok()?
            .to_ascii_uppercase();
        if raw.get(i) != Some(&b' ') {
            return None;
        }
        i = skip_value(raw, i + 1)?;
        if names.iter().any(|n| *n == name) {
            spans.push((start, i));
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    for (start, end) in spans {
        // Take the space before the item with it (or after it, for the first item).
        let (s, e) = if raw[start - 1] == b' ' {
            (start - 1, end)
        } else if raw.get(end) == Some(&b' ') {
            (start, end + 1)
        } else {
            (start, end)
        };
        out.extend_from_slice(&raw[at..s]);
        at = e;
    }
    out.extend_from_slice(&raw[at..]);
    Some(out)
}

/// The end of one IMAP value starting at `i`: a list, quoted string, literal or atom.
fn skip_value(raw: &[u8], mut i: usize) -> Option<usize> {
    match raw.get(i)? {
        b'(' => {
            i += 1;
            loop {
                while raw.get(i) == Some(&b' ') {
                    i += 1;
                }
                if *raw.get(i)? == b')' {
                    return Some(i + 1);
                }
                i = skip_value(raw, i)?;
            }
        }
        b'"' => {
            i += 1;
            loop {
                match raw.get(i)? {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
        }
        b'{' => {
            let close = i + raw[i..].iter().position(|&b| b == b'}')?;
            let len: usize = std::str::from_utf8(&raw[i + 1..close])
                .ok()?
                .trim_end_matches('+')
                .parse()
                .ok()?;
            let data = close + 3;
            (data + len <= raw.len()).then_some(data + len)
        }
        _ => {
            while let Some(&b) = raw.get(i) {
                if b == b' ' || b == b')' {
                    break;
                }
                i += 1;
            }
            Some(i)
        }
    }
}

/// The FETCH response for an encrypted message, from its view.
pub fn render_view(
    seq: NonZeroU32,
    passthrough: Vec<MessageDataItem<'static>>,
    requested: &[MessageDataItemName<'static>],
    view: &View,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(view.message().len() + 256);
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
    // Dovecot's order: UID, then the buffered items in request order (FLAGS, RFC822.SIZE,
    // INTERNALDATE, MODSEQ), a FLAGS the server added last among them, then the streamed
    // items in request order. Content-independent items are the server's, encoded by
    // imap-codec.
    let mut items: Vec<(MessageDataItemName<'static>, Vec<u8>)> = passthrough
        .into_iter()
        .map(|item| {
            let name = match &item {
                MessageDataItem::Uid(_) => MessageDataItemName::Uid,
                MessageDataItem::Flags(_) => MessageDataItemName::Flags,
                MessageDataItem::InternalDate(_) => MessageDataItemName::InternalDate,
                _ => MessageDataItemName::ModSeq,
            };
            let encoded = encode_items(seq, vec![item]);
            // "* n FETCH (ITEM)\r\n" → "ITEM"
            let open = encoded.iter().position(|&b| b == b'(').map_or(0, |p| p + 1);
            let close = encoded.len().saturating_sub(3).max(open);
            (name, encoded[open..close].to_vec())
        })
        .collect();
    let take = |items: &mut Vec<(MessageDataItemName<'static>, Vec<u8>)>,
                name: &MessageDataItemName<'static>,
                out: &mut Vec<u8>| {
        if let Some(i) = items.iter().position(|(n, _)| n == name) {
            let (_, bytes) = items.remove(i);
            sep(out);
            out.extend_from_slice(&bytes);
        }
    };
    take(&mut items, &MessageDataItemName::Uid, &mut out);
    for name in requested {
        match name {
            MessageDataItemName::Rfc822Size => {
                sep(&mut out);
                out.extend_from_slice(format!("RFC822.SIZE {}", view.size()).as_bytes());
            }
            MessageDataItemName::Flags
            | MessageDataItemName::InternalDate
            | MessageDataItemName::ModSeq => take(&mut items, name, &mut out),
            _ => {}
        }
    }
    take(&mut items, &MessageDataItemName::Flags, &mut out);
    take(&mut items, &MessageDataItemName::ModSeq, &mut out);
    take(&mut items, &MessageDataItemName::InternalDate, &mut out);
    let streamed = requested
        .iter()
        .filter(|n| **n != MessageDataItemName::Rfc822Size);
    for name in streamed {
        use MessageDataItemName as N;
        match name {
            N::Body => {
                sep(&mut out);
                out.extend_from_slice(b"BODY ");
                out.extend_from_slice(view.body().as_bytes());
            }
            N::BodyStructure => {
                sep(&mut out);
                out.extend_from_slice(b"BODYSTRUCTURE ");
                out.extend_from_slice(view.bodystructure().as_bytes());
            }
            N::Envelope => {
                sep(&mut out);
                out.extend_from_slice(b"ENVELOPE ");
                out.extend_from_slice(view.envelope().as_bytes());
            }
            N::Rfc822 => {
                sep(&mut out);
                out.extend_from_slice(b"RFC822 ");
                literal(&mut out, view.message());
            }
            N::Rfc822Header => {
                sep(&mut out);
                out.extend_from_slice(b"RFC822.HEADER ");
                literal(&mut out, &view.section(Some(&Section::Header(None))));
            }
            N::Rfc822Text => {
                sep(&mut out);
                out.extend_from_slice(b"RFC822.TEXT ");
                literal(&mut out, &view.section(Some(&Section::Text(None))));
            }
            N::BodyExt {
                section, partial, ..
            } => {
                sep(&mut out);
                out.extend_from_slice(b"BODY[");
                if let Some(s) = section {
                    section_label(&mut out, s);
                }
                out.push(b']');
                let data = view.section(section.as_ref());
                match partial {
                    Some((origin, length)) => {
                        out.extend_from_slice(format!("<{origin}> ").as_bytes());
                        let start = (*origin as usize).min(data.len());
                        let end = start.saturating_add(length.get() as usize).min(data.len());
                        literal(&mut out, &data[start..end]);
                    }
                    None => {
                        out.push(b' ');
                        literal(&mut out, &data);
                    }
                }
            }
            // Content-independent items came from the server above; BINARY is refused earlier.
            _ => {}
        }
    }
    out.extend_from_slice(b")\r\n");
    out
}

/// A space before the next item (none right after the opening parenthesis).
fn sep(out: &mut Vec<u8>) {
    if out.last() != Some(&b'(') {
        out.push(b' ');
    }
}

fn literal(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
}

fn part_label(out: &mut Vec<u8>, part: &Part) {
    let numbers: Vec<String> = part.0.as_ref().iter().map(|n| n.to_string()).collect();
    out.extend_from_slice(numbers.join(".").as_bytes());
}

/// The section as the response names it (`1.2.HEADER.FIELDS (From To)`).
fn section_label(out: &mut Vec<u8>, section: &Section) {
    let with_part = |out: &mut Vec<u8>, part: &Option<Part>, what: &str| {
        if let Some(p) = part {
            part_label(out, p);
            out.push(b'.');
        }
        out.extend_from_slice(what.as_bytes());
    };
    match section {
        Section::Part(p) => part_label(out, p),
        Section::Header(p) => with_part(out, p, "HEADER"),
        Section::Text(p) => with_part(out, p, "TEXT"),
        Section::Mime(p) => {
            part_label(out, p);
            out.extend_from_slice(b".MIME");
        }
        Section::HeaderFields(p, fields) | Section::HeaderFieldsNot(p, fields) => {
            let not = matches!(section, Section::HeaderFieldsNot(..));
            with_part(
                out,
                p,
                if not {
                    "HEADER.FIELDS.NOT ("
                } else {
                    "HEADER.FIELDS ("
                },
            );
            for (i, f) in fields.as_ref().iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                astring(out, f);
            }
            out.push(b')');
        }
    }
}

fn astring(out: &mut Vec<u8>, s: &AString) {
    let bytes: &[u8] = s.as_ref();
    let atom = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(b));
    if atom {
        // Dovecot names the fields in upper case.
        out.extend_from_slice(&bytes.to_ascii_uppercase());
    } else {
        out.push(b'"');
        for b in bytes {
            if *b == b'"' || *b == b'\\' {
                out.push(b'\\');
            }
            out.push(*b);
        }
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::decode::Decoder;
    use imap_codec::CommandCodec;

    fn plan_of(command: &[u8]) -> FetchPlan {
        let (_, c) = CommandCodec::default().decode(command).expect("command");
        plan(&c).expect("a FETCH with content items")
    }

    #[test]
    fn a_flag_update_is_told_apart_from_an_answer_with_content() {
        let p = plan_of(b"a UID FETCH 1:* (BODY.PEEK[])\r\n");
        let update = parse_response(b"* 3 FETCH (UID 7 FLAGS (\\Flagged) MODSEQ (12))\r\n", &p)
            .expect("fetch");
        assert!(update.flags_only);
        let answer =
            parse_response(b"* 3 FETCH (UID 7 FLAGS () BODY[] {3}\r\nabc)\r\n", &p).expect("fetch");
        assert!(!answer.flags_only);
        assert_eq!(answer.full_message.as_deref(), Some(&b"abc"[..]));
        let no_flags = parse_response(b"* 3 FETCH (UID 7)\r\n", &p).expect("fetch");
        assert!(!no_flags.flags_only);
    }
}
