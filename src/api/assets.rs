//! The dashboard's files, served at `/` by every API process, so that one binary is the
//! whole product: the build embeds `frontend/dist` (debug builds too, so what is tested
//! is what ships; `build.rs` rebuilds when it changes). A directory given with
//! `CAIRN_STATIC_DIR` wins over the embedded copy, for working on the dashboard; a build
//! made without `frontend/dist` answers with a page that says how to add it.
//!
//! Served like a product: Vite's content-hashed files under `/assets/` are cached for a
//! year as immutable, everything else (`index.html`) is revalidated on every load with
//! its ETag; text is compressed (gzip or brotli, as the client accepts) by the layer in
//! [`router`], which covers these files only, never the API's event streams. Source maps
//! are neither embedded nor served from a directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tower_http::compression::CompressionLayer;

/// `frontend/dist` as it was when this binary was built, without source maps.
#[derive(rust_embed::RustEmbed)]
#[folder = "frontend/dist/"]
#[allow_missing = true]
#[exclude = "*.map"]
struct Dist;

/// Cache for files whose name changes with their content (Vite's `/assets/*-HASH.*`).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache for everything else: kept, but checked with the server on every use.
const REVALIDATE: &str = "no-cache";
/// Largest file served from a directory (the dashboard's are far smaller).
const MAX_FILE: u64 = 32 * 1024 * 1024;
/// The server's own paths: when one reaches the dashboard (`/metrics` served on a
/// listener of its own), it is not there, rather than a page of the dashboard.
const SERVER_PATHS: [&str; 4] = ["api", "metrics", "healthz", "readyz"];

/// Whether this binary was built with the dashboard inside.
pub fn embedded() -> bool {
    Dist::get("index.html").is_some()
}

/// Where the dashboard's files come from.
#[derive(Debug, Clone)]
enum Source {
    /// A directory (`CAIRN_STATIC_DIR`), read on every request.
    Dir(PathBuf),
    /// The copy built into the binary.
    Embedded,
    /// Neither: the page that says how to add it (`dir_set`: `CAIRN_STATIC_DIR` named
    /// a folder without `index.html`).
    Missing { dir_set: bool },
}

impl Source {
    fn choose(dir: Option<&Path>) -> Source {
        match dir {
            Some(d) if d.join("index.html").is_file() => Source::Dir(d.to_owned()),
            Some(d) => {
                tracing::warn!(
                    dir = %d.display(),
                    "CAIRN_STATIC_DIR has no index.html: the dashboard is not served \
                     (build it with `cd frontend && npm ci && npm run build`, or unset \
                     CAIRN_STATIC_DIR to serve the copy built into this binary)"
                );
                Source::Missing { dir_set: true }
            }
            None if embedded() => Source::Embedded,
            None => Source::Missing { dir_set: false },
        }
    }
}

/// One file, ready to answer with.
struct File {
    bytes: std::borrow::Cow<'static, [u8]>,
    mime: String,
    etag: String,
}

fn etag(hash: &[u8]) -> String {
    // Weak: the compression layer may send other bytes for the same file.
    format!("W/\"{}\"", hex::encode(&hash[..16]))
}

/// `rel` as a path inside the dashboard: plain names only, no `..`, nothing hidden.
fn clean(rel: &str) -> Option<&str> {
    let ok = !rel.is_empty()
        && rel.len() <= 512
        && rel.split('/').all(|seg| {
            !seg.is_empty() && !seg.starts_with('.') && !seg.contains(['\\', '\0', ':'])
        });
    ok.then_some(rel)
}

