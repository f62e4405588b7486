//! `meshmail mailbox encrypt`: each plaintext message of a mailbox is replaced by a copy
//! encrypted to the account's own key and signed by it, stored as an APPEND from a client
//! through meshmail would be (its view is exactly the original bytes), with the same flags and
//! internal date. The original is then removed by `UID EXPUNGE` of its UID alone (UIDPLUS):
//! a plain EXPUNGE would also remove every other message marked `\Deleted`.
//!
//! Every step is in the [`Journal`] before it happens on the server; a run killed at any
//! moment resumes where it stopped: an APPEND whose APPENDUID was not recorded is found by the
//! random value its copy carries in `Meshmail-Reencrypt`.

use super::journal::{Entry, Journal, Progress};
use crate::imap::owned::{Credentials, Session};
use crate::imap::view::View;
use crate::upstream::UpstreamTarget;
use futures_util::StreamExt;
use sequoia_openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use sequoia_openpgp::packet::Key;
use sequoia_openpgp::Cert;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("the server: {0}")]
    Server(String),
    #[error("the server does not offer UIDPLUS: without UID EXPUNGE, removing one message would remove every message marked \\Deleted")]
    NoUidPlus,
    #[error("the mailbox has no UIDVALIDITY")]
    NoUidValidity,
    #[error("journal: {0}")]
    Journal(#[from] std::io::Error),
    #[error("encryption: {0}")]
    Seal(String),
}

/// What a run does to each message it takes.
pub enum Rewrite {
    /// Plaintext messages: encrypted to the account's certificate (with its secret keys) and
    /// signed by it.
    Encrypt(Arc<Cert>),
    /// Messages encrypted to the old subkey after a rekey: the PKESK replaced by one for the
    /// new subkey (`rewrap`).
    Rekey {
        old: Box<Key<SecretParts, UnspecifiedRole>>,
        new: Box<Key<PublicParts, UnspecifiedRole>>,
    },
}

impl Rewrite {
    fn journal(&self) -> &'static str {
        match self {
            Rewrite::Encrypt(_) => "encrypt",
            Rewrite::Rekey { .. } => "rekey",
        }
    }

    /// Whether a listed message is one to look at.
    fn wants(&self, encrypted: bool) -> bool {
        match self {
            Rewrite::Encrypt(_) => !encrypted,
            Rewrite::Rekey { .. } => encrypted,
        }
    }
}

/// What a run needs.
pub struct EncryptContext {
    pub target: UpstreamTarget,
    pub credentials: Credentials,
    /// Where the journal lives (the account's home).
    pub home: PathBuf,
    pub user: String,
    pub rewrite: Arc<Rewrite>,
    /// The account's keys: each copy is opened with them before the original is touched.
    pub check: Arc<crate::crypto::decrypt::DecryptionKeys>,
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub encrypted: usize,
    /// Already encrypted: left as they are.
    pub skipped: usize,
    /// Finished from an earlier, interrupted run.
    pub resumed: usize,
}

/// The longest message meshmail re-encrypts (the rest are left and reported).
const MAX_MESSAGE: usize = 64 << 20;

