//! Prometheus metrics, written by hand in the text format (a few gauges and
//! one histogram do not need a metrics framework).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the decision-latency histogram.
const BUCKETS: [f64; 8] = [1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];

#[derive(Default)]
pub struct Metrics {
    /// Time from filing to the final decision, per bucket (cumulative on output).
    buckets: [AtomicU64; 8],
    count: AtomicU64,
    sum_millis: AtomicU64,
}

impl Metrics {
    pub fn observe_decision(&self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_millis
            .fetch_add((seconds * 1000.0) as u64, Ordering::Relaxed);
    }

    /// The exposition text; `requests` counts by state, `grants_active` now.
    /// Every sample carries the replica's name (`replica="replica-2"`).
    pub fn render(
        &self,
        cluster: &store::Cluster,
        requests: &[(&str, usize)],
        grants_active: usize,
    ) -> String {
        let replica = cluster.name();
        let r = format!("replica=\"{replica}\"");
        let mut out = String::new();
        out.push_str(
            "# HELP jitgate_enforcer Whether this replica is the one applying grants.\n# TYPE jitgate_enforcer gauge\n",
        );
        out.push_str(&format!(
            "jitgate_enforcer{{{r}}} {}\n",
            u8::from(cluster.is_leader())
        ));
        out.push_str(
            "# HELP jitgate_requests Access requests by state.\n# TYPE jitgate_requests gauge\n",
        );
        for (state, n) in requests {
            out.push_str(&format!("jitgate_requests{{{r},state=\"{state}\"}} {n}\n"));
        }
        out.push_str(
            "# HELP jitgate_grants_active Grants active now.\n# TYPE jitgate_grants_active gauge\n",
        );
        out.push_str(&format!("jitgate_grants_active{{{r}}} {grants_active}\n"));
        out.push_str(
            "# HELP jitgate_decision_seconds Time from filing a request to its final decision.\n\
             # TYPE jitgate_decision_seconds histogram\n",
        );
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            out.push_str(&format!(
                "jitgate_decision_seconds_bucket{{{r},le=\"{b}\"}} {cumulative}\n"
            ));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!(
            "jitgate_decision_seconds_bucket{{{r},le=\"+Inf\"}} {count}\n"
        ));
        out.push_str(&format!(
            "jitgate_decision_seconds_sum{{{r}}} {}\njitgate_decision_seconds_count{{{r}}} {count}\n",
            self.sum_millis.load(Ordering::Relaxed) as f64 / 1000.0
        ));
        out
    }
}
