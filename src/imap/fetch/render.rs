//! The FETCH response of an encrypted message, written from its decrypted view: every item
//! that depends on content from the view, the others as the server sent them.

use super::Passthrough;
use crate::imap::view::View;
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::fetch::{MessageDataItemName, Part, Section};

/// The FETCH response for an encrypted message, from its view.
pub fn render_view(
    seq: u32,
    passthrough: Passthrough,
    requested: &[MessageDataItemName<'static>],
    view: &View,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(view.message().len() + 256);
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
    // Dovecot's order: UID, then the buffered items in request order (FLAGS, RFC822.SIZE,
    // INTERNALDATE, MODSEQ), a FLAGS the server added last among them, then the streamed
    // items in request order. Content-independent items are the server's bytes.
    let mut items = passthrough;
    let take = |items: &mut Passthrough, name: &MessageDataItemName<'static>, out: &mut Vec<u8>| {
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
                out.extend_from_slice(view.body());
            }
            N::BodyStructure => {
                sep(&mut out);
                out.extend_from_slice(b"BODYSTRUCTURE ");
                out.extend_from_slice(view.bodystructure());
            }
            N::Envelope => {
                sep(&mut out);
                out.extend_from_slice(b"ENVELOPE ");
                out.extend_from_slice(view.envelope());
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
