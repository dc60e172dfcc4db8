//! The API client `ctl` uses: JSON in and out; API errors become readable messages.

use anyhow::{Context, Result, anyhow};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use super::Global;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Where `ctl login` keeps the API URL and token.
pub fn config_path() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("cairn").join("ctl.json"))
}

/// The saved login, if any: (api url, token).
pub fn saved_login() -> Option<(String, String)> {
    let text = std::fs::read_to_string(config_path()?).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some((
        v["apiUrl"].as_str()?.to_owned(),
        v["token"].as_str()?.to_owned(),
    ))
}

impl Client {
    pub fn new(global: &Global) -> Result<Client> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cairn-ctl/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        // A token from the flag or environment wins; else the one `ctl login` saved for
        // this API.
        let base = global.api_url.trim_end_matches('/').to_owned();
        let token = global.token.clone().filter(|t| !t.is_empty()).or_else(|| {
            saved_login()
                .filter(|(url, _)| url.trim_end_matches('/') == base)
                .map(|(_, t)| t)
        });
        Ok(Client { http, base, token })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API's refusal as an error, saying what to do when it is about credentials.
    fn refused(&self, status: reqwest::StatusCode, message: &str) -> anyhow::Error {
        let hint = match (status.as_u16(), &self.token) {
            (401, None) => {
                "\nno token was sent: set CAIRN_TOKEN (or --token), or sign in with `ctl login --email you@example.com`"
            }
            (401, Some(_)) => {
                "\nthe token was refused (unknown, revoked or expired): sign in again with `ctl login`, or set another CAIRN_TOKEN"
            }
            _ => "",
        };
        anyhow!("{message} (HTTP {}){hint}", status.as_u16())
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn get_query(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.send(self.request(Method::GET, path).query(query))
            .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.request(Method::PATCH, path).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value> {
        let mut r = self.request(Method::POST, path).json(body);
        if let Some(k) = idempotency_key {
            r = r.header("Idempotency-Key", k);
        }
        self.send(r).await
    }

    async fn send(&self, r: RequestBuilder) -> Result<Value> {
        let response = r
            .send()
            .await
            .with_context(|| format!("cannot reach the Cairn API at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.context("reading the API's answer")?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        Err(self.refused(status, &message))
    }
}

/// A Server-Sent Events stream being read.
pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

/// One message of an event stream: its `id` (the cursor to resume after) and `data`;
/// either may be absent (the API ends a stream with an `id` alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub data: Option<String>,
}

/// Why an event stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// The API answered and said no (unknown run, bad credentials): trying again will
    /// not help.
    #[error("{0}")]
    Refused(anyhow::Error),
    /// The API could not be reached, or failed or was busy: worth trying again.
    #[error("{0}")]
    Unavailable(anyhow::Error),
}

impl SseStream {
    /// The next message, `None` when the server closed the stream.
    pub async fn next_message(&mut self) -> Result<Option<SseMessage>> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = SseMessage::default();
                let mut data: Vec<&str> = Vec::new();
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "data" => data.push(value),
                        "id" => message.id = Some(value.to_owned()),
                        _ => {}
                    }
                }
                if !data.is_empty() {
                    message.data = Some(data.join("\n"));
                }
                if message.id.is_some() || message.data.is_some() {
                    return Ok(Some(message));
                }
                continue;
            }
            match self
                .response
                .chunk()
                .await
                .context("reading the event stream")?
            {
                Some(bytes) => self
                    .buffer
                    .push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n")),
                None => return Ok(None),
            }
        }
    }
}

impl Client {
    /// Opens an event stream (no overall timeout), resuming after `last_event_id`.
    pub async fn sse(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<SseStream, SseError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cairn-ctl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| SseError::Refused(e.into()))?;
        let mut r = http
            .get(format!("{}{path}", self.base))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id);
        }
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let response = r.send().await.map_err(|e| {
            SseError::Unavailable(
                anyhow::Error::new(e)
                    .context(format!("cannot reach the Cairn API at {}", self.base)),
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("request failed")
                .to_owned();
            let e = self.refused(status, &message);
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                SseError::Unavailable(e)
            } else {
                SseError::Refused(e)
            });
        }
        Ok(SseStream {
            response,
            buffer: String::new(),
        })
    }

    pub async fn get_text(&self, path: &str) -> Result<String> {
        let response = self
            .request(Method::GET, path)
            .send()
            .await
            .with_context(|| format!("cannot reach the Cairn API at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        if status.is_success() {
            return Ok(text);
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or(&text)
            .to_owned();
        Err(self.refused(status, &message))
    }

    /// POST without a token, returning the answer and its `Set-Cookie` session value.
    pub async fn login(&self, email: &str, password: &str) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/api/auth/login", self.base))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .with_context(|| format!("cannot reach the Cairn API at {}", self.base))?;
        let status = response.status();
        let session = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("cairn_session="))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("sign-in failed")
                .to_owned();
            return Err(anyhow!("{message} (HTTP {})", status.as_u16()));
        }
        session.ok_or_else(|| anyhow!("the API did not set a session"))
    }

    /// The API's origin (`scheme://host[:port]`), as a browser would send it.
    fn origin(&self) -> String {
        reqwest::Url::parse(&self.base)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| self.base.trim_end_matches('/').to_owned())
    }

    /// Creates a personal token using a session.
    pub async fn personal_token(&self, session: &str, name: &str) -> Result<Value> {
        let r = self
            .http
            .post(format!("{}/api/auth/token", self.base))
            .header(reqwest::header::COOKIE, format!("cairn_session={session}"))
            // A cookie-authenticated change must say where it comes from (CSRF defence).
            .header(reqwest::header::ORIGIN, self.origin())
            .json(&serde_json::json!({ "name": name }));
        self.send(r).await
    }
}
