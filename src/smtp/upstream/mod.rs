//! The upstream submission server, one connection per client session, over lettre's
//! `AsyncSmtpConnection` (its `command`, `message`, `read_response`).
//!
//! TLS is meshmail's own (tokio-rustls, certificates verified against the system roots plus the
//! configured CA). STARTTLS is done here rather than by lettre: lettre reads the `220` through a
//! buffered reader and upgrades the socket underneath it, so bytes an attacker placed after the
//! `220` in plaintext would later be read as if they came over TLS. Here the plaintext phase
//! reads only up to the end of the `220` reply, discards anything after it, and hands lettre a
//! stream that is TLS from its first byte.
//!
//! The connection has typed states (the rustls way): [`Upstream<Ready>`] between transactions
//! (AUTH, MAIL, QUIT), [`Upstream<InMail>`] after an accepted MAIL, [`Upstream<InRcpt>`] after
//! an accepted RCPT. Each step consumes the connection and gives it back in the state the
//! server's answer put it in, so DATA without a recipient, a second MAIL inside a transaction,
//! or a transaction left open after a refused DATA cannot be written.

mod connect;

use super::reply::Reply;
use crate::pipeline::Payload;
use crate::upstream::{handshake, UpstreamError, UpstreamTarget, UpstreamTls};
use connect::{plaintext_starttls, Wrapped};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::extension::ClientId;
use std::marker::PhantomData;
use std::time::Duration;

/// What the upstream's EHLO offers.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub size: Option<usize>,
    pub smtputf8: bool,
    pub eightbitmime: bool,
    pub pipelining: bool,
    pub dsn: bool,
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms, upper case.
    pub auth: Vec<String>,
    /// XFORWARD attributes the server accepts from meshmail, upper case (Postfix's
    /// `smtpd_authorized_xforward_hosts`).
    pub xforward: Vec<String>,
}

impl Capabilities {
    pub fn parse<'a>(lines: impl Iterator<Item = &'a str>) -> Capabilities {
        let mut caps = Capabilities::default();
        // The first line is the greeting part of the EHLO reply ("host Hello ...").
        for line in lines.skip(1) {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                "SMTPUTF8" => caps.smtputf8 = true,
                "8BITMIME" => caps.eightbitmime = true,
                "PIPELINING" => caps.pipelining = true,
                "DSN" => caps.dsn = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => caps.auth = words.map(str::to_ascii_uppercase).collect(),
                "XFORWARD" => caps.xforward = words.map(str::to_ascii_uppercase).collect(),
                _ => {}
            }
        }
        caps
    }
}

/// The connection itself, in no particular state: only the typed [`Upstream`] uses it.
struct Link {
    conn: AsyncSmtpConnection,
    caps: Capabilities,
    timeout: Duration,
}

impl Link {
    async fn connect(target: &UpstreamTarget) -> Result<Link, UpstreamError> {
        let t = target.timeout;
        let tcp = crate::upstream::connect_tcp(target).await?;
        let hello = ClientId::Domain(target.hello_name.clone());
        let peer = tcp
            .peer_addr()
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let stream: Box<dyn AsyncTokioStream> = match target.tls {
            UpstreamTls::None => Box::new(Wrapped::new(tcp, peer, None)),
            UpstreamTls::Implicit => {
                let tls = handshake(target, tcp).await?;
                Box::new(Wrapped::new(tls, peer, None))
            }
            UpstreamTls::Starttls => {
                let tcp = plaintext_starttls(tcp, &target.hello_name, t).await?;
                let tls = handshake(target, tcp).await?;
                // lettre expects a greeting; after STARTTLS there is none, so it is supplied.
                Box::new(Wrapped::new(
                    tls,
                    peer,
                    Some(b"220 TLS established\r\n".to_vec()),
                ))
            }
        };
        Link::greet(stream, &hello, &target.hello_name, t).await
    }

