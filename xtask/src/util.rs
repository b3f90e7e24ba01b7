//! Paths, the environment every child process gets, and small process helpers.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where things live, and the PATH that puts project-local tools first.
pub struct Ctx {
    /// The repository root (the folder holding the workspace `Cargo.toml`).
    pub root: PathBuf,
    /// `PATH` for children: `.tools/node_modules/.bin`, then cargo's bin folder, then the rest.
    path: OsString,
}

impl Ctx {
    /// Finds the repository and prepares the child environment.
    pub fn new() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent folder")?
            .to_path_buf();
        let mut dirs = vec![root.join(".tools/node_modules/.bin")];
        if let Some(bin) = cargo_home().map(|h| h.join("bin")) {
            dirs.push(bin);
        }
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path = std::env::join_paths(dirs).context("PATH")?;
        let xdg = Path::new(XDG_RUNTIME_DIR);
        if !xdg.is_dir() {
            std::fs::create_dir_all(xdg).with_context(|| format!("creating {}", xdg.display()))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(xdg, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Ctx { root, path })
    }

    /// A path below the repository root.
    pub fn at(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// A command run in the repository root with the project's environment.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.root)
            .env("PATH", &self.path)
            .env("XDG_RUNTIME_DIR", XDG_RUNTIME_DIR)
            .env("WGPU_BACKEND", "vulkan")
            .env("TRUNK_SKIP_VERSION_CHECK", "true");
        c
    }

    /// `cargo` with the project's environment.
    pub fn cargo(&self, args: &[&str]) -> Command {
        let mut c = self.cmd("cargo");
        c.args(args);
        c
    }
}

/// Chromium and lavapipe want a private runtime folder; this one is created with mode 700.
pub const XDG_RUNTIME_DIR: &str = "/tmp/xdg";

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// The command line, for logs.
pub fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs to completion with inherited output; fails on a non-zero exit.
pub fn run(c: &mut Command) -> Result<()> {
    println!("$ {}", show(c));
    let status = c
        .status()
        .with_context(|| format!("could not start `{}`", show(c)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(c));
    }
    Ok(())
}

/// Runs and returns stdout + stderr, or `None` when it cannot start or exits non-zero.
/// For probes such as `tool --version`.
pub fn probe(c: &mut Command) -> Option<String> {
    let out = c.stdin(Stdio::null()).output().ok()?;
    out.status.success().then(|| {
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        s
    })
}

/// Runs with output streamed to the terminal and also captured; returns (success, output).
pub fn run_tee(c: &mut Command) -> Result<(bool, String)> {
    println!("$ {}", show(c));
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", show(c)))?;
    let pump = |r: Box<dyn Read + Send>, err: bool| {
        std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if err {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        })
    };
    let out = pump(Box::new(child.stdout.take().context("stdout")?), false);
    let err = pump(Box::new(child.stderr.take().context("stderr")?), true);
    let status = child.wait()?;
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    Ok((status.success(), text))
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `12.3 s` or `4 min 05 s`.
pub fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{} min {:02} s", (s / 60.0) as u64, s as u64 % 60)
    }
}

/// Times a closure.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// Other processes (not this one) whose command line contains every word in `words`.
pub fn other_processes_with(words: &[&str]) -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        let raw = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        words
            .iter()
            .all(|w| args.iter().any(|a| a == w || a.ends_with(&format!("/{w}"))))
            .then(|| (pid, args.join(" ")))
    })
    .collect()
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    probe(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}
