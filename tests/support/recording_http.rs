//! A real local HTTP server standing in for webhook, Slack and WhatsApp endpoints:
//! it records every request (path, headers, body) and answers each path from a
//! script of statuses (then 200 once the script is spent).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or("", String::as_str)
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// Statuses to answer per path, in order; 200 once empty.
    script: HashMap<String, VecDeque<u16>>,
    /// Paths that always answer this status.
    always: HashMap<String, u16>,
    /// Delay before answering.
    delay: Duration,
    /// Bodies of successful answers per path ("recorded" otherwise).
    bodies: HashMap<String, String>,
}

/// The running server.
#[derive(Clone)]
pub struct RecordingServer {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl RecordingServer {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let s = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let path = uri.path().to_string();
                let (status, delay, answer) = {
                    let mut st = s.lock().expect("state");
                    st.requests.push(Recorded {
                        path: path.clone(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect(),
                        body: body.to_vec(),
                    });
                    let status = match st.always.get(&path) {
                        Some(s) => *s,
                        None => st
                            .script
                            .get_mut(&path)
                            .and_then(VecDeque::pop_front)
                            .unwrap_or(200),
                    };
                    let answer = st
                        .bodies
                        .get(&path)
                        .cloned()
                        .unwrap_or_else(|| "recorded".into());
                    (status, st.delay, answer)
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let code = StatusCode::from_u16(status).expect("status");
                if status == 429 {
                    return (code, [("retry-after", "0")], "slow down").into_response();
                }
                (code, answer).into_response()
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    /// Answers `path` with these statuses first.
    pub fn script(&self, path: &str, statuses: &[u16]) {
        self.lock()
            .script
            .insert(path.into(), statuses.iter().copied().collect());
    }

    /// Answers `path` with `status` always.
    pub fn always(&self, path: &str, status: u16) {
        self.lock().always.insert(path.into(), status);
    }

    /// Answers successful requests to `path` with this body.
    pub fn answer_body(&self, path: &str, body: &str) {
        self.lock().bodies.insert(path.into(), body.into());
    }

    /// Waits this long before each answer.
    pub fn delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Requests to `path` so far.
    pub fn to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