    /// The greeting and EHLO over a secured stream.
    async fn greet(
        stream: Box<dyn AsyncTokioStream>,
        hello: &ClientId,
        hello_name: &str,
        t: Duration,
    ) -> Result<Link, UpstreamError> {
        let conn = tokio::time::timeout(
            t,
            AsyncSmtpConnection::connect_with_transport(stream, hello),
        )
        .await
        .map_err(|_| UpstreamError::Connect("timed out in EHLO".into()))?
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let mut upstream = Link {
            conn,
            caps: Capabilities::default(),
            timeout: t,
        };
        // lettre parses only a few extensions; read the whole EHLO reply once more.
        let ehlo = upstream.command(&format!("EHLO {hello_name}")).await?;
        upstream.caps = Capabilities::parse(ehlo.lines.iter().map(String::as_str));
        Ok(upstream)
    }

    /// Sends one command line (without CRLF) and returns the upstream's reply, positive or
    /// negative, exactly as it came. Only a broken connection is an error.
    async fn command(&mut self, line: &str) -> Result<Reply, UpstreamError> {
        let r = tokio::time::timeout(self.timeout, self.conn.command(format!("{line}\r\n"))).await;
        self.reply(r)
    }

    /// Sends DATA and a copy or report the pipeline made (dot-stuffed by lettre), returning
    /// the final reply; the transaction is over either way.
    async fn data(&mut self, payload: Payload<'_>) -> Result<Reply, UpstreamError> {
        let message = payload.bytes();
        let go = self.command("DATA").await?;
        if go.code != 354 {
            // A refused DATA command leaves the transaction open (Postfix's
            // smtpd_data_restrictions): end it, or the next MAIL is a "nested MAIL command".
            self.command("RSET").await?;
            return Ok(go);
        }
        // A large message takes longer than one command.
        let long = self.timeout * 10;
        // In chunks: lettre dot-stuffs each part into a buffer of its size, so a whole large
        // message would be held twice.
        // lettre ends the data with "\r\n.\r\n" whatever the message ends with: the message's
        // own final CRLF is left to it, or every message would gain an empty line.
        let message = message.strip_suffix(b"\r\n").unwrap_or(message);
        let r = tokio::time::timeout(long, self.conn.message_iter(message.chunks(64 * 1024))).await;
        self.reply(r)
    }

    async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conn.quit()).await;
    }

    fn reply(
        &mut self,
        r: Result<
            Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
            tokio::time::error::Elapsed,
        >,
    ) -> Result<Reply, UpstreamError> {
        match r {
            Err(_) => Err(UpstreamError::Broken("timed out".into())),
            Ok(Ok(response)) => {
                let code = response.code().to_string().parse().unwrap_or(250);
                Ok(Reply::from_lines(
                    code,
                    response.message().map(str::to_owned).collect(),
                ))
            }
            Ok(Err(e)) => match e.status() {
                Some(code) => {
                    let text = std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    Ok(Reply::relayed(
                        code.to_string().parse().unwrap_or(451),
                        &text,
                    ))
                }
                None => Err(UpstreamError::Broken(e.to_string())),
            },
        }
    }
}

/// Between transactions: AUTH, MAIL and QUIT.
#[derive(Debug)]
pub struct Ready;
/// MAIL was accepted: RCPT or RSET.
#[derive(Debug)]
pub struct InMail;
/// At least one RCPT was accepted: more RCPT, DATA or RSET.
#[derive(Debug)]
pub struct InRcpt;

/// A live upstream connection in state `S`.
pub struct Upstream<S = Ready> {
    link: Link,
    state: PhantomData<S>,
}

/// The answer to a step that can move the transaction on: accepted (the connection in its new
/// state) or refused (the connection as it was), with the server's reply either way.
pub enum Step<Moved, Stayed> {
    Moved(Moved, Reply),
    Stayed(Stayed, Reply),
}

impl<S> Upstream<S> {
    fn into_state<T>(self) -> Upstream<T> {
        Upstream {
            link: self.link,
            state: PhantomData,
        }
    }

    /// What the upstream's EHLO offered.
    pub fn caps(&self) -> &Capabilities {
        &self.link.caps
    }
}

