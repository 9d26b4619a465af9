//! What a policy decision costs: `assess` over batches of 1 to 10 000
//! sessions through the wasm default policy, the same logic native, and a
//! no-op plugin that isolates the cost of moving a batch across the
//! component boundary; plus starting a fresh instance (new store,
//! instantiate, configure), the recovery after a fault.
//!
//! The wasm rows take the batch as the host holds it, in columns
//! ([`SessionColumns`], filled by the tick as it visits sessions), and
//! answer in columns; the native row takes one record per session, as a
//! native [`Policy`] does.
//!
//! Run: `cargo bench -p vigil-policy-runtime --bench assess`. Figures: BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_default_policy::DefaultPolicy;
use vigil_policy_runtime::scenarios::generated_facts;
use vigil_policy_runtime::{
    PluginSource, PolicyEngine, Sandbox, SandboxLimits, SessionColumns, Supervisor,
    SupervisorConfig,
};
use vigil_policy_sdk::Policy;

const BATCH_SIZES: [usize; 4] = [1, 100, 1_000, 10_000];
const NOW_MS: u64 = 5_000_000;

fn load(engine: &PolicyEngine, name: &str, bytes: &[u8]) -> Sandbox {
    let source = PluginSource::from_bytes(name, "bench", bytes.to_vec());
    let limits = SandboxLimits {
        // Benchmarks measure; they must not be cut short on a busy machine.
        call_deadline: Duration::from_secs(10),
        ..SandboxLimits::default()
    };
    match Sandbox::load(engine, &source, "{}", limits) {
        Ok(sandbox) => sandbox,
        Err(error) => panic!("cannot load {name}: {error}"),
    }
}

fn assess(c: &mut Criterion) {
    let engine = match PolicyEngine::new() {
        Ok(engine) => engine,
        Err(error) => panic!("cannot start the engine: {error:#}"),
    };
    let mut wasm_default = load(
        &engine,
        "default-policy",
        vigil_plugin_artifacts::DEFAULT_POLICY,
    );
    let mut wasm_noop = load(&engine, "noop", vigil_plugin_artifacts::test_plugins::NOOP);
    let mut supervised = Supervisor::new(
        load(
            &engine,
            "default-policy",
            vigil_plugin_artifacts::DEFAULT_POLICY,
        ),
        SupervisorConfig::default(),
    );
    let mut native = DefaultPolicy::default();

    let mut group = c.benchmark_group("assess");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for size in BATCH_SIZES {
        let facts = generated_facts(size, 0x5EED);
        let columns = SessionColumns::from(&facts[..]);
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("native", size), &facts, |b, facts| {
            b.iter(|| black_box(native.assess(NOW_MS, facts)))
        });
        group.bench_with_input(BenchmarkId::new("wasm", size), &columns, |b, columns| {
            b.iter(|| black_box(wasm_default.assess(NOW_MS, columns).ok()))
        });
        group.bench_with_input(
            BenchmarkId::new("wasm-noop", size),
            &columns,
            |b, columns| b.iter(|| black_box(wasm_noop.assess(NOW_MS, columns).ok())),
        );
        group.bench_with_input(
            BenchmarkId::new("supervised", size),
            &columns,
            |b, columns| b.iter(|| black_box(supervised.assess(NOW_MS, columns))),
        );
    }
    group.finish();

    // A steady state: the same generated sessions, but 99 in 100 healthy
    // (answering pings, no errors, no backlog), as in a host that already
    // removed its dead sessions. Few verdicts evict, so fewer carry strings.
    let mut group = c.benchmark_group("assess-steady");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let steady: Vec<_> = generated_facts(1_000, 0x5EED)
        .into_iter()
        .enumerate()
        .map(|(i, mut facts)| {
            if i % 100 != 0 {
                facts.outstanding_pings = 0;
                facts.oldest_ping_ms = None;
                facts.pong_overdue = false;
                facts.send_errors = 0;
                facts.transport_errors = 0;
                facts.backlog_ms = 0;
                facts.dropped_frames = 0;
                facts.app_idle_ms = facts.app_idle_ms.min(60_000);
                facts.idle_ms = facts.idle_ms.min(facts.app_idle_ms);
            }
            facts
        })
        .collect();
    let steady_columns = SessionColumns::from(&steady[..]);
    group.throughput(Throughput::Elements(steady.len() as u64));
    group.bench_function("native/1000", |b| {
        b.iter(|| black_box(native.assess(NOW_MS, &steady)))
    });
    group.bench_function("wasm/1000", |b| {
        b.iter(|| black_box(wasm_default.assess(NOW_MS, &steady_columns).ok()))
    });
    group.finish();

    let mut group = c.benchmark_group("instance");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("fresh-store-default-policy", |b| {
        b.iter(|| black_box(wasm_default.restart().is_ok()))
    });
    group.bench_function("fresh-store-noop", |b| {
        b.iter(|| black_box(wasm_noop.restart().is_ok()))
    });
    group.finish();
}

criterion_group!(benches, assess);
criterion_main!(benches);