pub async fn encrypt_mailbox(ctx: &EncryptContext, mailbox: &str) -> Result<Summary, MailboxError> {
    let server = |e: async_imap::error::Error| MailboxError::Server(e.to_string());
    let mut session = crate::imap::owned::login(&ctx.target, &ctx.credentials)
        .await
        .map_err(|e| MailboxError::Server(e.to_string()))?;
    let caps = session.capabilities().await.map_err(server)?;
    if !caps.has_str("UIDPLUS") {
        return Err(MailboxError::NoUidPlus);
    }
    let literal_plus = caps.has_str("LITERAL+");
    let selected = session.select(mailbox).await.map_err(server)?;
    let validity = selected.uid_validity.ok_or(MailboxError::NoUidValidity)?;
    let (mut journal, state) = Journal::open(
        &ctx.home,
        &ctx.user,
        &format!("{mailbox}\0{}", ctx.rewrite.journal()),
        validity,
    )?;
    let mut summary = Summary::default();

    // First what an interrupted run left half done.
    for (uid, progress) in state.iter().filter(|(_, p)| !p.done) {
        if finish(&mut session, &mut journal, validity, *uid, progress).await? {
            summary.resumed += 1;
        }
    }

    let listed = list(&mut session).await?;
    let todo: Vec<&Listed> = listed
        .iter()
        .filter(|m| ctx.rewrite.wants(m.encrypted) && !state.get(&m.uid).is_some_and(|p| p.done))
        .collect();
    summary.skipped = listed.len() - todo.len();
    let bar = if ctx.progress {
        indicatif::ProgressBar::new(todo.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(mailbox.to_owned());
    for m in todo {
        let Some(message) = fetch_one(&mut session, m.uid).await? else {
            // Expunged meanwhile by someone else.
            bar.inc(1);
            continue;
        };
        if message.len() > MAX_MESSAGE {
            tracing::warn!(
                uid = m.uid,
                bytes = message.len(),
                "left as it is: too large"
            );
            bar.inc(1);
            continue;
        }
        let nonce = random_nonce();
        let sha256 = data_encoding::HEXUPPER
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &message).as_ref());
        let rewrite = ctx.rewrite.clone();
        let check = ctx.check.clone();
        let marker = nonce.clone();
        let uid = m.uid;
        let sealed = tokio::task::spawn_blocking(move || {
            let copy = make_copy(&rewrite, &message, &marker)?;
            // The original goes only once its copy reads back as it: a copy that does not
            // (a bug, never a sender's doing) stops the run with both still on the server.
            if let Some(copy) = &copy {
                if !reads_back(&rewrite, &check, &message, copy) {
                    return Err(format!(
                        "the copy of UID {uid} does not read back as the original; both are \
                         left on the server"
                    ));
                }
            }
            Ok(copy)
        })
        .await
        .map_err(|e| MailboxError::Seal(e.to_string()))?
        .map_err(MailboxError::Seal)?;
        let Some(sealed) = sealed else {
            // Not encrypted to the old subkey: left as it is.
            summary.skipped += 1;
            bar.inc(1);
            continue;
        };
        journal.write(&Entry::Start {
            uidvalidity: validity,
            uid: m.uid,
            sha256,
            nonce,
        })?;
        let appenduid = append(&mut session, mailbox, m, &sealed, literal_plus).await?;
        journal.write(&Entry::Appended {
            uidvalidity: validity,
            uid: m.uid,
            appenduid,
        })?;
        expunge_one(&mut session, m.uid).await?;
        journal.write(&Entry::Done {
            uidvalidity: validity,
            uid: m.uid,
        })?;
        summary.encrypted += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let _ = session.logout().await;
    Ok(summary)
}

/// The copy that replaces `message`: encrypted (`Encrypt`), or re-wrapped for the new subkey
/// (`Rekey`; `None` when it is not encrypted to the old one). Either carries `marker`.
fn make_copy(rewrite: &Rewrite, message: &[u8], marker: &str) -> Result<Option<Vec<u8>>, String> {
    match rewrite {
        Rewrite::Encrypt(key) => {
            crate::imap::append::seal_marked(message, key, Some(key), Some(marker))
                .map(Some)
                .map_err(|e| e.to_string())
        }
        Rewrite::Rekey { old, new } => {
            Ok(super::rewrap::rewrap(message, old, new).map(|rewrapped| {
                let mut out =
                    format!("{}: {marker}\r\n", crate::imap::append::REENCRYPT_FIELD).into_bytes();
                out.extend_from_slice(&rewrapped);
                out
            }))
        }
    }
}

/// True when `copy` opens with the account's keys as `message` did: the plaintext itself for
/// an encrypted copy, the same view for a re-wrapped one.
fn reads_back(
    rewrite: &Rewrite,
    check: &crate::crypto::decrypt::DecryptionKeys,
    message: &[u8],
    copy: &[u8],
) -> bool {
    let max = MAX_MESSAGE * 2;
    let view = View::build(copy, check, max);
    match rewrite {
        Rewrite::Encrypt(_) => view.message() == message,
        Rewrite::Rekey { .. } => view.message() == View::build(message, check, max).message(),
    }
}

/// Finishes a message an earlier run started: true when it is now done.
async fn finish(
    session: &mut Session,
    journal: &mut Journal,
    validity: u32,
    uid: u32,
    progress: &Progress,
) -> Result<bool, MailboxError> {
    let appended = match progress.appenduid {
        Some(a) => Some(a),
        None => {
            let query = format!(
                "HEADER {} \"{}\"",
                crate::imap::append::REENCRYPT_FIELD,
                progress.nonce
            );
            let found = session
                .uid_search(query)
                .await
                .map_err(|e| MailboxError::Server(e.to_string()))?;
            found.into_iter().min()
        }
    };
    let Some(appenduid) = appended else {
        // The copy never reached the server: the message is done again from the start.
        return Ok(false);
    };
    if progress.appenduid.is_none() {
        journal.write(&Entry::Appended {
            uidvalidity: validity,
            uid,
            appenduid,
        })?;
    }
    expunge_one(session, uid).await?;
    journal.write(&Entry::Done {
        uidvalidity: validity,
        uid,
    })?;
    Ok(true)
}

struct Listed {
    uid: u32,
    flags: Vec<String>,
    internal_date: Option<String>,
    encrypted: bool,
}

async fn list(session: &mut Session) -> Result<Vec<Listed>, MailboxError> {
    let mut out = Vec::new();
    let mut stream = session
        .uid_fetch(
            "1:*",
            "(UID FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])",
        )
        .await
        .map_err(|e| MailboxError::Server(e.to_string()))?;
    while let Some(item) = stream.next().await {
        let item = item.map_err(|e| MailboxError::Server(e.to_string()))?;
        let Some(uid) = item.uid else { continue };
        out.push(Listed {
            uid,
            flags: item
                .flags()
                .map(|f| crate::imap::owned::flag_text(&f))
                .filter(|f| f != "\\Recent")
                .collect(),
            internal_date: item
                .internal_date()
                .map(|d| d.format("%d-%b-%Y %H:%M:%S %z").to_string()),
            encrypted: item
                .header()
                .is_some_and(|h| crate::imap::view::mime::parse(h).is_encrypted()),
        });
    }
    Ok(out)
}

async fn fetch_one(session: &mut Session, uid: u32) -> Result<Option<Vec<u8>>, MailboxError> {
    let mut stream = session
        .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
        .await
        .map_err(|e| MailboxError::Server(e.to_string()))?;
    let mut found = None;
    while let Some(item) = stream.next().await {
        let item = item.map_err(|e| MailboxError::Server(e.to_string()))?;
        if item.uid == Some(uid) {
            found = item.body().map(<[u8]>::to_vec);
        }
    }
    Ok(found)
}

/// `UID STORE uid +FLAGS.SILENT (\Deleted)` and `UID EXPUNGE uid`: that message only.
async fn expunge_one(session: &mut Session, uid: u32) -> Result<(), MailboxError> {
    {
        let mut stream = session
            .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Deleted)")
            .await
            .map_err(|e| MailboxError::Server(e.to_string()))?;
        while let Some(r) = stream.next().await {
            r.map_err(|e| MailboxError::Server(e.to_string()))?;
        }
    }
    let stream = session
        .uid_expunge(uid.to_string())
        .await
        .map_err(|e| MailboxError::Server(e.to_string()))?;
    let mut stream = std::pin::pin!(stream);
    while let Some(r) = stream.next().await {
        r.map_err(|e| MailboxError::Server(e.to_string()))?;
    }
    Ok(())
}

