//! The benchmark commands that need no node agent run and report what BENCHMARKS.md quotes.

use std::time::Duration;

#[test]
fn bench_ops_reports_cpu_and_rate_for_each_operation_of_a_pods_life() {
    let mut child = std::process::Command::new(crate::harness::flotilla_bin())
        .args(["bench", "ops", "--ops", "300"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "bench ops did not finish within 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for op in [
        "create pod",
        "bind (pods/binding)",
        "create event",
        "patch pod status (merge)",
        "get pod",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(op))
            .unwrap_or_else(|| panic!("no line for {op}: {stdout}"));
        // "<op>  <cpu> µs CPU per op  <rate> ops/s": both numbers present, the rate positive.
        let numbers: Vec<f64> = line[op.len()..]
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(numbers.len(), 2, "{line}");
        assert!(numbers[0] >= 0.0 && numbers[1] > 0.0, "{line}");
    }
}
