//! A `bst serve` process on a free loopback port for end-to-end tests.
//!
//! Include it with `#[path = "support/server.rs"] mod server;`. Each server gets its own REST
//! and Flight ports, so tests run side by side. The server's log is forwarded to the test
//! output, and the process is killed when the [`Server`] is dropped.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// How long a server may take to answer `/healthz` after it starts.
const READY_DEADLINE: Duration = Duration::from_secs(300);

/// Returns a free loopback port. Another process may take it before the caller binds it, which
/// is rare enough for tests.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free loopback port")
        .port()
}

/// Options of a test server: its data folder, worker count, extra arguments and environment.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub workers: usize,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The REST port; a free one when `None`. A restart passes the old port to keep URLs.
    pub port: Option<u16>,
}

impl ServerOptions {
    /// Options for a server on `data_dir` with `workers` in-process workers.
    pub fn new(data_dir: &Path, workers: usize) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            workers,
            args: Vec::new(),
            env: Vec::new(),
            port: None,
        }
    }

    /// Adds an environment variable of the server process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds command-line arguments after `serve`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| (*arg).to_string()));
        self
    }
}

/// A running `bst serve`, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub port: u16,
    pub base_url: String,
    pub client: Client,
}

impl Server {
    /// Starts a server with `workers` workers on `data_dir` and waits until it is ready.
    pub fn start(data_dir: &Path, workers: usize) -> Self {
        Self::start_with(&ServerOptions::new(data_dir, workers))
    }

    /// Starts a server with `options` and waits until `/healthz` answers.
    pub fn start_with(options: &ServerOptions) -> Self {
        let port = options.port.unwrap_or_else(free_port);
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--workers",
                &options.workers.to_string(),
            ])
            .arg("--data-dir")
            .arg(&options.data_dir)
            .args(&options.args)
            .env_remove("BST_DATASETS_DIR")
            .env_remove("BST_API_KEYS")
            .env_remove("REDIS_URL")
            .env_remove("BYBIT_WS_ENABLED")
            // Tests run servers side by side, so none may take the fixed default Flight port.
            .env("BST_FLIGHT_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("failed to start bst serve");
        let base_url = format!("http://127.0.0.1:{port}");

        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[bst serve] {line}");
            }
        });

        let client = Client::new();
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let health = client.get(format!("{base_url}/healthz")).send();
            if health.is_ok_and(|response| response.status().is_success()) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("bst serve exited early with {status}");
            }
            assert!(Instant::now() < deadline, "bst serve did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            port,
            base_url,
            client,
        }
    }

    /// Returns the URL of `path` under `/api/v1`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base_url)
    }

    /// Kills the process with SIGKILL and waits for it, as a crash would end it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