/// APPEND on the raw stream (async-imap does not give the APPENDUID response code): the new
/// message's UID.
async fn append(
    session: &mut Session,
    mailbox: &str,
    m: &Listed,
    message: &[u8],
    literal_plus: bool,
) -> Result<u32, MailboxError> {
    let tag = format!("MENC{}", m.uid);
    let date = m
        .internal_date
        .as_ref()
        .map(|d| format!(" \"{d}\""))
        .unwrap_or_default();
    let head = format!(
        "{tag} APPEND {} ({}){date} {{{}{}}}\r\n",
        quote(mailbox),
        m.flags.join(" "),
        message.len(),
        if literal_plus { "+" } else { "" }
    );
    let failed = |what: &str| MailboxError::Server(format!("APPEND: {what}"));
    let stream = session.get_mut();
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| failed(&e.to_string()))?;
    stream.flush().await.map_err(|e| failed(&e.to_string()))?;
    let mut responses = crate::imap::raw::Responses::new(1 << 20);
    let mut sent = literal_plus;
    if sent {
        send_literal(stream, message)
            .await
            .map_err(|e| failed(&e.to_string()))?;
    }
    loop {
        let r = responses.next(stream).await.map_err(|e| failed(&e))?;
        if r.starts_with(b"+") && !sent {
            sent = true;
            send_literal(stream, message)
                .await
                .map_err(|e| failed(&e.to_string()))?;
            continue;
        }
        let Some(rest) = crate::imap::raw::completion(&r, &tag) else {
            continue;
        };
        let text = String::from_utf8_lossy(rest).trim_end().to_owned();
        if !crate::imap::raw::is_ok(rest) {
            return Err(failed(&text));
        }
        return appenduid(&text).ok_or_else(|| failed("no APPENDUID in the answer"));
    }
}

