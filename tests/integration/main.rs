//! Integration tests: the real `hybridsync` binary as console and agents, real SQLite, real HTTP on
//! loopback, and real headless Chromium. One test binary (modules below) to keep link time down.

mod chromium_support;
mod directory_support;
mod support;

mod api;
mod browser;
mod device;
mod directory;
mod enrollment;
mod fleet_sim;
mod hardening;
mod health;
mod metrics_sync;
mod oidc;
mod pages;
mod sync;
mod sync_ad;
mod sync_delta;
mod sync_pages;
mod tls;
mod writeback;
mod writeback_pages;