impl Upstream<Ready> {
    /// Connects, secures and greets (EHLO).
    pub async fn connect(target: &UpstreamTarget) -> Result<Upstream<Ready>, UpstreamError> {
        Ok(Upstream {
            link: Link::connect(target).await?,
            state: PhantomData,
        })
    }

    /// An upstream over any stream (in-process tests: a scripted server on a duplex pipe).
    #[cfg(test)]
    pub(crate) async fn over<S>(stream: S) -> Result<Upstream<Ready>, UpstreamError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 25));
        let hello = ClientId::Domain("localhost".into());
        let link = Link::greet(
            Box::new(Wrapped::new(stream, peer, None)),
            &hello,
            "localhost",
            Duration::from_secs(30),
        )
        .await?;
        Ok(Upstream {
            link,
            state: PhantomData,
        })
    }

    /// One line of an AUTH exchange (the command, then each client response), relayed as it
    /// is; the connection stays between transactions whatever the answer.
    pub async fn auth_line(&mut self, line: &str) -> Result<Reply, UpstreamError> {
        self.link.command(line).await
    }

    /// One XFORWARD line (the sidecar's reinjection), before MAIL.
    pub async fn xforward(&mut self, line: &str) -> Result<Reply, UpstreamError> {
        self.link.command(line).await
    }

    /// Opens a transaction.
    pub async fn mail(
        mut self,
        line: &str,
    ) -> Result<Step<Upstream<InMail>, Upstream<Ready>>, UpstreamError> {
        let r = self.link.command(line).await?;
        Ok(if r.is_positive() {
            Step::Moved(self.into_state(), r)
        } else {
            Step::Stayed(self, r)
        })
    }

    pub async fn quit(self) {
        self.link.quit().await
    }
}

impl Upstream<InMail> {
    /// The first recipient.
    pub async fn rcpt(
        mut self,
        line: &str,
    ) -> Result<Step<Upstream<InRcpt>, Upstream<InMail>>, UpstreamError> {
        let r = self.link.command(line).await?;
        Ok(if r.is_positive() {
            Step::Moved(self.into_state(), r)
        } else {
            Step::Stayed(self, r)
        })
    }

    /// Ends the transaction without a message.
    pub async fn rset(mut self) -> Result<Upstream<Ready>, UpstreamError> {
        self.link.command("RSET").await?;
        Ok(self.into_state())
    }
}

impl Upstream<InRcpt> {
    /// A further recipient; the transaction has one already, whatever this answer.
    pub async fn rcpt(&mut self, line: &str) -> Result<Reply, UpstreamError> {
        self.link.command(line).await
    }

    /// DATA and the message: a copy or report the pipeline made (a [`Payload`], never bytes).
    /// The transaction is over afterwards, also when DATA itself was refused (then meshmail
    /// ends it with RSET, since the server keeps it open).
    pub async fn data(
        mut self,
        payload: Payload<'_>,
    ) -> Result<(Upstream<Ready>, Reply), UpstreamError> {
        let r = self.link.data(payload).await?;
        Ok((self.into_state(), r))
    }

    /// Ends the transaction without a message.
    pub async fn rset(mut self) -> Result<Upstream<Ready>, UpstreamError> {
        self.link.command("RSET").await?;
        Ok(self.into_state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_capabilities() {
        let lines = [
            "mx.example.test",
            "PIPELINING",
            "SIZE 10240000",
            "AUTH PLAIN LOGIN",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "XFORWARD NAME ADDR PROTO HELO",
        ];
        let c = Capabilities::parse(lines.iter().copied());
        assert_eq!(c.size, Some(10_240_000));
        assert!(c.smtputf8 && c.eightbitmime && c.pipelining && c.dsn && c.enhanced_status_codes);
        assert_eq!(c.auth, vec!["PLAIN", "LOGIN"]);
        assert_eq!(c.xforward, vec!["NAME", "ADDR", "PROTO", "HELO"]);
    }
}
