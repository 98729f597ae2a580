//! The scenarios. Every one runs all systems round by round, rotating their order, so they share
//! the machine's noise; figures are medians over rounds with the range beside them.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::report::{Series, Spread, Table, quantile, ratio, svg};
use crate::systems::{self, LOADS, System};

/// Run settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) url: String,
    pub(crate) rounds: usize,
    /// Seconds per throughput measurement.
    pub(crate) secs: f64,
    pub(crate) exe: std::path::PathBuf,
}

const VALUE: usize = 1_000;

fn rotated<const N: usize>(systems: [System; N], round: usize) -> Vec<System> {
    let mut order = systems.to_vec();
    order.rotate_left(round % N);
    // `BENCH_ONLY=<system>` runs one system alone, for profiling; reports then compare nothing.
    if let Some(only) = std::env::var("BENCH_ONLY")
        .ok()
        .as_deref()
        .and_then(System::parse)
    {
        order.retain(|s| *s == only);
    }
    order
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Scenario 1: one task reading one warm key, p50 and p99 per call.
pub(crate) async fn hit_latency(cfg: &Config) -> Table {
    let iters = 3_000;
    for s in System::ALL {
        systems::warm(s, 1, VALUE).await;
    }
    let mut p50 = vec![Vec::new(); 4];
    let mut p99 = vec![Vec::new(); 4];
    for round in 0..cfg.rounds {
        for s in rotated(System::ALL, round) {
            let mut lat = Vec::with_capacity(iters);
            for _ in 0..iters {
                let started = Instant::now();
                systems::get(s, 1, VALUE, 0).await.expect("hit");
                lat.push(micros(started.elapsed()));
            }
            lat.sort_by(f64::total_cmp);
            p50[s as usize].push(quantile(&lat, 0.5));
            p99[s as usize].push(quantile(&lat, 0.99));
        }
    }
    let mut table = Table::new(
        "1. Hit latency, one task, ~1 KB value (µs per call)",
        &["system", "p50 µs", "p99 µs", "p50 vs raw", "p99 vs raw"],
    );
    let (raw50, raw99) = (Spread::of(&p50[0]).median, Spread::of(&p99[0]).median);
    for s in System::ALL {
        let (a, b) = (Spread::of(&p50[s as usize]), Spread::of(&p99[s as usize]));
        table.rows.push(vec![
            s.name().into(),
            a.show(1),
            b.show(1),
            ratio(a.median, raw50),
            ratio(b.median, raw99),
        ]);
    }
    table.note = format!(
        "{iters} sequential calls per system per round; {} rounds.",
        cfg.rounds
    );
    table
}

/// Reads Redis's own CPU time (user + system), in seconds.
async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum()
}

