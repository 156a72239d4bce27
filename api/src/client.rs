//! A blocking client of the REST control plane, over the Unix socket or loopback TCP with a
//! token: one typed method per endpoint, and an iterator over the event stream. What
//! `drvisor ctl` and the end-to-end tests use.
//!
//! Each request opens its own connection; the client owns a small single-threaded tokio
//! runtime that drives hyper.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
pub use hyper::Method;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::Runtime;

use crate::rest::{
    Breakpoint, DebugRegs, ErrorBody, HostCapabilities, MemoryQuery, MemoryRead, NewBreakpoint,
    NewWatchpoint, StateRequest, VcpuInfo, VcpuRegisters, VmInfo, WantedState,
};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The socket path or address.
        target: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server answered with an error.
    #[error("{} ({}, HTTP {status})", body.message, body.code)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error body (code `http-error` with the body's text if it was not JSON).
        body: ErrorBody,
    },
    /// HTTP failed below the API: the connection broke, or a malformed response.
    #[error("HTTP: {0}")]
    Http(String),
    /// A success whose body is not what the endpoint returns.
    #[error("cannot decode the response: {0}")]
    Decode(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer is larger than the client reads.
    #[error("the answer is over the client's cap of {} ({} bytes); is this a drvisor server?", mib(*.0), .0)]
    TooLarge(usize),
}

/// `n` bytes as MiB or KiB, for a message.
fn mib(n: usize) -> String {
    match n >> 20 {
        0 => format!("{} KiB", n >> 10),
        m => format!("{m} MiB"),
    }
}

impl ClientError {
    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code, for errors the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }
}

/// A response as it came: for tests and tools that need the raw status and bytes.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Target {
    Unix(PathBuf),
    Tcp { addr: SocketAddr, token: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Tcp { addr, .. } => write!(f, "{addr}"),
        }
    }
}

/// The default time a request may take (pausing waits for every vCPU).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest response body the client reads; a larger one is an error that names this cap.
pub const RESPONSE_MAX: usize = 64 * 1024 * 1024;

/// The longest event (one SSE block) the client buffers while waiting for its end.
pub const EVENT_MAX: usize = 1024 * 1024;

/// A blocking client.
#[derive(Clone)]
pub struct Client {
    target: Target,
    runtime: Arc<Runtime>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target.to_string())
            .finish()
    }
}

fn runtime() -> Result<Arc<Runtime>, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| ClientError::Http(format!("cannot start a tokio runtime: {e}")))
}

async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>, ClientError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(conn);
    Ok(sender)
}

impl Client {
    /// A client of the server on the Unix socket at `path`.
    pub fn unix(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Ok(Client {
            target: Target::Unix(path.as_ref().to_owned()),
            runtime: runtime()?,
            timeout: Some(DEFAULT_TIMEOUT),
        })
    }

    /// A client of the server on loopback TCP at `addr`, sending `token`.
    pub fn tcp(addr: SocketAddr, token: impl Into<String>) -> Result<Client, ClientError> {
        Ok(Client {
            target: Target::Tcp {
                addr,
                token: token.into(),
            },
            runtime: runtime()?,
            timeout: Some(DEFAULT_TIMEOUT),
        })
    }

    /// The same client with another request timeout (`None`: wait for ever). Event streams
    /// have none once their headers came.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.timeout = timeout;
        self
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let fail = |source| ClientError::Connect {
            target: self.target.to_string(),
            source,
        };
        match &self.target {
            Target::Unix(p) => {
                handshake(tokio::net::UnixStream::connect(p).await.map_err(fail)?).await
            }
            Target::Tcp { addr, .. } => {
                handshake(tokio::net::TcpStream::connect(addr).await.map_err(fail)?).await
            }
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost");
        if let Target::Tcp { token, .. } = &self.target {
            b = b.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        let mut req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        // Extra headers replace the defaults above.
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let value = HeaderValue::from_str(v).map_err(|e| ClientError::Http(e.to_string()))?;
            req.headers_mut().insert(name, value);
        }
        Ok(req)
    }

    async fn send_async(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut sender = self.connect().await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    fn block_on<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match self.timeout {
            Some(t) => self
                .runtime
                .block_on(async { tokio::time::timeout(t, fut).await })
                .unwrap_or(Err(ClientError::Timeout(t))),
            None => self.runtime.block_on(fut),
        }
    }