async fn read(source: &Source, rel: &str) -> Option<File> {
    let rel = clean(rel)?;
    if rel.ends_with(".map") {
        return None;
    }
    match source {
        Source::Embedded => Dist::get(rel).map(|f| File {
            mime: f.metadata.mimetype().to_owned(),
            etag: etag(&f.metadata.sha256_hash()),
            bytes: f.data,
        }),
        Source::Dir(dir) => {
            let path = dir.join(rel);
            let meta = tokio::fs::metadata(&path).await.ok()?;
            if !meta.is_file() || meta.len() > MAX_FILE {
                return None;
            }
            let bytes = tokio::fs::read(&path).await.ok()?;
            Some(File {
                mime: mime_guess::from_path(&path)
                    .first_or_octet_stream()
                    .essence_str()
                    .to_owned(),
                etag: etag(&Sha256::digest(&bytes)),
                bytes: bytes.into(),
            })
        }
        Source::Missing { .. } => None,
    }
}

fn with_charset(mime: &str) -> String {
    if mime.starts_with("text/") || mime == "application/javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

fn answer(file: File, cache: &'static str, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == file.etag || t.trim() == "*")
        });
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(file.bytes))
    };
    let h = r.headers_mut();
    // On a 304 too: the browser takes the 304's headers for its cached copy, and the
    // security headers choose the page's Content-Security-Policy by this type.
    if let Ok(v) = HeaderValue::from_str(&with_charset(&file.mime)) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&file.etag) {
        h.insert(header::ETAG, v);
    }
    r
}

fn not_found() -> Response {
    let mut r = (StatusCode::NOT_FOUND, "not found\n").into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    r
}

/// The page served in place of the dashboard when there is none to serve.
fn missing_page(dir_set: bool) -> Response {
    let why = if dir_set {
        "<p><code>CAIRN_STATIC_DIR</code> names a folder without <code>index.html</code> \
         (the server's log says which). Build the dashboard into it, or unset \
         <code>CAIRN_STATIC_DIR</code> to serve the copy built into the binary.</p>"
    } else {
        "<p>This <code>cairn</code> was built without <code>frontend/dist</code>.</p>"
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Cairn: the dashboard is not built</title></head><body>\n\
         <h1>The dashboard is not built</h1>\n{why}\n\
         <p>Build it, then build <code>cairn</code> again (it embeds the dashboard):</p>\n\
         <pre>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build &amp;&amp; cd ..\n\
         cargo build --release    # or: just install</pre>\n\
         <p>Or serve it from the folder, without rebuilding: \
         <code>CAIRN_STATIC_DIR=frontend/dist cairn dev</code>.</p>\n\
         <p>The API works without it: <a href=\"/api/openapi.json\">/api/openapi.json</a>, \
         and <code>ctl</code>.</p>\n</body></html>\n"
    );
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    r
}

async fn serve(
    State(source): State<Arc<Source>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let rel = uri.path().trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    if let Some(file) = read(&source, rel).await {
        let cache = if rel.starts_with("assets/") {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        return answer(file, cache, &headers);
    }
    // A missing build file, a source map or a server path is a 404; any other path is
    // one of the dashboard's own routes, which its index renders.
    let first = rel.split('/').next().unwrap_or(rel);
    if first == "assets" || rel.ends_with(".map") || SERVER_PATHS.contains(&first) {
        return not_found();
    }
    match read(&source, "index.html").await {
        Some(index) => answer(index, REVALIDATE, &headers),
        None => missing_page(matches!(
            source.as_ref(),
            Source::Dir(_) | Source::Missing { dir_set: true }
        )),
    }
}

/// The dashboard at every path it is given: files from `dir` when set, else the copy
/// built into the binary, else the page that says how to add it.
pub fn router(dir: Option<&Path>) -> Router {
    let source = Arc::new(Source::choose(dir));
    Router::new()
        .fallback(serve)
        .with_state(source)
        .layer(CompressionLayer::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_inside_the_dashboard() {
        for bad in [
            "",
            "../etc/passwd",
            "assets/../../x",
            "a//b",
            ".env",
            "a/.git/x",
            "c:\\x",
        ] {
            assert_eq!(clean(bad), None, "{bad}");
        }
        assert_eq!(clean("assets/index-abc.js"), Some("assets/index-abc.js"));
    }

    #[test]
    fn text_carries_its_charset() {
        assert_eq!(with_charset("text/html"), "text/html; charset=utf-8");
        assert_eq!(with_charset("image/png"), "image/png");
    }
}