async fn send_literal(
    stream: &mut crate::imap::owned::Link,
    message: &[u8],
) -> std::io::Result<()> {
    stream.write_all(message).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}

/// The UID in `OK [APPENDUID <validity> <uid>] …`.
fn appenduid(text: &str) -> Option<u32> {
    let upper = text.to_ascii_uppercase();
    let at = upper.find("[APPENDUID ")? + "[APPENDUID ".len();
    let rest = &text[at..];
    let end = rest.find(']')?;
    rest[..end].split_ascii_whitespace().nth(1)?.parse().ok()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn random_nonce() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    data_encoding::HEXLOWER.encode(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_that_does_not_read_back_as_the_original_is_caught() {
        let (key, _) = crate::keys::generate::openpgp_cert("alice@example.test").unwrap();
        let (other, _) = crate::keys::generate::openpgp_cert("alice@example.test").unwrap();
        let check =
            crate::crypto::decrypt::DecryptionKeys::new(key.clone(), None, None, Vec::new());
        let message = b"Subject: hi\r\n\r\nbody\r\n";
        let encrypt = Rewrite::Encrypt(Arc::new(key.clone()));
        let copy = make_copy(&encrypt, message, "n1").unwrap().unwrap();
        assert!(reads_back(&encrypt, &check, message, &copy));
        // Sealed to another key (what a bug would do): refused before the original goes.
        let wrong = make_copy(&Rewrite::Encrypt(Arc::new(other)), message, "n1")
            .unwrap()
            .unwrap();
        assert!(!reads_back(&encrypt, &check, message, &wrong));
        assert!(!reads_back(
            &encrypt,
            &check,
            b"Subject: other\r\n\r\n",
            &copy
        ));
    }

    #[test]
    fn appenduid_is_read_from_the_response_code() {
        assert_eq!(
            appenduid("OK [APPENDUID 1700 42] Append completed."),
            Some(42)
        );
        assert_eq!(appenduid("ok [appenduid 1 7] done"), Some(7));
        assert_eq!(appenduid("OK Append completed."), None);
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