    /// Sends `method path` with `body` (sent as `application/json` as it is) and extra
    /// `headers`; returns whatever came back.
    pub fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<RawResponse, ClientError> {
        let req = self.request(method, path, body, headers)?;
        self.block_on(async {
            let resp = self.send_async(req).await?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = read_capped(resp.into_body()).await?;
            Ok(RawResponse {
                status,
                content_type,
                body,
            })
        })
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let raw = self.raw(method, path, body, &[])?;
        let bytes = if raw.status == 204 {
            b"null".as_slice()
        } else {
            &raw.body
        };
        decode(raw.status, bytes)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>)
    }

    /// `GET /vm`.
    pub fn vm(&self) -> Result<VmInfo, ClientError> {
        self.get("/vm")
    }

    /// `PUT /vm/state`.
    pub fn set_state(&self, state: WantedState) -> Result<VmInfo, ClientError> {
        self.call(Method::PUT, "/vm/state", Some(&StateRequest { state }))
    }

    /// Pauses every vCPU (`PUT /vm/state` `paused`).
    pub fn pause(&self) -> Result<VmInfo, ClientError> {
        self.set_state(WantedState::Paused)
    }

    /// Resumes every vCPU (`PUT /vm/state` `running`).
    pub fn resume(&self) -> Result<VmInfo, ClientError> {
        self.set_state(WantedState::Running)
    }

    /// `POST /vm/stop`.
    pub fn stop(&self) -> Result<VmInfo, ClientError> {
        self.call(Method::POST, "/vm/stop", None::<&()>)
    }

    /// `GET /host/capabilities`.
    pub fn capabilities(&self) -> Result<HostCapabilities, ClientError> {
        self.get("/host/capabilities")
    }

    /// `POST /breakpoints`.
    pub fn add_breakpoint(&self, req: &NewBreakpoint) -> Result<Breakpoint, ClientError> {
        self.call(Method::POST, "/breakpoints", Some(req))
    }

    /// `POST /watchpoints`.
    pub fn add_watchpoint(&self, req: &NewWatchpoint) -> Result<Breakpoint, ClientError> {
        self.call(Method::POST, "/watchpoints", Some(req))
    }

    /// `GET /breakpoints`.
    pub fn breakpoints(&self) -> Result<Vec<Breakpoint>, ClientError> {
        self.get("/breakpoints")
    }

    /// `GET /breakpoints/{id}`.
    pub fn breakpoint(&self, id: u32) -> Result<Breakpoint, ClientError> {
        self.get(&format!("/breakpoints/{id}"))
    }

    /// `DELETE /breakpoints/{id}`.
    pub fn remove_breakpoint(&self, id: u32) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/breakpoints/{id}"), None::<&()>)
    }

    /// `GET /vcpus`.
    pub fn vcpus(&self) -> Result<Vec<VcpuInfo>, ClientError> {
        self.get("/vcpus")
    }

    /// `GET /vcpus/{n}/debugregs`.
    pub fn debugregs(&self, vcpu: u32) -> Result<DebugRegs, ClientError> {
        self.get(&format!("/vcpus/{vcpu}/debugregs"))
    }

    /// `GET /vcpus/{n}/registers`.
    pub fn registers(&self, vcpu: u32) -> Result<VcpuRegisters, ClientError> {
        self.get(&format!("/vcpus/{vcpu}/registers"))
    }

    /// `GET /memory`.
    pub fn memory(&self, query: &MemoryQuery) -> Result<MemoryRead, ClientError> {
        let mut q = Vec::new();
        if let Some(gpa) = &query.gpa {
            q.push(format!("gpa={}", encode(gpa)));
        }
        if let Some(gva) = &query.gva {
            q.push(format!("gva={}", encode(gva)));
        }
        if let Some(vcpu) = query.vcpu {
            q.push(format!("vcpu={vcpu}"));
        }
        q.push(format!("len={}", query.len));
        self.get(&format!("/memory?{}", q.join("&")))
    }

    /// `GET /openapi.json`.
    pub fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/openapi.json")
    }

    /// `GET /events`: follows the event stream from after `since` (`None`: only new
    /// events). With `follow` false the stream ends once it has what the ring held.
    pub fn events(&self, since: Option<u64>, follow: bool) -> Result<EventStream, ClientError> {
        let mut path = String::from("/events");
        let mut q = Vec::new();
        if let Some(s) = since {
            q.push(format!("since={s}"));
        }
        if !follow {
            q.push("follow=false".to_owned());
        }
        if !q.is_empty() {
            path = format!("{path}?{}", q.join("&"));
        }
        self.events_at(&path, &[])
    }

    /// `GET` an event stream at `path` (with its query) and extra `headers`
    /// (`Last-Event-ID`).
    pub fn events_at(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<EventStream, ClientError> {
        let mut hs = vec![(ACCEPT.as_str(), "text/event-stream")];
        hs.extend_from_slice(headers);
        let req = self.request(Method::GET, path, None, &hs)?;
        let resp = self.block_on(self.send_async(req))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = self.block_on(read_capped(resp.into_body()))?;
            return Err(decode::<()>(status, &body).unwrap_err());
        }
        Ok(EventStream {
            runtime: self.runtime.clone(),
            body: resp.into_body(),
            buf: Vec::new(),
            done: false,
        })
    }
}

