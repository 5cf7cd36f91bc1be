//! A real local SMTP server (RFC 5321 subset: EHLO/HELO, AUTH PLAIN, MAIL, RCPT,
//! DATA, RSET, NOOP, QUIT) standing in for a mail relay: it records every message it
//! accepts (envelope, the AUTH PLAIN credentials, the DATA as received) and can be
//! told to answer a sender's `MAIL FROM` with scripted replies first (e.g. 451, 550). It does
//! not offer STARTTLS, so a client set to `opportunistic` sends in clear.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// `user:password` from AUTH PLAIN, if the client authenticated.
    pub auth: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// The DATA as received (dot-stuffing undone), CRLF line ends.
    pub data: String,
}

impl Mail {
    /// A header's value (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line.trim_start_matches(['\t']));
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }
}

#[derive(Default)]
struct State {
    mails: Vec<Mail>,
    /// Replies to a sender's `MAIL FROM` before accepting (e.g. "451 4.3.0 try later").
    mail_from_script: HashMap<String, VecDeque<String>>,
    /// `MAIL FROM` commands seen (accepted or not).
    attempts: usize,
}

/// The running server.
#[derive(Clone)]
pub struct RecordingSmtp {
    pub host: String,
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl RecordingSmtp {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = session(socket, s).await;
                });
            }
        });
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
            state,
        }
    }

    /// Answers `sender`'s next `MAIL FROM` commands with these replies first.
    pub fn script_mail_from(&self, sender: &str, replies: &[&str]) {
        self.lock()
            .mail_from_script
            .entry(sender.to_string())
            .or_default()
            .extend(replies.iter().map(|r| r.to_string()));
    }

    /// Every accepted message so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.lock().mails.clone()
    }

    /// `MAIL FROM` commands so far (tries, accepted or not).
    pub fn attempts(&self) -> usize {
        self.lock().attempts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn session(socket: tokio::net::TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    write.write_all(b"220 recording-smtp ESMTP\r\n").await?;
    let mut auth = None;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end_matches(['\r', '\n']).to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-recording-smtp\r\n250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SMTPUTF8".into()
        } else if upper.starts_with("HELO") {
            "250 recording-smtp".into()
        } else if upper.starts_with("AUTH PLAIN") {
            let initial = cmd.get(10..).unwrap_or("").trim().to_string();
            let encoded = if initial.is_empty() {
                write.write_all(b"334 \r\n").await?;
                line.clear();
                lines.read_line(&mut line).await?;
                line.trim().to_string()
            } else {
                initial
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            if parts.len() == 3 {
                auth = Some(format!("{}:{}", parts[1], parts[2]));
                "235 2.7.0 authenticated".into()
            } else {
                "501 5.5.2 bad AUTH PLAIN".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            let mut st = lock();
            st.attempts += 1;
            let sender = address(&cmd[10..]);
            match st
                .mail_from_script
                .get_mut(&sender)
                .and_then(VecDeque::pop_front)
            {
                Some(r) => r,
                None => {
                    from = sender;
                    to.clear();
                    "250 2.1.0 ok".into()
                }
            }
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&cmd[8..]));
            "250 2.1.5 ok".into()
        } else if upper == "DATA" {
            write.write_all(b"354 end with .\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            lock().mails.push(Mail {
                auth: auth.clone(),
                from: from.clone(),
                to: std::mem::take(&mut to),
                data,
            });
            "250 2.0.0 queued".into()
        } else if upper == "RSET" {
            to.clear();
            "250 2.0.0 ok".into()
        } else if upper == "NOOP" {
            "250 2.0.0 ok".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 not implemented".into()
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\r\n").await?;
    }
}

/// `<a@b> SIZE=1` → `a@b`.
fn address(arg: &str) -> String {
    let a = arg.trim();
    match (a.find('<'), a.find('>')) {
        (Some(i), Some(j)) if j > i => a[i + 1..j].to_string(),
        _ => a.split_whitespace().next().unwrap_or("").to_string(),
    }
}
