//! Proof and reminder email: SMTP through lettre, or `.eml` files in an outbox folder.
//!
//! With `HILT_SMTP_URL` (`smtp://host:25`, `smtp://host:587?tls=required`, `smtps://user:pass@host`)
//! messages go through lettre's async SMTP transport; without it each message is written to
//! `{HILT_OUTBOX_DIR}/{message id}.eml`. The file name comes from the caller's message id, so a job
//! that runs twice rewrites the same file instead of producing a second email.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart, header::ContentType},
};

use super::ProviderError;

#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
    timeout: Duration,
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.transport {
            Transport::Smtp(_) => "smtp",
            Transport::Outbox(_) => "outbox",
        };
        f.debug_struct("Mailer")
            .field("transport", &kind)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// SMTP when `smtp_url` is given, else the outbox folder (created on first use).
    pub fn new(
        smtp_url: Option<&str>,
        from: &str,
        outbox_dir: &Path,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let from: Mailbox = from.parse().map_err(|_| {
            ProviderError::configuration("invalid_sender", "HILT_MAIL_FROM is not a valid address")
        })?;
        let transport = match smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|_| {
                        ProviderError::configuration(
                            "invalid_smtp_url",
                            "HILT_SMTP_URL is not a valid SMTP URL",
                        )
                    })?
                    .timeout(Some(timeout))
                    .build();
                Transport::Smtp(transport)
            }
            None => Transport::Outbox(outbox_dir.to_path_buf()),
        };
        Ok(Self {
            from,
            transport,
            timeout,
        })
    }

    /// Where `.eml` files go, when no SMTP server is configured.
    pub fn outbox_dir(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Outbox(dir) => Some(dir),
            Transport::Smtp(_) => None,
        }
    }

    /// One message; `message_id` (e.g. the proof-email request id) becomes the `Message-ID`
    /// header and the outbox file name. Multipart text + HTML when `html` is given.
    pub async fn send(
        &self,
        to: &str,
        subject: &str,
        text: &str,
        html: Option<&str>,
        message_id: &str,
    ) -> Result<(), ProviderError> {
        let to: Mailbox = to.parse().map_err(|_| {
            ProviderError::member_permanent("invalid_email", "the recipient address is not valid")
        })?;
        let local = sanitize(message_id);
        if local.is_empty() {
            return Err(ProviderError::configuration(
                "invalid_message_id",
                "the message id is empty",
            ));
        }
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{local}@hilt>")));
        let message = match html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                text.to_owned(),
                html.to_owned(),
            )),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(text.to_owned()),
        }
        .map_err(|_| {
            ProviderError::configuration("invalid_message", "the email could not be built")
        })?;

        match &self.transport {
            Transport::Smtp(smtp) => {
                // lettre's timeout is per socket operation; bound the whole exchange too.
                let total = self.timeout.saturating_mul(3);
                match tokio::time::timeout(total, smtp.send(message)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(classify_smtp(&e)),
                    Err(_) => Err(ProviderError::transient(
                        "timeout",
                        "the SMTP server did not answer in time",
                    )),
                }
            }
            Transport::Outbox(dir) => write_eml(dir, &local, &message.formatted()).await,
        }
    }
}

/// Keeps file-name-safe characters only (the id is ours, but never trust a path component).
fn sanitize(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect::<String>()
        .trim_matches('.')
        .to_owned()
}

async fn write_eml(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ProviderError> {
    let io = |_| ProviderError::transient("outbox_io", "could not write to the outbox folder");
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    // Write then rename, so a reader never sees half a message.
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, bytes).await.map_err(io)?;
    tokio::fs::rename(&tmp, dir.join(format!("{name}.eml")))
        .await
        .map_err(io)?;
    Ok(())
}

/// SMTP 4xx and connection problems are transient; 5xx are permanent (an authentication
/// failure is the merchant's to fix). The server's text is not echoed: it often quotes the address.
fn classify_smtp(err: &lettre::transport::smtp::Error) -> ProviderError {
    let code = err.status().and_then(|c| c.to_string().parse::<u16>().ok());
    if err.is_transient() {
        let code = code.unwrap_or(400);
        return ProviderError::transient(
            "smtp_transient",
            format!("the SMTP server deferred the message ({code})"),
        )
        .with_status(code);
    }
    if err.is_permanent() {
        let code = code.unwrap_or(500);
        let e = match code {
            530 | 534 | 535 | 538 => ProviderError::configuration(
                "smtp_auth_failed",
                format!("the SMTP server refused our credentials ({code})"),
            ),
            _ => ProviderError::member_permanent(
                "email_rejected",
                format!("the SMTP server rejected the message ({code})"),
            ),
        };
        return e.with_status(code);
    }
    if err.is_timeout() {
        return ProviderError::transient("timeout", "the SMTP server did not answer in time");
    }
    if err.is_tls() {
        return ProviderError::transient("network", "TLS with the SMTP server failed");
    }
    ProviderError::transient("network", "could not talk to the SMTP server")
}
