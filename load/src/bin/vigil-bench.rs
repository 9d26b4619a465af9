//! `vigil-bench`: Vigil, Node `ws` and Python `websockets` measured side by
//! side in one run — idle memory, dead-client detection, heartbeat CPU,
//! fan-out, policy cost, hot swap, churn — printed as tables and written
//! into BENCHMARKS.md. `bench/run.sh` is the one command; `--quick` is the
//! few-second version CI runs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vigil_load::suite::measure::{self, Scale};
use vigil_load::suite::report::{self, Results};
use vigil_load::suite::servers::{install_peers, Paths};

#[derive(Debug, Parser)]
#[command(name = "vigil-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every measurement and print the tables.
    All {
        /// A few hundred sessions and seconds instead of the full figures.
        #[arg(long)]
        quick: bool,
        /// Rewrite the figures block of this file (BENCHMARKS.md).
        #[arg(long, value_name = "FILE")]
        write: Option<PathBuf>,
        /// Also write the raw results as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Only these measurements (comma-separated: memory-cpu, detection,
        /// fanout, churn, swap), for re-running some rows; the others'
        /// tables come out empty.
        #[arg(long, value_delimiter = ',', value_name = "ROWS")]
        only: Vec<Row>,
    },
    /// Run Vigil itself (`vigil-bench host serve --config FILE`): how the
    /// suite starts the Vigil under test, with Vigil's own code.
    Host {
        /// Vigil's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// One measurement of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Row {
    /// Idle memory and heartbeat CPU.
    MemoryCpu,
    /// Dead-client detection.
    Detection,
    /// Fan-out.
    Fanout,
    /// Churn.
    Churn,
    /// Hot swap.
    Swap,
}

fn machine(paths: &Paths) -> Vec<(String, String)> {
    let run = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let node_ws = run(
        "node",
        &[
            "-p",
            &format!(
                "require('{}/npm/node_modules/ws/package.json').version",
                paths.peers.display()
            ),
        ],
    );
    let python = paths.peers.join("venv/bin/python");
    let websockets = run(
        &python.to_string_lossy(),
        &["-c", "import sys, websockets; print(websockets.__version__, 'on Python', sys.version.split()[0])"],
    );
    vec![
        (
            "machine".into(),
            format!(
                "{} cores, {cpu}, Linux {}",
                run("nproc", &[]),
                run("uname", &["-r"])
            ),
        ),
        (
            "Vigil".into(),
            format!(
                "{} (release build, default policy in wasm)",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        (
            "Node ws".into(),
            format!("ws {node_ws} on Node {}", run("node", &["--version"])),
        ),
        (
            "Python websockets".into(),
            format!("websockets {websockets}"),
        ),
        (
            "load".into(),
            "vigil-load on the same 2 cores, loopback, sources spread over 127.0.0.0/8".into(),
        ),
    ]
}

fn swap_figures(paths: &Paths) -> Result<Vec<String>> {
    let output = std::process::Command::new("bash")
        .arg(paths.repo.join("bench/swap.sh"))
        .env("PUBLISH_EVERY", "1")
        .output()
        .context("running bench/swap.sh")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("sessions:") || l.starts_with("swap latency"))
        .map(str::to_owned)
        .collect();
    if !output.status.success() || lines.is_empty() {
        anyhow::bail!(
            "bench/swap.sh failed ({}):\n{}\n{}",
            output.status,
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(lines)
}

async fn all(
    quick: bool,
    write: Option<PathBuf>,
    json: Option<PathBuf>,
    only: &[Row],
) -> Result<()> {
    let wanted = |row: Row| only.is_empty() || only.contains(&row);
    let exe = std::env::current_exe().context("locating vigil-bench")?;
    let bin_dir = exe.parent().context("no binary directory")?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let peers = install_peers(&repo)?;
    let paths = Paths {
        repo,
        peers,
        load: bin_dir.join("vigil-load"),
    };
    let scale = if quick { Scale::quick() } else { Scale::full() };
    let (memory, cpu) = if wanted(Row::MemoryCpu) {
        measure::memory_and_cpu(&paths, &scale).await?
    } else {
        (Vec::new(), Vec::new())
    };
    let detection = if wanted(Row::Detection) {
        measure::detection(&paths, &scale).await?
    } else {
        Vec::new()
    };
    let fanout = if wanted(Row::Fanout) {
        measure::fanout(&paths, &scale).await?
    } else {
        Vec::new()
    };
    let churn = if wanted(Row::Churn) {
        Some(measure::churn(&paths, &scale).await?)
    } else {
        None
    };
    let swap = if quick || !wanted(Row::Swap) {
        Vec::new()
    } else {
        swap_figures(&paths)?
    };
    let results = Results {
        machine: machine(&paths),
        scale,
        memory,
        cpu,
        detection,
        fanout,
        swap,
        churn,
    };
    let command = if quick {
        "bench/run.sh --quick"
    } else {
        "bench/run.sh"
    };
    let block = results.markdown(command);
    println!("{block}");
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = write {
        report::write_block(&path, &block)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Host { args } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                )
                .with_writer(std::io::stderr)
                .init();
            let cli =
                vigil::cli::Cli::try_parse_from(std::iter::once("vigil".to_owned()).chain(args))?;
            cli.run()
        }
        Command::All {
            quick,
            write,
            json,
            only,
        } => {
            if !only.is_empty() && write.is_some() {
                anyhow::bail!("--only measures some rows; it cannot rewrite the whole figures block (--write)");
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(all(quick, write, json, &only))
        }
    }
}
