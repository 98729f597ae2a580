//! The stampede protocol between a parent and the OS processes it starts: each child prints
//! `ready`, waits for `go` on stdin, runs its concurrent callers and prints one JSON report.
//! The tests' `cached-redis-child` and the benchmark's children both speak it.

use std::future::Future;
use std::process::Stdio;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What one child process reports once its callers have answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildReport {
    /// Loader runs in the process.
    pub loads: u64,
    /// Whether every caller got the right value.
    pub values_ok: bool,
    /// Each caller's latency from the release, in milliseconds.
    pub latencies_ms: Vec<f64>,
}

/// Parent side: spawns every command, waits until each child is ready, releases them
/// together and returns their reports in order. Every child must exit successfully.
pub async fn release_together(commands: Vec<tokio::process::Command>) -> Vec<ChildReport> {
    let mut children = Vec::new();
    for mut command in commands {
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn a child process");
        let mut lines = BufReader::new(process.stdout.take().expect("stdout")).lines();
        assert_eq!(
            lines.next_line().await.expect("child output").as_deref(),
            Some("ready")
        );
        children.push((process, lines));
    }
    for (process, _) in &mut children {
        let stdin = process.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").await.expect("release the child");
    }
    let mut reports = Vec::new();
    for (mut process, mut lines) in children {
        let line = lines.next_line().await.expect("child output");
        let line = line.expect("child report");
        reports.push(serde_json::from_str(&line).expect("child report is JSON"));
        assert!(process.wait().await.expect("child exit").success());
    }
    reports
}

/// Child side: prints `ready`, waits for `go`, then runs `tasks` concurrent copies of `call`
/// (each answering whether it got the right value) and prints the report, with `loads()`
/// read once they have all answered.
pub async fn run_when_released<F, Fut>(tasks: usize, loads: impl Fn() -> u64, call: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    println!("ready");
    let mut go = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut go)
        .await
        .expect("stdin");
    let started = Instant::now();
    let callers: Vec<_> = (0..tasks)
        .map(|_| {
            let answered = call();
            tokio::spawn(async move { (answered.await, started.elapsed()) })
        })
        .collect();
    let mut report = ChildReport {
        loads: 0,
        values_ok: true,
        latencies_ms: Vec::with_capacity(tasks),
    };
    for caller in callers {
        let (ok, latency) = caller.await.expect("caller");
        report.values_ok &= ok;
        report.latencies_ms.push(latency.as_secs_f64() * 1e3);
    }
    report.loads = loads();
    println!("{}", serde_json::to_string(&report).expect("report"));
}

/// What the `cached-redis-child` processes of a stampede reported.
#[derive(Debug)]
pub struct Stampede {
    /// Loader runs, summed over the processes.
    pub loads: u64,
    /// Loader runs in each process.
    pub loads_per_process: Vec<u64>,
    /// Every caller's latency from the common start, in milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
}

/// Starts `processes` copies of the `cached-redis-child` binary at `child` (pass
/// `env!("CARGO_BIN_EXE_cached-redis-child")`), releases them together, and collects their
/// reports: each runs `tasks` concurrent reads of the cold key `id` with a loader of
/// `loader_ms`. Every caller must have received the right value.
pub async fn stampede_in_processes(
    child: &str,
    url: &str,
    namespace: &str,
    id: u64,
    (processes, tasks, loader_ms): (usize, usize, u64),
) -> Stampede {
    let commands = (0..processes).map(|_| {
        let mut command = tokio::process::Command::new(child);
        let (id, tasks, loader_ms) = (id.to_string(), tasks.to_string(), loader_ms.to_string());
        command.args([url, namespace, &id, &tasks, &loader_ms, "5000"]);
        command
    });
    let reports = release_together(commands.collect()).await;
    let mut stampede = Stampede {
        loads: 0,
        loads_per_process: Vec::new(),
        latencies_ms: Vec::new(),
    };
    for report in reports {
        assert!(report.values_ok, "a caller got a wrong value: {report:?}");
        stampede.loads += report.loads;
        stampede.loads_per_process.push(report.loads);
        stampede.latencies_ms.extend(report.latencies_ms);
    }
    stampede.latencies_ms.sort_by(f64::total_cmp);
    stampede
}
