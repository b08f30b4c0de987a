//! Test support shared by the ingest integration tests.

pub(crate) mod bybit_server;