/// A response body, up to [`RESPONSE_MAX`] bytes.
async fn read_capped(body: Incoming) -> Result<Vec<u8>, ClientError> {
    match http_body_util::Limited::new(body, RESPONSE_MAX)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ClientError::TooLarge(RESPONSE_MAX))
        }
        Err(e) => Err(ClientError::Http(e.to_string())),
    }
}

/// Percent-encodes a query value (addresses are plain; this keeps odd input intact).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, ClientError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(body).map_err(|e| ClientError::Decode(e.to_string()));
    }
    let body = serde_json::from_slice::<ErrorBody>(body).unwrap_or_else(|_| ErrorBody {
        code: "http-error".into(),
        message: foreign_message(status, body),
    });
    Err(ClientError::Api { status, body })
}

/// The message for an error answer without drvisor's JSON body: what came (cut short) and a
/// hint that something else answers there.
fn foreign_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let hint = "without drvisor's JSON error body: is a drvisor API server at this address?";
    match text.is_empty() {
        true => format!("HTTP {status} {hint}"),
        false => format!("HTTP {status} {hint} It said: {text}"),
    }
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` (the sequence number; for `lost`, the last one lost).
    pub id: Option<u64>,
    /// The `event:` (`hit`, `plan`, `state`, `lost`; `message` if absent).
    pub kind: String,
    /// The `data:` (JSON).
    pub data: String,
}

/// The events of `GET /events`, as they come; blocks for the next. Ends when the server
/// ends the stream (the VM stopped, or `follow=false` caught up).
pub struct EventStream {
    runtime: Arc<Runtime>,
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("done", &self.done)
            .finish()
    }
}

/// Takes one event block (up to a blank line) off `buf`; `None` if none is complete.
/// Comment-only blocks (keep-alives) come back as `Some(None)`.
fn take_block(buf: &mut Vec<u8>) -> Option<Option<SseEvent>> {
    let end = buf.windows(2).position(|w| w == b"\n\n")?;
    let block: Vec<u8> = buf.drain(..end + 2).collect();
    let text = String::from_utf8_lossy(&block);
    let (mut id, mut kind, mut data, mut any) = (None, None, Vec::new(), false);
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "id" => id = value.parse().ok(),
            "event" => kind = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
    Some(any.then(|| SseEvent {
        id,
        kind: kind.unwrap_or_else(|| "message".into()),
        data: data.join("\n"),
    }))
}

impl Iterator for EventStream {
    type Item = Result<SseEvent, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            while let Some(block) = take_block(&mut self.buf) {
                if let Some(ev) = block {
                    return Some(Ok(ev));
                }
            }
            if self.done {
                return None;
            }
            match self.runtime.block_on(self.body.frame()) {
                None => self.done = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                    if self.buf.len() > EVENT_MAX {
                        self.done = true;
                        return Some(Err(ClientError::TooLarge(EVENT_MAX)));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(ClientError::Http(e.to_string())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_parse_and_keep_alives_are_skipped() {
        let mut buf = b":\n\nid: 3\nevent: hit\ndata: {\"a\":1}\n\nid: 4\nev".to_vec();
        assert_eq!(take_block(&mut buf), Some(None));
        let ev = take_block(&mut buf).unwrap().unwrap();
        assert_eq!(
            ev,
            SseEvent {
                id: Some(3),
                kind: "hit".into(),
                data: "{\"a\":1}".into()
            }
        );
        assert_eq!(take_block(&mut buf), None);
        assert_eq!(buf, b"id: 4\nev");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("0x1000"), "0x1000");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
