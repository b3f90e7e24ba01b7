//! Headless Chromium for the browser checks: a chromedriver child (`Driver`), a W3C WebDriver
//! session over HTTP (`Session`), and a tiny static file server (`StaticServer`). Used by the
//! e2e check of the playground, the example page check and the in-browser benchmarks.

use crate::setup::{CHROMEDRIVER, CHROMIUM};
use crate::util::Ctx;
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// W3C element reference key.
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A free localhost port (the listener is dropped, so the port is free again right after).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Serves files below `root` on `127.0.0.1:port`, on a background thread, until the process ends.
pub struct StaticServer {
    /// The port it listens on.
    pub port: u16,
}

impl StaticServer {
    /// Binds a free port and starts serving.
    pub fn start(root: PathBuf, prefix: String) -> Result<Self> {
        if !root.join("index.html").is_file() {
            bail!(
                "{} has no index.html: did the trunk build fail?",
                root.display()
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, prefix) = (root.clone(), prefix.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &root, &prefix);
                });
            }
        });
        Ok(StaticServer { port })
    }
}

pub fn serve_one(mut stream: TcpStream, root: &Path, prefix: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let (status, ctype, body) = match resolve(root, prefix, path) {
        _ if method != "GET" && method != "HEAD" => {
            ("405 Method Not Allowed", "text/plain", b"GET only".to_vec())
        }
        Some(file) => match std::fs::read(&file) {
            Ok(b) => ("200 OK", mime(&file), b),
            Err(_) => ("404 Not Found", "text/plain", b"not found".to_vec()),
        },
        None => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Cross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Embedder-Policy: require-corp\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}

/// Maps a URL path to a file; `..` is refused; extension-less misses fall back to index.html.
pub fn resolve(root: &Path, prefix: &str, path: &str) -> Option<PathBuf> {
    let rel = path
        .strip_prefix(prefix)
        .or_else(|| path.strip_prefix(prefix.trim_end_matches('/')))?;
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|seg| seg == "..") {
        return None;
    }
    let file = if rel.is_empty() {
        root.join("index.html")
    } else {
        root.join(rel)
    };
    if file.is_file() {
        Some(file)
    } else if file.is_dir() && file.join("index.html").is_file() {
        Some(file.join("index.html"))
    } else if Path::new(rel).extension().is_none() {
        Some(root.join("index.html"))
    } else {
        None
    }
}

pub fn mime(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// A chromedriver child process, killed on drop.
pub struct Driver {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Driver {
    pub fn start() -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("XDG_RUNTIME_DIR", crate::util::XDG_RUNTIME_DIR)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER} (run `cargo xtask setup --test`)"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            agent,
        };
        let t = Instant::now();
        loop {
            let ready = call(&d.agent, "GET", &format!("{}/status", d.base), None)
                .ok()
                .and_then(|v| v.get("ready").and_then(Value::as_bool))
                .unwrap_or(false);
            if ready {
                return Ok(d);
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("chromedriver on port {port} did not become ready within 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn new_session(&self, ctx: &Ctx) -> Result<Session<'_>> {
        let mut args = chrome_args(ctx);
        args.push("--window-size=1280,1000".into());
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" }
        }}});
        let v = call(
            &self.agent,
            "POST",
            &format!("{}/session", self.base),
            Some(caps),
        )
        .context("new WebDriver session")?;
        let id = v
            .get("sessionId")
            .and_then(Value::as_str)
            .context("no sessionId in the new-session reply")?;
        Ok(Session {
            driver: self,
            url: format!("{}/session/{id}", self.base),
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Chromium flags from tests/webdriver.json (one source for both browser test kinds).
pub fn chrome_args(ctx: &Ctx) -> Vec<String> {
    let json: Option<Value> = std::fs::read_to_string(ctx.at("tests/webdriver.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    json.as_ref()
        .and_then(|v| v.pointer("/goog:chromeOptions/args"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_else(|| {
            [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--enable-unsafe-webgpu",
            ]
            .map(String::from)
            .to_vec()
        })
}

pub struct Session<'a> {
    driver: &'a Driver,
    url: String,
}

impl Session<'_> {
    pub fn get(&self, cmd: &str) -> Result<Value> {
        call(
            &self.driver.agent,
            "GET",
            &format!("{}/{cmd}", self.url),
            None,
        )
    }

    pub fn post(&self, cmd: &str, body: Value) -> Result<Value> {
        call(
            &self.driver.agent,
            "POST",
            &format!("{}/{cmd}", self.url),
            Some(body),
        )
    }

    pub fn delete(&self) -> Result<Value> {
        call(&self.driver.agent, "DELETE", &self.url, None)
    }

    /// The text of the first element matching `css`, or `None` when there is none yet.
    pub fn text_of(&self, css: &str) -> Result<Option<String>> {
        let el = match self.post("element", json!({ "using": "css selector", "value": css })) {
            Ok(v) => v,
            Err(e) if format!("{e:#}").contains("no such element") => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = el
            .get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .context("element reply without an id")?;
        match self.get(&format!("element/{id}/text")) {
            Ok(v) => Ok(v.as_str().map(String::from)),
            Err(e) if format!("{e:#}").contains("stale element") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The browser console so far (chromedriver's legacy log endpoint), best effort.
    pub fn browser_log(&self) -> String {
        match self.post("se/log", json!({ "type": "browser" })) {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| {
                    format!(
                        "[{}] {}",
                        e.get("level").and_then(Value::as_str).unwrap_or("?"),
                        e.get("message").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(v) => v.to_string(),
            Err(e) => format!("(unavailable: {e:#})"),
        }
    }
}

/// One WebDriver call; returns the reply's `value`, or an error carrying WebDriver's message.
pub fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> Result<Value> {
    let resp = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, b) => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(b.unwrap_or_else(|| json!({})).to_string()),
    };
    let mut resp = resp.with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .with_context(|| format!("reading the reply to {method} {url}"))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{method} {url}: not JSON: {}", truncate(&text, 200)))?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if !status.is_success() {
        let err = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        let msg = value.get("message").and_then(Value::as_str).unwrap_or("");
        bail!("{method} {url}: {status}: {err}: {}", truncate(msg, 500));
    }
    Ok(value)
}

/// Saves a PNG screenshot of the session to `rel` (relative to the repository root).
pub fn save_screenshot_to(ctx: &Ctx, s: &Session, rel: &str) -> Result<()> {
    let v = s.get("screenshot")?;
    let b64 = v.as_str().context("screenshot is not a string")?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("screenshot base64")?;
    let path = ctx.at(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, png)?;
    println!("e2e: screenshot saved to {rel}");
    Ok(())
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + " …"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_safely() {
        let dir = std::env::temp_dir().join(format!("xtask-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "x").unwrap();
        std::fs::write(dir.join("app.wasm"), "x").unwrap();
        assert_eq!(resolve(&dir, "/", "/"), Some(dir.join("index.html")));
        assert_eq!(resolve(&dir, "/", "/app.wasm"), Some(dir.join("app.wasm")));
        assert_eq!(resolve(&dir, "/", "/missing.js"), None);
        assert_eq!(
            resolve(&dir, "/", "/settings"),
            Some(dir.join("index.html"))
        );
        assert_eq!(resolve(&dir, "/", "/../etc/passwd"), None);
        assert_eq!(
            resolve(&dir, "/lithe/", "/lithe/app.wasm"),
            Some(dir.join("app.wasm"))
        );
        assert_eq!(
            resolve(&dir, "/lithe/", "/lithe"),
            Some(dir.join("index.html"))
        );
        assert_eq!(mime(&dir.join("app.wasm")), "application/wasm");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
