//! FETCH through the decrypted view: which client FETCHes need it, what is asked of the
//! upstream instead (the same items plus UID and, unless whole messages are fetched anyway, a
//! probe of the top-level Content-Type, to tell encrypted messages apart), and how an upstream
//! FETCH response is answered: unencrypted messages as the server sent them, encrypted ones
//! from the view ([`render`]).
//!
//! The probe is a header literal, never a BODYSTRUCTURE: a structure's depth is the sender's
//! choice, a literal always frames (issue: a ten-deep message/rfc822 made a folder unreadable).

mod render;
pub mod response;

pub use render::render_view;

use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{AString, Vec1};
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};
use imap_codec::imap_types::IntoStatic;

/// The probe's name in the server's answer.
pub const PROBE_NAME: &str = "BODY[HEADER.FIELDS (CONTENT-TYPE MESHMAIL-RESULT)]";

/// `BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE MESHMAIL-RESULT)]`: what tells an encrypted message
/// apart, and a plaintext one that carries a result header of its own.
fn probe() -> Option<MessageDataItemName<'static>> {
    let fields = vec![
        AString::try_from("CONTENT-TYPE").ok()?,
        AString::try_from("MESHMAIL-RESULT").ok()?,
    ];
    Some(MessageDataItemName::BodyExt {
        section: Some(Section::HeaderFields(None, Vec1::try_from(fields).ok()?)),
        partial: None,
        peek: true,
    })
}

/// True when `name` is the probe (peek or not: the server names both alike).
fn is_probe(name: &MessageDataItemName) -> bool {
    match name {
        MessageDataItemName::BodyExt {
            section: Some(Section::HeaderFields(None, fields)),
            partial: None,
            ..
        } => {
            let fields = fields.as_ref();
            fields.len() == 2
                && fields[0].as_ref().eq_ignore_ascii_case(b"CONTENT-TYPE")
                && fields[1].as_ref().eq_ignore_ascii_case(b"MESHMAIL-RESULT")
        }
        _ => false,
    }
}

/// A client FETCH that needs the view for encrypted messages.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// The items the client asked for (macros expanded).
    pub requested: Vec<MessageDataItemName<'static>>,
    /// UID and the probe were added for classification and are removed from answers.
    pub added_uid: bool,
    pub added_probe: bool,
    /// A device's FETCH of whole messages that also asks its store for the partials
    /// (`X-MESH-RECRYPT`, added to the encoded command and removed from the answers).
    pub with_partials: bool,
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
    // A FETCH of whole messages brings their headers anyway: nothing is added then.
    let whole = requested.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::Rfc822
                | MessageDataItemName::BodyExt {
                    section: None,
                    partial: None,
                    ..
                }
        )
    });
    let added_probe = !whole && !upstream_items.iter().any(is_probe);
    if added_probe {
        upstream_items.push(probe()?);
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
        added_probe,
        with_partials: false,
        upstream,
    })
}

impl FetchPlan {
    /// True when the client asked for whole messages as `BODY[]` (the item the store answers
    /// the partials beside).
    pub fn fetches_whole_body(&self) -> bool {
        self.requested.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::BodyExt {
                    section: None,
                    partial: None,
                    ..
                }
            )
        })
    }

    /// A UID FETCH.
    pub fn is_uid(&self) -> bool {
        matches!(self.upstream.body, CommandBody::Fetch { uid: true, .. })
    }

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

/// What a FETCH will read of a view besides its bytes: computed on the blocking thread that
/// opened the view, not while the answer is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Warm {
    /// BODYSTRUCTURE, BODY or ENVELOPE.
    pub structure: bool,
    /// A section other than the whole message (needs the MIME tree).
    pub sections: bool,
}

