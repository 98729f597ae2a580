//! The stampede protocol with `cached-redis-child` processes: start them, release them
//! together, collect what each loaded and answered.

use std::process::Stdio;

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
/// `env!("CARGO_BIN_EXE_cached-redis-child")`), waits until each is ready, releases them
/// together, and collects their reports: each runs `tasks` concurrent reads of the cold key
/// `id` with a loader of `loader_ms`. Every caller must have received the right value.
pub async fn stampede_in_processes(
    child: &str,
    url: &str,
    namespace: &str,
    id: u64,
    (processes, tasks, loader_ms): (usize, usize, u64),
) -> Stampede {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let mut children = Vec::new();
    for _ in 0..processes {
        let mut process = tokio::process::Command::new(child)
            .args([
                url,
                namespace,
                &id.to_string(),
                &tasks.to_string(),
                &loader_ms.to_string(),
                "5000",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn cached-redis-child");
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
    let mut stampede = Stampede {
        loads: 0,
        loads_per_process: Vec::new(),
        latencies_ms: Vec::new(),
    };
    for (mut process, mut lines) in children {
        let line = lines
            .next_line()
            .await
            .expect("child output")
            .expect("child report");
        let report: serde_json::Value = serde_json::from_str(&line).expect("child report is JSON");
        assert_eq!(
            report["values_ok"], true,
            "a caller got a wrong value: {report}"
        );
        let loads = report["loads"].as_u64().expect("loads");
        stampede.loads += loads;
        stampede.loads_per_process.push(loads);
        let latencies = report["latencies_ms"].as_array().expect("latencies");
        stampede
            .latencies_ms
            .extend(latencies.iter().filter_map(serde_json::Value::as_f64));
        assert!(process.wait().await.expect("child exit").success());
    }
    stampede.latencies_ms.sort_by(f64::total_cmp);
    stampede
}
