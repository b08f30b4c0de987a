//! API keys against a real `bst serve`: with `BST_API_KEYS` set, every route of the OpenAPI
//! document but `/healthz`, the `/api/v1/live` WebSocket and the Flight port return 401 (or
//! gRPC `UNAUTHENTICATED`) without a valid key and serve with one; keys never reach the log;
//! CORS headers follow `BST_CORS_ORIGINS`; and without keys the server rejects a
//! non-loopback address before it binds anything.
//!
//! The Flight check runs pyarrow from `BST_PYTHON` (see `tests/python-requirements.txt`).

#[path = "support/server.rs"]
mod server;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use server::{Server, ServerOptions, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_bst");

/// Bybit REST URL of the test servers: a closed loopback port, so that no request leaves the
/// machine.
const OFFLINE_BYBIT_URL: &str = "http://127.0.0.1:9";
const KEYS: &str = "k3y-alpha-7f3e,k3y-beta-91c2";
const KEY: &str = "k3y-beta-91c2";

/// How long a rejected `bst serve` may take to exit.
const EXIT_DEADLINE: Duration = Duration::from_secs(60);

fn python() -> PathBuf {
    match std::env::var_os("BST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "set BST_PYTHON to a Python with the packages of tests/python-requirements.txt; \
             the Flight part of the auth test runs pyarrow"
        ),
    }
}

/// Reads every operation of the server's OpenAPI document, as (method, path template).
fn operations(server: &Server) -> Vec<(Method, String)> {
    let response = server
        .client
        .get(server.url("/openapi.json"))
        .bearer_auth(KEY)
        .send()
        .expect("GET /api/v1/openapi.json");
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().expect("a JSON document");
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes())
                .expect("an HTTP method in the document");
            operations.push((method, path.clone()));
        }
    }
    operations
}

/// Builds a request of `method` on `path` with its parameters filled in: `1` for path
/// parameters and `{}` as the JSON body of writes.
fn request(client: &Client, base_url: &str, method: &Method, path: &str) -> RequestBuilder {
    let mut concrete = String::new();
    let mut in_parameter = false;
    for c in path.chars() {
        match c {
            '{' => in_parameter = true,
            '}' => {
                in_parameter = false;
                concrete.push('1');
            }
            _ if !in_parameter => concrete.push(c),
            _ => {}
        }
    }
    let builder = client.request(method.clone(), format!("{base_url}{concrete}"));
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        builder
            .header("content-type", "application/json")
            .body("{}")
    } else {
        builder
    }
}

