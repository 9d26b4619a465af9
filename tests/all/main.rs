//! Vigil's integration tests, one binary (links once, runs in parallel).

mod api;
mod cli;
mod cluster;
mod config;
mod dashboard;
mod default_policy;
mod determinism;
mod example_policies;
mod frame_events;
mod fuzz;
mod gateway;
mod hostile_plugins;
mod hot_swap;
mod idle;
mod liveness;
mod loading;
mod onebot;
mod policy_test;
mod policy_thread;
mod polyglot;
mod real_clients;
mod replay;
mod robustness;
mod security;
mod support;
mod tls;