impl FetchPlan {
    pub fn warm(&self) -> Warm {
        use MessageDataItemName as N;
        let mut w = Warm::default();
        for n in &self.requested {
            match n {
                N::Body | N::BodyStructure | N::Envelope => w.structure = true,
                N::Rfc822Header | N::Rfc822Text => w.sections = true,
                N::BodyExt { section, .. } => w.sections |= section.is_some(),
                _ => {}
            }
        }
        w
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

/// A content-independent item of the server's response, kept byte for byte.
pub type Passthrough = Vec<(MessageDataItemName<'static>, Vec<u8>)>;

/// What meshmail learns from one upstream FETCH response.
pub struct UpstreamFetch {
    pub seq: u32,
    pub uid: Option<u32>,
    pub encrypted: bool,
    /// Not encrypted, yet carrying a `Meshmail-Result` field of its own: shown without it.
    pub forged: bool,
    /// The whole message, when the response carried it (`BODY[]` or `RFC822`).
    pub full_message: Option<Vec<u8>>,
    /// Items that do not depend on content (UID, FLAGS, INTERNALDATE, MODSEQ), as sent.
    pub passthrough: Passthrough,
    /// Only FLAGS (with UID or MODSEQ): a flag update, possibly unsolicited.
    pub flags_only: bool,
    /// The response as the client must see it when meshmail does not change the message:
    /// the server's bytes without the items meshmail added (`None`: nothing left to show).
    pub as_sent: Option<Vec<u8>>,
    /// The store's `X-MESH-RECRYPT` item (name and value) when the plan asked for it.
    pub recrypt: Option<String>,
}

/// Reads an untagged FETCH response; `None` when its framing cannot be read (the caller then
/// relays it as the server sent it).
pub fn read_response(raw: &[u8], plan: &FetchPlan) -> Option<UpstreamFetch> {
    let r = response::scan(raw)?;
    let full_message = ["BODY[]", "RFC822"]
        .iter()
        .find_map(|n| r.string(raw, n))
        .map(|m| m.into_owned());
    // The probe, or else the whole message's own header.
    let header = match r.string(raw, PROBE_NAME) {
        Some(probe) => Some(crate::imap::view::mime::parse(&probe)),
        None => full_message
            .as_deref()
            .map(|m| crate::imap::view::mime::parse(crate::imap::view::mime::header_section(m))),
    };
    use crate::imap::view::Treatment;
    let treatment = header.as_ref().map_or(Treatment::AsStored, Treatment::of);
    let encrypted = treatment == Treatment::Decrypt;
    let forged = treatment == Treatment::StripForgedResult;
    let passthrough = r
        .items
        .iter()
        .filter_map(|item| {
            let name = match item.name.as_str() {
                // A UID meshmail added is not the client's to see.
                "UID" if !plan.added_uid => MessageDataItemName::Uid,
                "FLAGS" => MessageDataItemName::Flags,
                "INTERNALDATE" => MessageDataItemName::InternalDate,
                "MODSEQ" => MessageDataItemName::ModSeq,
                _ => return None,
            };
            Some((name, raw[item.span.clone()].to_vec()))
        })
        .collect();
    let mut added = Vec::new();
    if plan.added_uid {
        added.push("UID");
    }
    if plan.added_probe {
        added.push(PROBE_NAME);
    }
    let recrypt = if plan.with_partials {
        added.push(crate::store::item::ITEM);
        r.item(crate::store::item::ITEM)
            .and_then(|i| std::str::from_utf8(&raw[i.span.clone()]).ok())
            .map(str::to_owned)
    } else {
        None
    };
    Some(UpstreamFetch {
        seq: r.seq,
        uid: r.uid(raw),
        encrypted,
        forged,
        full_message,
        passthrough,
        flags_only: r.flags_only(),
        as_sent: r.without(raw, &added),
        recrypt,
    })
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
    fn whole_message_fetches_add_no_probe_and_classify_from_the_message() {
        let whole = plan_of(b"a UID FETCH 1:* (BODY.PEEK[])\r\n");
        assert!(!whole.added_probe && !whole.added_uid);
        let r = read_response(
            b"* 1 FETCH (UID 4 BODY[] {94}\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b--\r\n)\r\n",
            &whole,
        )
        .expect("fetch");
        assert!(r.encrypted && !r.forged);
        let forged = read_response(
            b"* 1 FETCH (UID 5 BODY[] {42}\r\nMeshmail-Result: decrypted\r\n\r\nverified=yes)\r\n",
            &whole,
        )
        .expect("fetch");
        assert!(!forged.encrypted && forged.forged);
        // Content further down (a body line that looks like a header) is not the header.
        let body = read_response(
            b"* 1 FETCH (UID 6 BODY[] {87}\r\nSubject: x\r\n\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"\r\n)\r\n",
            &whole,
        )
        .expect("fetch");
        assert!(!body.encrypted);
        let headers = plan_of(b"a UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n");
        assert!(headers.added_probe);
        let partial = plan_of(b"a UID FETCH 1:* (BODY.PEEK[]<0.100>)\r\n");
        assert!(partial.added_probe);
    }

    #[test]
    fn a_flag_update_is_told_apart_from_an_answer_with_content() {
        let p = plan_of(b"a UID FETCH 1:* (BODY.PEEK[])\r\n");
        let update = read_response(b"* 3 FETCH (UID 7 FLAGS (\\Flagged) MODSEQ (12))\r\n", &p)
            .expect("fetch");
        assert!(update.flags_only);
        let answer =
            read_response(b"* 3 FETCH (UID 7 FLAGS () BODY[] {3}\r\nabc)\r\n", &p).expect("fetch");
        assert!(!answer.flags_only);
        assert_eq!(answer.full_message.as_deref(), Some(&b"abc"[..]));
        let no_flags = read_response(b"* 3 FETCH (UID 7)\r\n", &p).expect("fetch");
        assert!(!no_flags.flags_only);
    }
}