/// `tasks` tasks reading 16 warm keys of `size` bytes for `secs`: operations per second.
async fn throughput(system: System, tasks: usize, size: usize, secs: f64) -> f64 {
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let ops = ops.clone();
            tokio::spawn(async move {
                let id = (t % 16) as u64;
                let mut n = 0;
                while Instant::now() < deadline {
                    systems::get(system, id, size, 0).await.expect("hit");
                    n += 1;
                }
                ops.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    ops.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn warm_keys(size: usize) {
    for s in System::ALL {
        for id in 0..16 {
            systems::warm(s, id, size).await;
        }
    }
}

/// Scenario 2: 64 tasks on warm ~1 KB keys: ops/s, and Redis's CPU time per operation.
pub(crate) async fn hit_throughput(cfg: &Config) -> Table {
    warm_keys(VALUE).await;
    let mut admin = redis::Client::open(cfg.url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let mut ops = vec![Vec::new(); 4];
    let mut cpu = vec![Vec::new(); 4];
    for round in 0..cfg.rounds {
        for s in rotated(System::ALL, round) {
            let cpu_before = redis_cpu(&mut admin).await;
            let rate = throughput(s, 64, VALUE, cfg.secs).await;
            let cpu_used = redis_cpu(&mut admin).await - cpu_before;
            ops[s as usize].push(rate);
            cpu[s as usize].push(cpu_used * 1e6 / (rate * cfg.secs));
        }
    }
    let mut table = Table::new(
        "2. Hit throughput, 64 tasks, ~1 KB values",
        &["system", "ops/s", "vs raw", "Redis CPU µs per op"],
    );
    let raw = Spread::of(&ops[0]).median;
    for s in System::ALL {
        let rate = Spread::of(&ops[s as usize]);
        table.rows.push(vec![
            s.name().into(),
            rate.show(0),
            ratio(rate.median, raw),
            Spread::of(&cpu[s as usize]).show(2),
        ]);
    }
    table.note = format!(
        "{:.1} s per system per round; {} rounds. Redis CPU is the server's user+system time over the run divided by the operations.",
        cfg.secs, cfg.rounds
    );
    table
}

/// Scenario 3: throughput against concurrency and value size; a table and a plot.
pub(crate) async fn matrix(cfg: &Config) -> (Table, String) {
    let sizes = [(100, "100 B"), (10_000, "10 KB"), (1_000_000, "1 MB")];
    let concurrency = [1, 8, 64, 256];
    let secs = (cfg.secs / 2.0).max(0.2);
    let rounds = cfg.rounds.min(3);
    let mut table = Table::new(
        "3. Hit throughput against concurrency and value size (ops/s)",
        &[
            "value",
            "tasks",
            "raw",
            "hand-written",
            "cached",
            "cached-redis",
            "cached-redis vs raw",
        ],
    );
    let mut panels = Vec::new();
    for (size, label) in sizes {
        warm_keys(size).await;
        let mut lines: Vec<Vec<f64>> = vec![Vec::new(); 4];
        for tasks in concurrency {
            let mut cell = vec![Vec::new(); 4];
            for round in 0..rounds {
                for s in rotated(System::ALL, round) {
                    cell[s as usize].push(throughput(s, tasks, size, secs).await);
                }
            }
            let medians: Vec<Spread> = cell.iter().map(|c| Spread::of(c)).collect();
            let mut row = vec![label.to_owned(), tasks.to_string()];
            row.extend(medians.iter().map(|m| format!("{:.0}", m.median)));
            row.push(ratio(medians[3].median, medians[0].median));
            table.rows.push(row);
            for (s, m) in medians.iter().enumerate() {
                lines[s].push(m.median);
            }
        }
        let series = System::ALL
            .iter()
            .zip(lines)
            .map(|(s, points)| Series {
                name: s.name().to_owned(),
                points,
            })
            .collect();
        panels.push((label.to_owned(), series));
    }
    table.note = format!("Medians of {rounds} rounds of {secs:.1} s per cell.");
    let labels: Vec<String> = concurrency.iter().map(ToString::to_string).collect();
    let plot = svg(
        "Hit throughput: cached-redis against the alternatives",
        &labels,
        &panels,
    );
    (table, plot)
}

/// Counts the client commands (not those a script runs) that reach Redis while `work` runs,
/// by reading `MONITOR` up to a marker.
async fn client_commands<F: std::future::Future<Output = ()>>(
    cfg: &Config,
    marker: &str,
    work: F,
) -> u64 {
    let port = cfg.url.rsplit(':').next().expect("port");
    let mut monitor = tokio::process::Command::new("redis-cli")
        .args(["-p", port, "monitor"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-cli monitor (install redis-tools)");
    let mut lines = BufReader::new(monitor.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next_line().await.expect("monitor").as_deref(),
        Some("OK")
    );
    work.await;
    let mut admin = redis::Client::open(cfg.url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let _: String = redis::cmd("ECHO")
        .arg(marker)
        .query_async(&mut admin)
        .await
        .expect("ECHO");
    let mut count = 0;
    while let Some(line) = lines.next_line().await.expect("monitor line") {
        if line.contains(marker) {
            break;
        }
        if !line.contains(" lua]") {
            count += 1;
        }
    }
    count
}

/// Scenario 4: cold keys with an instant loader: latency and Redis round trips per miss.
pub(crate) async fn miss(cfg: &Config) -> Table {
    let n = 1_000;
    let mut p50 = vec![Vec::new(); 4];
    let mut p99 = vec![Vec::new(); 4];
    let mut loads = vec![Vec::new(); 4];
    for round in 0..cfg.rounds {
        for s in rotated(System::LOADING, round) {
            let base = 1_000_000 * (round as u64 + 1) + 100_000 * s as u64;
            let loads_before = LOADS.load(Ordering::Relaxed);
            let mut lat = Vec::with_capacity(n);
            for i in 0..n as u64 {
                let started = Instant::now();
                systems::get(s, base + i, VALUE, 0).await.expect("miss");
                lat.push(micros(started.elapsed()));
            }
            lat.sort_by(f64::total_cmp);
            p50[s as usize].push(quantile(&lat, 0.5));
            p99[s as usize].push(quantile(&lat, 0.99));
            loads[s as usize]
                .push((LOADS.load(Ordering::Relaxed) - loads_before) as f64 / n as f64);
        }
    }
    let mut trips = [0.0; 4];
    for s in System::LOADING {
        let m = 100;
        let base = 900_000_000 + 1_000 * s as u64;
        let commands = client_commands(cfg, &format!("marker-{}", s.name()), async {
            for i in 0..m {
                systems::get(s, base + i, VALUE, 0).await.expect("miss");
            }
        })
        .await;
        trips[s as usize] = commands as f64 / m as f64;
    }
    let mut table = Table::new(
        "4. Miss path: cold keys, instant loader",
        &[
            "system",
            "p50 µs",
            "p99 µs",
            "loads per miss",
            "Redis round trips per miss",
        ],
    );
    for s in System::LOADING {
        table.rows.push(vec![
            s.name().into(),
            Spread::of(&p50[s as usize]).show(1),
            Spread::of(&p99[s as usize]).show(1),
            Spread::of(&loads[s as usize]).show(2),
            format!("{:.2}", trips[s as usize]),
        ]);
    }
    table.note = format!(
        "{n} misses per system per round; {} rounds. Round trips are the client commands Redis received (MONITOR, excluding those a script runs) over 100 more misses.",
        cfg.rounds
    );
    table
}

/// Scenario 5: 1,000 callers over 4 OS processes on one cold key, loader 100 ms.
pub(crate) async fn stampede(cfg: &Config) -> Table {
    let (processes, per_process, loader_ms) = (4, 250, 100);
    let mut loads = vec![Vec::new(); 4];
    let mut p50 = vec![Vec::new(); 4];
    let mut p99 = vec![Vec::new(); 4];
    for round in 0..cfg.rounds {
        for s in rotated(System::LOADING, round) {
            let id = 500_000_000 + 1_000 * round as u64 + s as u64;
            let mut children = Vec::new();
            for _ in 0..processes {
                let mut child = tokio::process::Command::new(&cfg.exe)
                    .args([
                        "stampede-child",
                        s.name(),
                        &cfg.url,
                        &id.to_string(),
                        &per_process.to_string(),
                        &loader_ms.to_string(),
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn child");
                let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
                assert_eq!(
                    lines.next_line().await.expect("child").as_deref(),
                    Some("ready")
                );
                children.push((child, lines));
            }
            for (child, _) in &mut children {
                child
                    .stdin
                    .as_mut()
                    .expect("stdin")
                    .write_all(b"go\n")
                    .await
                    .expect("go");
            }
            let mut total_loads = 0.0;
            let mut lat: Vec<f64> = Vec::new();
            for (mut child, mut lines) in children {
                let line = lines.next_line().await.expect("child").expect("report");
                let report: serde_json::Value = serde_json::from_str(&line).expect("json");
                total_loads += report["loads"].as_f64().unwrap_or(f64::NAN);
                lat.extend(
                    report["latencies_ms"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(serde_json::Value::as_f64),
                );
                child.wait().await.expect("child exit");
            }
            lat.sort_by(f64::total_cmp);
            loads[s as usize].push(total_loads);
            p50[s as usize].push(quantile(&lat, 0.5));
            p99[s as usize].push(quantile(&lat, 0.99));
        }
    }
    let mut table = Table::new(
        "5. Stampede: 1,000 callers over 4 OS processes, one cold key, 100 ms loader",
        &["system", "loader invocations", "p50 ms", "p99 ms"],
    );
    for s in System::LOADING {
        table.rows.push(vec![
            s.name().into(),
            Spread::of(&loads[s as usize]).show(0),
            Spread::of(&p50[s as usize]).show(1),
            Spread::of(&p99[s as usize]).show(1),
        ]);
    }
    table.note = format!("{} rounds, a fresh key each.", cfg.rounds);
    table
}

/// The child side of the stampede: `tasks` concurrent reads of `id` once told to go.
pub(crate) async fn stampede_child(system: System, id: u64, tasks: usize, loader_ms: u64) {
    println!("ready");
    let mut go = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut go)
        .await
        .expect("stdin");
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            tokio::spawn(async move {
                let _ = systems::get(system, id, VALUE, loader_ms).await;
                started.elapsed().as_secs_f64() * 1e3
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for h in handles {
        latencies.push(h.await.expect("task"));
    }
    println!(
        "{}",
        serde_json::json!({"loads": LOADS.load(Ordering::Relaxed), "latencies_ms": latencies})
    );
}

/// Scenario 6: Redis refusing connections: each system's overhead over calling the loader.
pub(crate) async fn down(cfg: &Config) -> Table {
    let mut overhead50 = vec![Vec::new(); 4];
    let mut overhead99 = vec![Vec::new(); 4];
    let mut errors = [0u64; 4];
    let mut panics = [0u64; 4];
    let mut hung: [Option<u64>; 4] = [None; 4];
    for round in 0..cfg.rounds {
        for s in rotated(System::LOADING, round) {
            let out = tokio::process::Command::new(&cfg.exe)
                .args(["down-child", s.name()])
                .stderr(Stdio::null())
                .output()
                .await
                .expect("down child");
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            overhead50[s as usize].push(report["p50_us"].as_f64().unwrap_or(f64::NAN));
            overhead99[s as usize].push(report["p99_us"].as_f64().unwrap_or(f64::NAN));
            errors[s as usize] += report["errors"].as_u64().unwrap_or(0);
            panics[s as usize] += report["panics"].as_u64().unwrap_or(0);
            if let Some(call) = report["hung"].as_u64() {
                hung[s as usize] = Some(call);
            }
        }
    }
    let mut table = Table::new(
        "6. Redis down (connection refused): overhead per call over calling the loader directly",
        &["system", "p50 µs", "p99 µs", "calls that failed"],
    );
    for s in System::LOADING {
        let total = 2_050 * cfg.rounds;
        let failed = match (errors[s as usize], panics[s as usize]) {
            (0, 0) => format!("none of {total}"),
            (e, 0) => format!("{e} of {total} returned an error"),
            (0, p) => format!("{p} panicked"),
            (e, p) => format!("{e} returned an error, {p} panicked"),
        };
        let (p50, p99, failed) = if let Some(call) = hung[s as usize] {
            (
                "–".to_owned(),
                "–".to_owned(),
                format!("call {call} did not return within 1 s"),
            )
        } else {
            (
                Spread::of(&overhead50[s as usize]).show(1),
                Spread::of(&overhead99[s as usize]).show(1),
                failed,
            )
        };
        table.rows.push(vec![s.name().into(), p50, p99, failed]);
    }
    table.note = "Each process makes 50 calls (cached-redis's breaker opens after 5 failures), then times 2,000, each in its own task on both sides of the comparison; failures are counted over all 2,050. A call that takes over 1 s ends that process's measurement.".into();
    table
}

/// The child side of scenario 6, connected to a port nobody listens on. Calls run in their own
/// task (on both sides of the comparison) so that a system that panics is counted, not fatal.
pub(crate) async fn down_child(system: System) {
    let (warmup, n) = (50, 2_000);
    let (mut errors, mut panics, mut hung) = (0u64, 0u64, None);
    let limit = Duration::from_secs(1);
    for i in 0..warmup {
        match tokio::time::timeout(limit, tokio::spawn(systems::get(system, i, VALUE, 0))).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(_))) => errors += 1,
            Ok(Err(_)) => panics += 1,
            Err(_) => {
                hung = Some(i + 1);
                break;
            }
        }
    }
    let mut direct = Vec::with_capacity(n);
    let mut through = Vec::with_capacity(n);
    for i in 0..n as u64 {
        if hung.is_some() {
            break;
        }
        let started = Instant::now();
        let _ = tokio::spawn(async move { std::hint::black_box(systems::payload(i, VALUE)) }).await;
        direct.push(micros(started.elapsed()));
        let started = Instant::now();
        match tokio::time::timeout(limit, tokio::spawn(systems::get(system, i, VALUE, 0))).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(_))) => errors += 1,
            Ok(Err(_)) => panics += 1,
            Err(_) => hung = Some(warmup + i + 1),
        }
        through.push(micros(started.elapsed()));
    }
    direct.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "p50_us": quantile(&through, 0.5) - quantile(&direct, 0.5),
            "p99_us": quantile(&through, 0.99) - quantile(&direct, 0.99),
            "errors": errors,
            "panics": panics,
            "hung": hung,
        })
    );
}

/// Scenario 7: heap allocations per hit (a counting global allocator).
pub(crate) async fn allocations(cfg: &Config) -> Table {
    let n = 10_000u64;
    for s in System::ALL {
        systems::warm(s, 1, VALUE).await;
    }
    let mut per_hit = vec![Vec::new(); 4];
    for round in 0..cfg.rounds {
        for s in rotated(System::ALL, round) {
            let before = crate::alloc::allocations();
            for _ in 0..n {
                systems::get(s, 1, VALUE, 0).await.expect("hit");
            }
            per_hit[s as usize].push((crate::alloc::allocations() - before) as f64 / n as f64);
        }
    }
    let mut table = Table::new(
        "7. Heap allocations per hit (~1 KB value)",
        &["system", "allocations", "vs raw"],
    );
    let raw = Spread::of(&per_hit[0]).median;
    for s in System::ALL {
        let a = Spread::of(&per_hit[s as usize]);
        table
            .rows
            .push(vec![s.name().into(), a.show(1), ratio(a.median, raw)]);
    }
    table.note = format!(
        "{n} sequential hits per system per round, counted across all threads of the process."
    );
    table
}

/// Scenario 8: cached-redis hit throughput on one node against a three-primary cluster, both
/// started on this machine, through `Cache::fetch` (what the attribute expands to).
pub(crate) async fn cluster(cfg: &Config) -> Table {
    let cluster =
        tokio::task::spawn_blocking(|| cached_redis_tests::RedisCluster::start_with_replicas(0))
            .await
            .expect("cluster start");
    let urls = cluster.urls();
    let on_cluster =
        cached_redis::Cache::cluster_builder(&urls.iter().map(String::as_str).collect::<Vec<_>>())
            .namespace("bench-cluster")
            .build()
            .await
            .expect("cluster cache");
    let on_node = cached_redis::Cache::builder(&cfg.url)
        .namespace("bench-node")
        .build()
        .await
        .expect("node cache");
    let policy = cached_redis::Policy::new("bench", Duration::from_secs(600)).expect("policy");
    let read = move |cache: cached_redis::Cache, id: u64| async move {
        let key = cached_redis::Key::builder().text("p:").part(&id).build();
        cache
            .fetch(&key, &policy, async move {
                Ok::<_, String>(systems::payload(id, VALUE))
            })
            .await
    };
    for id in 0..16 {
        read(on_cluster.clone(), id).await.expect("warm");
        read(on_node.clone(), id).await.expect("warm");
    }
    let caches = [("one node", on_node), ("3-primary cluster", on_cluster)];
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..cfg.rounds {
        for turn in 0..2 {
            let which = (round + turn) % 2;
            let cache = caches[which].1.clone();
            let ops = Arc::new(AtomicU64::new(0));
            let deadline = Instant::now() + Duration::from_secs_f64(cfg.secs);
            let started = Instant::now();
            let tasks: Vec<_> = (0..64u64)
                .map(|t| {
                    let (cache, ops) = (cache.clone(), ops.clone());
                    tokio::spawn(async move {
                        let mut n = 0;
                        while Instant::now() < deadline {
                            read(cache.clone(), t % 16).await.expect("hit");
                            n += 1;
                        }
                        ops.fetch_add(n, Ordering::Relaxed);
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
            rates[which].push(ops.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64());
        }
    }
    let mut table = Table::new(
        "8. cached-redis on one node against a 3-primary cluster: hit throughput, 64 tasks, ~1 KB",
        &["target", "ops/s", "vs one node", "hits"],
    );
    let node = Spread::of(&rates[0]).median;
    for (i, (name, cache)) in caches.iter().enumerate() {
        let rate = Spread::of(&rates[i]);
        table.rows.push(vec![
            (*name).to_owned(),
            rate.show(0),
            ratio(rate.median, node),
            cache.stats().hits.to_string(),
        ]);
    }
    table.note = format!(
        "{:.1} s per target per round; {} rounds. All servers and the client share this machine's cores, so the cluster cannot show the capacity it adds across machines; this measures the client-side cost of cluster routing.",
        cfg.secs, cfg.rounds
    );
    drop(cluster);
    table
}
