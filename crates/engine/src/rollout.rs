//! How a step's changes roll out over its hosts (Ansible's `serial`, `max_fail_percentage` and
//! `run_once`): the batches, the failure threshold that stops a run, the one host of a
//! run-once step, and the rounds of a delegated step (`on`). Pure decisions; the runner carries them out (`step::Configured` gives a step
//! its rollout).

/// One batch size of `serial`: a number of hosts, or a share of the step's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// At least 1.
    Hosts(usize),
    /// 1 to 100.
    Percent(u8),
}

/// `serial`: batch sizes, the last one repeating until every host had its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serial(pub Vec<BatchSize>);

impl Serial {
    /// One host at a time.
    pub fn one() -> Serial {
        Serial(vec![BatchSize::Hosts(1)])
    }

    /// `hosts` (in the order given: inventory order) cut into batches. As in Ansible, a
    /// percentage is of all of `hosts`, rounded down but at least 1 host; sizes past the last
    /// repeat the last; a size larger than what is left takes the rest.
    pub fn batches(&self, hosts: &[String]) -> Vec<Vec<String>> {
        let total = hosts.len();
        let size = |b: &BatchSize| match *b {
            BatchSize::Hosts(n) => n.max(1),
            BatchSize::Percent(p) => (total * usize::from(p) / 100).max(1),
        };
        let mut out = Vec::new();
        let mut rest = hosts;
        let mut i = 0;
        while !rest.is_empty() {
            let b = &self.0[i.min(self.0.len() - 1)];
            let n = size(b).min(rest.len());
            out.push(rest[..n].to_vec());
            rest = &rest[n..];
            i += 1;
        }
        out
    }
}

/// A step's rollout, from the playbook (the step's own keys over the play's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    /// None: all hosts at once (one batch).
    pub serial: Option<Serial>,
    /// None: a failed host drops out and the others go on, whatever their number.
    pub max_fail_percentage: Option<u8>,
    pub run_once: bool,
}

/// The rollout of a step that sets none.
pub static ALL_AT_ONCE: Rollout = Rollout {
    serial: None,
    max_fail_percentage: None,
    run_once: false,
};

impl Rollout {
    /// True when nothing differs from running every host at once.
    pub fn is_default(&self) -> bool {
        *self == ALL_AT_ONCE
    }
}

/// The host a run-once step runs on: the first of `live` (its hosts in inventory order, within
/// `--limit`, its `when` true, not dropped out), if any.
pub fn run_once_host(live: &[String]) -> Option<&String> {
    live.first()
}

/// A batch of a step cut into rounds, each gathered, planned and applied after the previous one
/// finished, so that no two hosts of a round run on the same machine: `runs_on(host)` is where a
/// target's gather and commands run (its delegate, `on`; None: itself). Round k holds the k-th
/// host of each machine, in the order given. Two targets delegating to one host therefore run
/// one after the other, each deciding from facts read after the previous one's change (the
/// engine's rule: facts are never older than the last change to the host they come from), and
/// never racing on that host's locks (apt, a config file both edit). One round when no two
/// share a machine (every step without `on`).
pub fn delegation_rounds<'a>(
    batch: &'a [String],
    runs_on: impl Fn(&str) -> Option<&'a str>,
) -> Vec<Vec<String>> {
    let mut rounds: Vec<Vec<String>> = Vec::new();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for host in batch {
        let at = runs_on(host).unwrap_or(host);
        let k = seen.entry(at).or_insert(0);
        if rounds.len() <= *k {
            rounds.push(Vec::new());
        }
        rounds[*k].push(host.clone());
        *k += 1;
    }
    rounds
}

/// True when more than `max_percent` of `total` hosts have failed (`failed` of them): the run
/// stops. Exactly the percentage goes on, as in Ansible (`> max_fail_percentage`).
pub fn too_many_failed(failed: usize, total: usize, max_percent: u8) -> bool {
    total > 0 && failed * 100 > usize::from(max_percent) * total
}

