//! Side-by-side benchmarks of cached-redis against the raw redis-rs client, hand-written
//! cache-aside and the `cached` crate (and, in the near-cache tables, oxcache's moka L1 in front
//! of Redis), in one process run with interleaved rounds.
//!
//! ```text
//! cargo run --release -p bench                 # every scenario, 5 rounds
//! cargo run --release -p bench -- hit-latency miss --rounds 3 --secs 1
//! ```
//!
//! Scenarios: hit-latency, hit-throughput, matrix, miss, stampede, down, allocations, cluster,
//! large, near, instructions (which needs `valgrind`). It starts its own `redis-server` on a
//! free port unless `REDIS_URL` is set (and its own cluster for the cluster scenario), prints
//! a markdown report and writes it to
//! `bench/results/latest.md` (a partial run: `bench/results/<scenarios>.md`), with the plot in
//! `bench/results/throughput.svg`.

mod alloc;
mod per_system;
mod plot;
mod report;
mod scenarios;
mod systems;

use std::process::Command;

use cached_redis_tests::RedisServer;

use scenarios::{Config, Scenario};
use systems::{NearCache, System};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

fn usage() -> ! {
    let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
    eprintln!("usage: bench [{}] [--rounds N] [--secs S]", names.join("|"));
    std::process::exit(2);
}

fn machine(url: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    // Other work on the machine makes every figure slower and noisier: say how much there was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cpu}, {cores} cores, Linux {}; {redis}; Redis at {url} (loopback); load average {} at the start",
        kernel.trim(),
        load.join(" ")
    )
}

/// The child processes of the stampede, Redis-down and instructions scenarios: runs the one
/// `args` names and returns true, or returns false.
fn child(args: &[String]) -> bool {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let system = |name: &str| System::parse(name).unwrap_or_else(|| usage());
    match args.first().map(String::as_str) {
        Some("stampede-child") => {
            let [_, name, url, id, tasks, loader_ms] = args else {
                usage()
            };
            runtime().block_on(async {
                systems::connect(url, NearCache::Off).await;
                scenarios::stampede_child(
                    system(name),
                    id.parse().expect("id"),
                    tasks.parse().expect("tasks"),
                    loader_ms.parse().expect("ms"),
                )
                .await;
            });
        }
        Some("down-child") => {
            let [_, name] = args else { usage() };
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("port")
                .port();
            runtime().block_on(async {
                let url = format!("redis://127.0.0.1:{port}");
                systems::connect(&url, NearCache::Off).await;
                scenarios::down_child(system(name)).await;
            });
        }
        // Its own current-thread runtime.
        Some("instructions-child") => {
            let [_, probe, calls, url] = args else {
                usage()
            };
            scenarios::instructions_child(probe, calls, url);
        }
        _ => return false,
    }
    true
}

/// The scenarios chosen and the settings given on the command line.
fn options(args: &[String]) -> (Vec<Scenario>, usize, f64) {
    let mut chosen = Vec::new();
    let (mut rounds, mut secs) = (5, 2.0);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--secs" => {
                secs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            name => chosen.push(Scenario::parse(name).unwrap_or_else(|| usage())),
        }
    }
    if chosen.is_empty() {
        chosen = Scenario::ALL.to_vec();
    }
    (chosen, rounds, secs)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if child(&args) {
        return;
    }
    // oxcache's Redis backend refuses a `redis://` URL unless this variable says so (its
    // "development only" switch); the bench's Redis is on loopback.
    // SAFETY: no other thread exists yet to read the environment meanwhile.
    unsafe { std::env::set_var("OXCACHE_ALLOW_INSECURE_REDIS", "I_UNDERSTAND_THE_RISKS") };
    let (chosen, rounds, secs) = options(&args);
    let server = std::env::var("REDIS_URL").is_err().then(RedisServer::start);
    let url = server.as_ref().map_or_else(
        || std::env::var("REDIS_URL").unwrap_or_default(),
        RedisServer::url,
    );
    let cfg = Config {
        url: url.clone(),
        rounds,
        secs,
        exe: std::env::current_exe().expect("own path"),
    };
    let command = format!("cargo run --release -p bench -- {}", args.join(" "));
    let mut report = format!(
        "## Benchmark results\n\nMachine: {}.\nCommand: `{}`. Systems run round by round in rotating order; figures are medians over {rounds} rounds, (min–max) beside them.\n\n",
        machine(&url),
        command.trim_end()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        systems::connect(&url, NearCache::On).await;
        for scenario in &chosen {
            for table in scenario.run(&cfg).await {
                let md = table.markdown();
                println!("{md}");
                report.push_str(&md);
                report.push('\n');
            }
        }
    });
    // A run of every scenario is the report; a partial run is written beside it.
    let name = if chosen.len() == Scenario::ALL.len() {
        "latest".to_owned()
    } else {
        let names: Vec<&str> = chosen.iter().map(|s| s.name()).collect();
        names.join("+")
    };
    let path = format!("{}/results/{name}.md", env!("CARGO_MANIFEST_DIR"));
    std::fs::write(&path, report).expect("write report");
    eprintln!("written to bench/results/{name}.md");
}
