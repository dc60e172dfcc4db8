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

impl Client {
    pub fn new(global: &Global) -> Result<Client> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cairn-ctl/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base: global.api_url.trim_end_matches('/').to_owned(),
            token: global.token.clone(),
        })
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
        Err(anyhow!("{message} (HTTP {})", status.as_u16()))
    }
}
