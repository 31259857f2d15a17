//! A small SMTP sink on loopback: enough RFC 5321 for lettre (EHLO/HELO, MAIL, RCPT, DATA,
//! RSET, NOOP, QUIT), recording every accepted message and able to reject or stall on demand.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as transmitted (headers and body, dot-stuffing removed, CRLF line ends).
    pub data: String,
}

#[derive(Default)]
struct State {
    mails: Vec<ReceivedMail>,
    /// Reply codes for the next `RCPT TO` commands (e.g. 451 or 550) instead of 250.
    rcpt_replies: VecDeque<u16>,
    /// Accept connections but never answer (for timeout tests).
    silent: bool,
}

pub struct SmtpSink {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the SMTP sink");
        let addr = listener
            .local_addr()
            .expect("local address of the SMTP sink");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, shared.clone()));
            }
        });
        Self { addr, state, task }
    }

    /// The value for `HILT_SMTP_URL` (plain SMTP, no TLS, no auth).
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.lock().mails.clone()
    }

    /// The next `RCPT TO` is answered with `code` (4xx: try later; 5xx: refused).
    pub fn reject_next_rcpt(&self, code: u16) {
        self.lock().rcpt_replies.push_back(code);
    }

    /// While silent, new sessions get no greeting and no answers.
    pub fn set_silent(&self, silent: bool) {
        self.lock().silent = silent;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].trim().to_owned()
}

async fn session(stream: TcpStream, state: Arc<Mutex<State>>) {
    if lock(&state).silent {
        // Hold the connection open without a word until the client gives up.
        let mut buf = [0u8; 512];
        let mut stream = stream;
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
            if n == 0 {
                break;
            }
        }
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    if write
        .write_all(b"220 localhost fake SMTP ready\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-localhost\r\n250-8BITMIME\r\n250 PIPELINING\r\n".into()
        } else if upper.starts_with("HELO") {
            "250 localhost\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command[10..]);
            to.clear();
            "250 2.1.0 OK\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            match lock(&state).rcpt_replies.pop_front() {
                Some(code) if code >= 400 => format!("{code} rejected by the test sink\r\n"),
                _ => {
                    to.push(address(&command[8..]));
                    "250 2.1.5 OK\r\n".into()
                }
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                "554 5.5.1 no valid recipients\r\n".into()
            } else {
                if write
                    .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut data = String::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let l = line.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    data.push_str(
                        l.strip_prefix('.')
                            .filter(|_| l.starts_with(".."))
                            .unwrap_or(l),
                    );
                    data.push_str("\r\n");
                }
                lock(&state).mails.push(ReceivedMail {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                });
                "250 2.0.0 queued\r\n".into()
            }
        } else if upper == "RSET" {
            from.clear();
            to.clear();
            "250 2.0.0 OK\r\n".into()
        } else if upper.starts_with("NOOP") {
            "250 2.0.0 OK\r\n".into()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            "502 5.5.2 command not recognised\r\n".into()
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
