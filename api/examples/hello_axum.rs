//! An axum hello-world server, the baseline of the REST load benchmark.
//!
//! It serves `GET /` with a fixed text body on the address given as the first argument
//! (default 127.0.0.1:3999), on the same runtime configuration as `bst serve`.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3999".to_string());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let app = Router::new().route("/", get(|| async { "Hello, World!" }));
    axum::serve(listener, app).await
}