fn detail_of(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|body| body["detail"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn every_route_needs_a_key() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let server = Server::start_with(
        &ServerOptions::new(data.path(), 0)
            .env("BYBIT_REST_URL", OFFLINE_BYBIT_URL)
            .env("BST_API_KEYS", KEYS)
            .env("BST_CORS_ORIGINS", "https://app.example.com"),
    );
    let operations = operations(&server);
    assert!(
        operations.len() >= 15,
        "the document lists only {operations:?}"
    );
    assert!(
        operations
            .iter()
            .any(|(method, path)| method == Method::GET && path == "/metrics"),
        "GET /metrics is missing in the document"
    );

    let mut failures = Vec::new();
    for (method, path) in &operations {
        let open = path == "/healthz";
        let without = request(&server.client, &server.base_url, method, path)
            .send()
            .expect("a request without a key");
        let status = without.status();
        let challenge = without.headers().contains_key("www-authenticate");
        let detail = detail_of(&without.text().unwrap_or_default());
        if open {
            if status != StatusCode::OK {
                failures.push(format!(
                    "{method} {path} without a key: {status}, expected 200"
                ));
            }
        } else if status != StatusCode::UNAUTHORIZED || detail.is_empty() || !challenge {
            failures.push(format!(
                "{method} {path} without a key: {status}, detail {detail:?}, WWW-Authenticate \
                 sent: {challenge}; expected 401 with both"
            ));
        }

        let wrong = request(&server.client, &server.base_url, method, path)
            .bearer_auth("k3y-alpha-7f3")
            .send()
            .expect("a request with a wrong key");
        if !open && wrong.status() != StatusCode::UNAUTHORIZED {
            failures.push(format!(
                "{method} {path} with a wrong key: {}, expected 401",
                wrong.status()
            ));
        }

        let with = request(&server.client, &server.base_url, method, path)
            .header("authorization", format!("bearer {KEY}"))
            .send()
            .expect("a request with a key");
        let status = with.status();
        if status == StatusCode::UNAUTHORIZED || status.is_server_error() {
            failures.push(format!(
                "{method} {path} with a key: {status}, body {}",
                with.text().unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // An unknown path needs a key too, so that it reveals nothing about the routes.
    let unknown = server
        .client
        .get(server.url("/no/such/route"))
        .send()
        .expect("GET an unknown route");
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    // A preflight carries no key and gets the CORS headers of the allowed origin.
    let preflight = server
        .client
        .request(Method::OPTIONS, server.url("/strategies"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .expect("a CORS preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .and_then(|value| value.to_str().ok()),
        Some("https://app.example.com")
    );
    let allowed_headers = headers
        .get("access-control-allow-headers")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let other_origin = server
        .client
        .get(server.url("/strategies"))
        .bearer_auth(KEY)
        .header("origin", "https://evil.example.net")
        .send()
        .expect("a request from another origin");
    assert_eq!(other_origin.status(), StatusCode::OK);
    assert!(
        !other_origin
            .headers()
            .contains_key("access-control-allow-origin"),
        "another origin was allowed"
    );
}

#[test]
fn live_websocket_needs_a_key() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let server = Server::start_with(
        &ServerOptions::new(data.path(), 0)
            .env("BYBIT_REST_URL", OFFLINE_BYBIT_URL)
            .env("BST_API_KEYS", KEYS),
    );
    let url = format!("ws://127.0.0.1:{}/api/v1/live", server.port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        for query in ["", "?token=", "?token=wrong", "?token=k3y-beta-91c"] {
            let error = tokio_tungstenite::connect_async(format!("{url}{query}"))
                .await
                .expect_err("a connection without a valid key fails");
            assert!(error.to_string().contains("401"), "{query}: {error}");
        }

        let (mut by_token, _) = tokio_tungstenite::connect_async(format!("{url}?token={KEY}"))
            .await
            .expect("a connection with ?token=");
        let confirmation = next_json(&mut by_token).await;
        assert_eq!(confirmation["status"], "subscribed", "{confirmation}");

        let mut request = url
            .as_str()
            .into_client_request()
            .expect("a WebSocket request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {KEY}").parse().expect("a header value"),
        );
        let (mut by_header, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("a connection with the Authorization header");
        let confirmation = next_json(&mut by_header).await;
        assert_eq!(confirmation["status"], "subscribed", "{confirmation}");
    });
}

async fn next_json<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
        .await
        .expect("a frame within 30 s")
        .expect("an open stream")
        .expect("a valid frame");
    serde_json::from_str(message.to_text().expect("a text frame")).expect("a JSON frame")
}

/// Calls `list_flights` with no key, a wrong key and a valid key, and prints the outcome of
/// each as JSON.
const FLIGHT_AUTH_SCRIPT: &str = r#"
import json, sys
import pyarrow.flight as flight

port, key = int(sys.argv[1]), sys.argv[2]
client = flight.connect(f"grpc://127.0.0.1:{port}")

def outcome(headers):
    options = flight.FlightCallOptions(headers=headers)
    try:
        return len(list(client.list_flights(options=options)))
    except flight.FlightUnauthenticatedError:
        return "UNAUTHENTICATED"
    except flight.FlightError as error:
        return f"{type(error).__name__}: {error}"

print(json.dumps({
    "missing": outcome([]),
    "wrong": outcome([(b"authorization", b"Bearer wrong")]),
    "valid": outcome([(b"authorization", f"Bearer {key}".encode())]),
}))
"#;

#[test]
fn flight_needs_a_key() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let flight_port = free_port();
    let server = Server::start_with(
        &ServerOptions::new(data.path(), 0)
            .env("BYBIT_REST_URL", OFFLINE_BYBIT_URL)
            .env("BST_API_KEYS", KEYS)
            .args(&["--flight-addr", &format!("127.0.0.1:{flight_port}")]),
    );
    let output = Command::new(python())
        .args(["-c", FLIGHT_AUTH_SCRIPT, &flight_port.to_string(), KEY])
        .output()
        .expect("failed to run BST_PYTHON");
    assert!(
        output.status.success(),
        "the Flight client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome: Value = serde_json::from_slice(&output.stdout).expect("JSON from the client");
    assert_eq!(outcome["missing"], "UNAUTHENTICATED", "{outcome}");
    assert_eq!(outcome["wrong"], "UNAUTHENTICATED", "{outcome}");
    assert!(outcome["valid"].is_u64(), "{outcome}");
    drop(server);
}

/// Runs `bst serve` with `args` and no API keys, and returns its exit status and log.
fn serve_without_keys(args: &[&str], keys: Option<&str>) -> (bool, String) {
    let data = tempfile::tempdir().expect("a temporary folder");
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(data.path())
        .args(["--workers", "0"])
        .env_remove("BST_API_KEYS")
        .env_remove("BST_DATASETS_DIR")
        .env_remove("REDIS_URL")
        .env_remove("BYBIT_WS_ENABLED")
        .env("BYBIT_REST_URL", OFFLINE_BYBIT_URL)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(keys) = keys {
        command.env("BST_API_KEYS", keys);
    }
    let mut child = command.spawn().expect("failed to start bst serve");
    let deadline = Instant::now() + EXIT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the process status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bst serve {args:?} kept running; it must exit before binding");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
        }
    }
    (status.success(), log)
}

#[test]
fn non_loopback_without_keys_is_rejected() {
    let rest = format!("0.0.0.0:{}", free_port());
    let (succeeded, log) = serve_without_keys(&["--addr", &rest], None);
    assert!(!succeeded, "bst serve --addr {rest} started without keys");
    assert!(log.contains(&rest), "the error does not name {rest}: {log}");
    assert!(
        log.contains("BST_API_KEYS"),
        "the error does not name the fix: {log}"
    );

    // A key list without a key counts as no keys.
    let (succeeded, log) = serve_without_keys(&["--addr", &rest], Some(" , "));
    assert!(
        !succeeded,
        "bst serve --addr {rest} started with an empty key list"
    );
    assert!(log.contains("BST_API_KEYS"), "{log}");

    let flight = format!("0.0.0.0:{}", free_port());
    let loopback = format!("127.0.0.1:{}", free_port());
    let (succeeded, log) =
        serve_without_keys(&["--addr", &loopback, "--flight-addr", &flight], None);
    assert!(
        !succeeded,
        "bst serve --flight-addr {flight} started without keys"
    );
    assert!(
        log.contains(&flight),
        "the error does not name {flight}: {log}"
    );
    assert!(
        log.contains("BST_API_KEYS"),
        "the error does not name the fix: {log}"
    );
}

#[test]
fn keys_stay_out_of_the_log() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--workers",
            "0",
            "--addr",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env("BST_API_KEYS", KEYS)
        .env("BST_FLIGHT_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .env_remove("BST_DATASETS_DIR")
        .env_remove("REDIS_URL")
        .env_remove("BYBIT_WS_ENABLED")
        .env("BYBIT_REST_URL", OFFLINE_BYBIT_URL)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start bst serve");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let collected = Arc::clone(&log);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = collected.lock().expect("the log lock");
            log.push_str(&line);
            log.push('\n');
        }
    });

    let client = Client::new();
    let base_url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !client
        .get(format!("{base_url}/healthz"))
        .send()
        .is_ok_and(|response| response.status().is_success())
    {
        assert!(Instant::now() < deadline, "bst serve did not become ready");
        assert!(
            child.try_wait().expect("the process status").is_none(),
            "bst serve exited early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let requests = [
        client
            .get(format!("{base_url}/api/v1/strategies"))
            .bearer_auth(KEY),
        client
            .get(format!("{base_url}/api/v1/strategies"))
            .bearer_auth("k3y-alpha-7f3e-wrong"),
        client.get(format!("{base_url}/api/v1/live?token={KEY}")),
        client.get(format!("{base_url}/api/v1/live?token=k3y-alpha-7f3e")),
        client
            .get(format!("{base_url}/metrics"))
            .bearer_auth("k3y-alpha-7f3e"),
    ];
    for request in requests {
        let response = request.send().expect("a request");
        assert!(
            !response.status().is_server_error(),
            "{}",
            response.status()
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().expect("the log reader");

    let log = log.lock().expect("the log lock").clone();
    assert!(
        log.contains("/api/v1/strategies"),
        "the debug log has no request lines, so it proves nothing:\n{log}"
    );
    for key in KEYS.split(',') {
        assert!(!log.contains(key), "the log contains the key {key}");
    }
}