/// Why a run stopped at a failure threshold: for the recap.
pub fn stop_reason(step: &str, failed: usize, total: usize, max_percent: u8) -> String {
    format!(
        "stopped after step `{step}`: {failed} of its {total} host(s) failed ({}%), more than max_fail_percentage = {max_percent}; no further batches or steps ran",
        failed * 100 / total.max(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i}")).collect()
    }

    fn sizes(serial: &Serial, n: usize) -> Vec<usize> {
        serial.batches(&hosts(n)).iter().map(Vec::len).collect()
    }

    #[test]
    fn one_host_at_a_time_in_the_order_given() {
        assert_eq!(
            Serial::one().batches(&hosts(3)),
            [vec!["h1".to_string()], vec!["h2".into()], vec!["h3".into()]]
        );
        assert_eq!(sizes(&Serial(vec![BatchSize::Hosts(2)]), 5), [2, 2, 1]);
        assert_eq!(sizes(&Serial(vec![BatchSize::Hosts(10)]), 3), [3]);
        assert!(Serial::one().batches(&[]).is_empty(), "no hosts, no batch");
    }

    #[test]
    fn percentages_round_down_but_take_at_least_one_host() {
        let quarter = Serial(vec![BatchSize::Percent(25)]);
        assert_eq!(sizes(&quarter, 8), [2, 2, 2, 2]);
        // 25% of 10 is 2.5: 2 per batch (Ansible rounds down).
        assert_eq!(sizes(&quarter, 10), [2, 2, 2, 2, 2]);
        // 25% of 3 is 0.75: at least one host.
        assert_eq!(sizes(&quarter, 3), [1, 1, 1]);
        assert_eq!(sizes(&Serial(vec![BatchSize::Percent(100)]), 4), [4]);
        assert_eq!(
            sizes(&Serial(vec![BatchSize::Percent(30)]), 10),
            [3, 3, 3, 1]
        );
    }

    #[test]
    fn a_list_of_sizes_repeats_its_last() {
        let canary = Serial(vec![
            BatchSize::Hosts(1),
            BatchSize::Hosts(5),
            BatchSize::Percent(50),
        ]);
        // 1, then 5, then 50% of 20 = 10, then the 4 left.
        assert_eq!(sizes(&canary, 20), [1, 5, 10, 4]);
        assert_eq!(
            sizes(&canary, 4),
            [1, 3],
            "a size past what is left takes the rest"
        );
        let b = canary.batches(&hosts(8));
        assert_eq!(b[0], ["h1"]);
        assert_eq!(b[1], ["h2", "h3", "h4", "h5", "h6"]);
        assert_eq!(b[2], ["h7", "h8"]);
        assert_eq!(
            sizes(&Serial(vec![BatchSize::Hosts(2), BatchSize::Hosts(1)]), 5),
            [2, 1, 1, 1]
        );
    }

    #[test]
    fn the_run_stops_only_past_the_percentage() {
        assert!(!too_many_failed(0, 3, 0));
        assert!(too_many_failed(1, 3, 0), "0%: any failure stops");
        assert!(!too_many_failed(1, 3, 34));
        assert!(too_many_failed(1, 3, 33), "33.3% > 33");
        assert!(!too_many_failed(2, 4, 50), "exactly 50% goes on");
        assert!(too_many_failed(3, 4, 50));
        assert!(!too_many_failed(4, 4, 100), "100: never stops");
        assert!(!too_many_failed(0, 0, 0), "no hosts");
        assert_eq!(
            stop_reason("deploy", 2, 3, 50),
            "stopped after step `deploy`: 2 of its 3 host(s) failed (66%), more than max_fail_percentage = 50; no further batches or steps ran"
        );
    }

    #[test]
    fn targets_sharing_a_delegate_run_in_rounds_others_at_once() {
        let on = |h: &str| match h {
            "h1" | "h2" | "h4" => Some("lb"),
            "h5" => Some("h3"),
            _ => None,
        };
        assert_eq!(
            delegation_rounds(&hosts(6), on),
            [
                vec!["h1".to_string(), "h3".into(), "h6".into()],
                vec!["h2".into(), "h5".into()],
                vec!["h4".into()],
            ],
            "one host of each machine per round: h5 runs on h3, so after it"
        );
        assert_eq!(
            delegation_rounds(&hosts(3), |_| None),
            [hosts(3)],
            "no delegation: one round"
        );
        assert_eq!(
            delegation_rounds(&hosts(3), |_| Some("lb")),
            [vec!["h1".to_string()], vec!["h2".into()], vec!["h3".into()]]
        );
        assert!(delegation_rounds(&[], |_| None).is_empty());
    }

    #[test]
    fn run_once_picks_the_first_live_host() {
        assert_eq!(run_once_host(&hosts(3)).map(String::as_str), Some("h1"));
        assert_eq!(run_once_host(&[]), None);
        assert!(Rollout::default().is_default());
        assert!(
            !Rollout {
                run_once: true,
                ..Default::default()
            }
            .is_default()
        );
    }
}
