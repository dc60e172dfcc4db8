//! The dashboard as the binary serves it: from the copy built into a real `cairn api`
//! process started where there is no `frontend/dist` (a fresh folder, `CAIRN_STATIC_DIR`
//! unset), with the caching, compression and no source maps; and from a folder given
//! with `CAIRN_STATIC_DIR`, which wins.
//!
//! Which of the two answers `/` gets depends on the build, and the rule is: when
//! `frontend/dist/index.html` exists beside `Cargo.toml`, the binary must carry it (the
//! build embeds it and rebuilds when it changes, see `build.rs`; CI builds the dashboard
//! before the binary); when it does not, `/` must be the page that says how to add it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use reqwest::header;
use sqlx::PgPool;
use tokio::time::Instant;

const WORKFLOW: &str = "[[steps]]\nid = \"one\"\nkind = \"sleep\"\nduration = \"1ms\"\n";

/// A `cairn api` process on port 0, killed when dropped; its base URL.
struct Api {
    child: std::process::Child,
    base: String,
    dir: std::path::PathBuf,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn cairn_api(pool: &PgPool) -> Api {
    let dir = std::env::temp_dir().join(format!("cairn-dash-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(dir.join("workflows/one.toml"), WORKFLOW).unwrap();
    let log = dir.join("api.log");
    let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["api", "--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .env("DATABASE_URL", database_url(pool))
        .env_remove("CAIRN_STATIC_DIR")
        .env_remove("CAIRN_WORKFLOWS_DIR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cairn api starts");
    let mut api = Api {
        child,
        base: String::new(),
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains("API listening"))
            .and_then(|l| l.split("addr=").nth(1))
        {
            api.base = format!("http://{}", addr.trim());
            return api;
        }
        if let Ok(Some(status)) = api.child.try_wait() {
            panic!("cairn api exited ({status}):\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "cairn api did not listen:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header_of(r: &reqwest::Response, name: header::HeaderName) -> String {
    r.headers()
        .get(&name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[sqlx::test(migrations = false)]
async fn the_binary_serves_the_dashboard_it_was_built_with(pool: PgPool) {
    migrate(&pool).await;
    let api = cairn_api(&pool).await;
    assert!(!api.dir.join("frontend").exists());
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", api.base));

    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("frontend/dist/index.html");
    if !cairn::api::dashboard_embedded() {
        assert!(
            !built.is_file(),
            "{} exists but the binary was built without it",
            built.display()
        );
        let r = get("/").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
        let page = r.text().await.unwrap();
        assert!(
            page.contains("The dashboard is not built")
                && page.contains("npm ci &amp;&amp; npm run build")
                && page.contains("CAIRN_STATIC_DIR"),
            "{page}"
        );
        assert_eq!(
            get("/assets/index-x.js").send().await.unwrap().status(),
            404
        );
        eprintln!("built without frontend/dist: checked the page that says how to add it");
        return;
    }

    // index.html: revalidated on every load, compressed for clients that accept it.
    let r = get("/").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header_of(&r, header::CONTENT_TYPE).starts_with("text/html"));
    assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
    let etag = header_of(&r, header::ETAG);
    assert!(!etag.is_empty());
    let index = r.text().await.unwrap();
    assert!(index.contains("<div id=\"root\">"), "{index}");
    let revalidated = get("/")
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    // The browser updates its copy with the 304's headers: the 304 carries no policy,
    // so the page keeps its own rather than the API's `default-src 'none'`.
    assert!(
        revalidated
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .is_none(),
        "{:?}",
        revalidated.headers()
    );
    let br = get("/")
        .header(header::ACCEPT_ENCODING, "br")
        .send()
        .await
        .unwrap();
    assert_eq!(header_of(&br, header::CONTENT_ENCODING), "br");
    // A route of the dashboard's own is its index.
    let route = get("/runs/01ABC").send().await.unwrap();
    assert_eq!(route.status(), 200);
    assert!(route.text().await.unwrap().contains("<div id=\"root\">"));

    // A hashed script: cached for a year as immutable, gzip or brotli, no source map.
    let script = index
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .expect("index.html names its script")
        .to_owned();
    let r = get(&script).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header_of(&r, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert!(header_of(&r, header::CONTENT_TYPE).contains("javascript"));
    let plain = r.bytes().await.unwrap().len();
    let gz = get(&script)
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header_of(&gz, header::CONTENT_ENCODING), "gzip");
    let zipped = gz.bytes().await.unwrap().len();
    assert!(zipped * 2 < plain, "gzip: {zipped} of {plain} bytes");
    let br = get(&script)
        .header(header::ACCEPT_ENCODING, "br, gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header_of(&br, header::CONTENT_ENCODING), "br");
    for map in [format!("{script}.map"), "/assets/nothing.js".to_owned()] {
        assert_eq!(get(&map).send().await.unwrap().status(), 404, "{map}");
    }
    // The API is not the dashboard, and its event stream is never compressed.
    let r = get("/api/nope").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(header_of(&r, header::CONTENT_TYPE).starts_with("application/json"));
}

#[sqlx::test(migrations = false)]
async fn a_static_folder_wins_over_the_built_in_copy(pool: PgPool) {
    migrate(&pool).await;
    let dir = std::env::temp_dir().join(format!("cairn-static-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><p>from the folder</p>",
    )
    .unwrap();
    let script = "console.log('from the folder');\n".repeat(40);
    std::fs::write(dir.join("assets/app-1234.js"), &script).unwrap();
    std::fs::write(dir.join("assets/app-1234.js.map"), "{}").unwrap();
    std::fs::write(dir.join(".env"), "SECRET=1").unwrap();
    let api = TestApi::builder(&pool)
        .flags(&["--static-dir", dir.to_str().unwrap()])
        .start()
        .await;
    let (base, http) = (api.base.clone(), api.http.clone());
    let get = |path: &str| http.get(format!("{base}{path}"));

    let r = get("/schedules").send().await.unwrap();
    assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache");
    assert!(r.text().await.unwrap().contains("from the folder"));
    let r = get("/assets/app-1234.js")
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header_of(&r, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header_of(&r, header::CONTENT_ENCODING), "gzip");
    for path in ["/assets/app-1234.js.map", "/assets/..%2f.env", "/readyz/x"] {
        assert_eq!(get(path).send().await.unwrap().status(), 404, "{path}");
    }
    assert!(
        !get("/.env")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("SECRET")
    );
    drop(api);

    // A folder without index.html: the page that says so, not the built-in copy.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let api = TestApi::builder(&pool)
        .flags(&["--static-dir", empty.to_str().unwrap()])
        .start()
        .await;
    let page = http
        .get(api.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("names a folder without"), "{page}");
    let _ = std::fs::remove_dir_all(dir);
}

#[sqlx::test(migrations = false)]
async fn admin_commands_print_no_notices_about_migrations(pool: PgPool) {
    migrate(&pool).await;
    for email in ["a@example.com", "b@example.com"] {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["admin", "create-user", "--email", email, "--password-stdin"])
            .env("DATABASE_URL", database_url(&pool))
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(b"correct horse battery\n")?;
                c.wait_with_output()
            })
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("already exists"), "{err}");
        assert!(!err.contains('\x1b'), "{err}");
    }
}
