//! Event sinks of the command line: live progress (a line per host on a terminal,
//! a summary above a threshold), plain timestamped lines for logs and CI, JSON
//! lines, the run log file, and the recap at the end; and the `--output` choice.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use provision_engine::event::{Event, EventSink, HostStatus, Recap, Redacted, StepTiming};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::SystemTime;

/// How a command shows its results: for people, or as JSON for programs (`--output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Above this many hosts, the terminal shows one summary bar instead of a line per host.
pub const PER_HOST_LINES_MAX: usize = 40;

/// `HH:MM:SS` in UTC, for plain output.
pub fn clock() -> String {
    let s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// One line per event that matters to a person; `ok` lines only when verbose.
pub struct PlainSink {
    pub verbose: bool,
    out: Mutex<Box<dyn Write + Send>>,
}

impl PlainSink {
    pub fn stderr(verbose: bool) -> Self {
        PlainSink {
            verbose,
            out: Mutex::new(Box::new(crate::term::stderr())),
        }
    }
}

/// The line printed for one host result, or None when it is not shown.
pub fn result_line(e: &Event, verbose: bool) -> Option<String> {
    let Event::HostResult {
        step,
        host,
        status,
        details,
        diff,
        failure,
        handler,
        on,
        ..
    } = e
    else {
        return None;
    };
    let shown = verbose || !matches!(status, HostStatus::Ok | HostStatus::Skipped);
    if !shown {
        return None;
    }
    let kind = if *handler { "handler " } else { "" };
    // A step that ran on another host for this one (`on`) says where.
    let on = on
        .as_ref()
        .map(|d| format!(" (on {d})"))
        .unwrap_or_default();
    let mut line = format!("{host}{on}: {} {kind}{step}", status.as_str());
    if !details.is_empty() {
        line.push_str(": ");
        line.push_str(&Redacted::join(details, "; "));
    }
    if let Some(f) = failure {
        line.push_str(&format!(": {}", f.message));
    }
    if let Some(d) = diff {
        line.push('\n');
        line.push_str(d.trim_end());
    }
    Some(line)
}

/// The line printed when a retried step runs again on a host.
pub fn retry_line(e: &Event) -> Option<String> {
    let Event::Retrying {
        step,
        host,
        retry,
        retries,
        reason,
        handler,
        ..
    } = e
    else {
        return None;
    };
    let kind = if *handler { "handler " } else { "" };
    Some(format!(
        "{host}: retrying ({retry}/{retries}) {kind}{step}: {reason}"
    ))
}

/// How a step is named in progress lines: `step 3: NAME`, or `handler: NAME`.
fn step_label(index: usize, title: &str, handler: bool) -> String {
    if handler {
        format!("handler: {title}")
    } else {
        format!("step {}: {title}", index + 1)
    }
}

/// Busy hosts a heartbeat line names; the others are counted.
const HEARTBEAT_HOSTS_MAX: usize = 5;

/// The line printed for a step's heartbeat: how long it has run, and the hosts still busy on
/// it, each with how long and the last line its command printed so far.
pub fn heartbeat_line(e: &Event) -> Option<String> {
    let Event::StepRunning {
        index,
        step,
        handler,
        seconds,
        busy,
    } = e
    else {
        return None;
    };
    let mut line = format!(
        "{}: still running after {seconds} s",
        step_label(*index, step, *handler)
    );
    let hosts: Vec<String> = busy
        .iter()
        .take(HEARTBEAT_HOSTS_MAX)
        .map(|b| match &b.last_line {
            Some(l) => format!("{} ({} s, last line: {l})", b.host, b.seconds),
            None => format!("{} ({} s)", b.host, b.seconds),
        })
        .collect();
    if !hosts.is_empty() {
        line.push_str(" on ");
        line.push_str(&hosts.join(", "));
    }
    if busy.len() > HEARTBEAT_HOSTS_MAX {
        line.push_str(&format!(
            " and {} more host(s)",
            busy.len() - HEARTBEAT_HOSTS_MAX
        ));
    }
    Some(line)
}

impl EventSink for PlainSink {
    fn emit(&self, e: &Event) {
        let text = match e {
            Event::RunStarted {
                hosts,
                steps,
                check,
            } => Some(format!(
                "{} steps on {} hosts{}",
                steps,
                hosts,
                if *check {
                    " (check mode: nothing will change)"
                } else {
                    ""
                }
            )),
            Event::StepStarted {
                title,
                hosts,
                handler: true,
                ..
            } => Some(format!("handler: {title} ({} hosts)", hosts.len())),
            Event::StepStarted {
                index,
                title,
                hosts,
                handler: false,
            } => Some(format!(
                "step {}: {title} ({} hosts)",
                index + 1,
                hosts.len()
            )),
            Event::HostResult { .. } => result_line(e, self.verbose),
            Event::Retrying { .. } => retry_line(e),
            Event::StepRunning { .. } => heartbeat_line(e),
            Event::Interrupted => Some("interrupted: no new steps started".into()),
            _ => None,
        };
        if let Some(t) = text {
            let mut out = self.out.lock().unwrap();
            for l in t.lines() {
                let _ = writeln!(out, "[{}] {l}", clock());
            }
        }
    }
}

/// Live progress on a terminal: a spinner line per host showing its current step,
/// or one summary bar for large fleets; results print above the bars.
pub struct ProgressSink {
    verbose: bool,
    multi: MultiProgress,
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    bars: HashMap<String, ProgressBar>,
    summary: Option<ProgressBar>,
    done: usize,
    total: usize,
}

impl ProgressSink {
    pub fn new(verbose: bool) -> Self {
        Self::drawn_to(verbose, ProgressDrawTarget::stderr())
    }

    fn drawn_to(verbose: bool, target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        ProgressSink {
            verbose,
            multi,
            state: Mutex::new(ProgressState::default()),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {prefix:<20} {wide_msg}").expect("valid template")
    }

    /// A host working on a step: the step's elapsed time, updated in place.
    fn running_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {prefix:<20} {elapsed:>4} {wide_msg}")
            .expect("valid template")
    }
}

impl EventSink for ProgressSink {
    fn emit(&self, e: &Event) {
        let mut st = self.state.lock().unwrap();
        match e {
            Event::StepStarted {
                title,
                hosts,
                index,
                handler,
            } => {
                let what = step_label(*index, title, *handler);
                st.done = 0;
                st.total = hosts.len();
                if hosts.len() > PER_HOST_LINES_MAX {
                    let bar = st.summary.get_or_insert_with(|| {
                        let b = self.multi.add(ProgressBar::new(0));
                        b.set_style(
                            ProgressStyle::with_template(
                                "{spinner} [{bar:30}] {pos}/{len} {elapsed:>4} {wide_msg}",
                            )
                            .expect("valid template"),
                        );
                        b.enable_steady_tick(std::time::Duration::from_millis(120));
                        b
                    });
                    bar.set_length(hosts.len() as u64);
                    bar.set_position(0);
                    bar.reset_elapsed();
                    bar.set_message(what);
                } else {
                    for h in hosts {
                        let bar = st.bars.entry(h.to_string()).or_insert_with(|| {
                            let b = self.multi.add(ProgressBar::new_spinner());
                            b.set_style(Self::style());
                            b.set_prefix(h.to_string());
                            b.enable_steady_tick(std::time::Duration::from_millis(120));
                            b
                        });
                        bar.set_style(Self::running_style());
                        bar.reset_elapsed();
                        bar.set_message(what.clone());
                    }
                }
            }
            // The step each busy host works on, its elapsed time and last output line (under
            // `pipelined` the heartbeat may name a step whose start is not shown yet).
            Event::StepRunning {
                index,
                step,
                handler,
                busy,
                ..
            } => {
                let what = step_label(*index, step, *handler);
                for b in busy {
                    if let Some(bar) = st.bars.get(b.host.as_str()) {
                        bar.set_style(Self::running_style());
                        bar.set_elapsed(std::time::Duration::from_secs(b.seconds));
                        bar.set_message(match &b.last_line {
                            Some(l) => format!("{what}: {l}"),
                            None => what.clone(),
                        });
                    }
                }
                if let Some(bar) = &st.summary {
                    bar.set_message(format!("{what} ({} host(s) busy)", busy.len()));
                }
            }
            Event::HostResult { host, status, .. } => {
                st.done += 1;
                if let Some(line) = result_line(e, self.verbose) {
                    let _ = self.multi.println(line);
                }
                if let Some(b) = st.bars.get(host.as_str()) {
                    b.set_style(Self::style());
                    b.set_message(status.as_str());
                }
                if let Some(b) = &st.summary {
                    b.set_position(st.done as u64);
                }
            }
            Event::Retrying { host, .. } => {
                if let Some(line) = retry_line(e) {
                    let _ = self.multi.println(line);
                }
                if let Some(b) = st.bars.get(host.as_str()) {
                    b.set_message("retrying");
                }
            }
            Event::RunFinished { .. } => {
                for b in st.bars.values() {
                    b.finish_and_clear();
                }
                if let Some(b) = &st.summary {
                    b.finish_and_clear();
                }
            }
            Event::Interrupted => {
                let _ = self.multi.println("interrupted: no new steps started");
            }
            _ => {}
        }
    }
}

/// `--output json`: one JSON object per line on stdout (commands go to the log only).
pub struct JsonSink;

impl EventSink for JsonSink {
    fn emit(&self, e: &Event) {
        if matches!(e, Event::Command { .. }) {
            return;
        }
        if let Ok(line) = serde_json::to_string(e) {
            crate::term::out_line(&line);
        }
    }
}

/// The per-run log: every command with exit status, duration and output.
pub struct LogSink {
    file: Mutex<std::fs::File>,
}

impl LogSink {
    pub fn create(path: &std::path::Path) -> std::io::Result<Self> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(LogSink {
            file: Mutex::new(file),
        })
    }
}

impl EventSink for LogSink {
    fn emit(&self, e: &Event) {
        let mut f = self.file.lock().unwrap();
        let ts = clock();
        let _ = match e {
            Event::Command {
                host,
                step,
                command,
                exit_status,
                duration,
                stdout,
                stderr,
            } => writeln!(
                f,
                "[{ts}] {host} [{step}] exit={} {}ms\n$ {}\n{}{}",
                exit_status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into()),
                duration.as_millis(),
                command.trim_end().replace('\n', "\n  "),
                indent("stdout", stdout),
                indent("stderr", stderr)
            ),
            Event::HostResult { .. } => {
                writeln!(f, "[{ts}] {}", result_line(e, true).unwrap_or_default())
            }
            Event::Retrying { .. } => {
                writeln!(f, "[{ts}] {}", retry_line(e).unwrap_or_default())
            }
            Event::StepRunning { .. } => {
                writeln!(f, "[{ts}] {}", heartbeat_line(e).unwrap_or_default())
            }
            other => writeln!(
                f,
                "[{ts}] {}",
                serde_json::to_string(other).unwrap_or_default()
            ),
        };
    }
}

fn indent(label: &str, text: &str) -> String {
    if text.trim().is_empty() {
        return String::new();
    }
    let mut s = format!("  {label}:\n");
    for l in text.lines() {
        s.push_str("    ");
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// The recap table and every failure with host, step, command, exit status and stderr.
pub fn recap_text(recap: &Recap, check: bool) -> String {
    let mut s = String::new();
    let w = recap
        .hosts
        .iter()
        .map(|h| h.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let changed_label = if check { "would change" } else { "changed" };
    // Failures of steps with `ignore_errors` get a column of their own, when there are any.
    let ignored: usize = recap.hosts.iter().map(|h| h.ignored).sum();
    let ignored_cell = |cell: String| {
        if ignored > 0 {
            format!("  {cell:>7}")
        } else {
            String::new()
        }
    };
    s.push_str(&format!(
        "\n{:<w$}  {:>4}  {:>12}  {:>7}  {:>6}{}  {}\n",
        "HOST",
        "OK",
        changed_label.to_uppercase(),
        "SKIPPED",
        "FAILED",
        ignored_cell("IGNORED".into()),
        "UNREACHABLE"
    ));
    for h in &recap.hosts {
        s.push_str(&format!(
            "{:<w$}  {:>4}  {:>12}  {:>7}  {:>6}{}  {}\n",
            h.host,
            h.ok,
            h.changed + h.would_change,
            h.skipped,
            h.failed,
            ignored_cell(h.ignored.to_string()),
            if h.unreachable { "yes" } else { "" }
        ));
    }
    for h in &recap.hosts {
        for (step, f) in &h.failures {
            s.push_str(&format!(
                "\n{} failed in step `{step}`: {}\n",
                h.host, f.message
            ));
            if let Some(c) = &f.command {
                s.push_str(&format!("  command: {}\n", c.lines().next().unwrap_or("")));
            }
            if let Some(code) = f.exit_status {
                s.push_str(&format!("  exit status: {code}\n"));
            }
            if !f.stderr.is_empty() {
                s.push_str("  stderr:\n");
                for l in f.stderr.lines().take(20) {
                    s.push_str(&format!("    {l}\n"));
                }
            }
            if let Some(hint) = &f.hint {
                s.push_str(&format!("  hint: {hint}\n"));
            }
        }
    }
    if let Some(why) = &recap.stopped {
        s.push_str(&format!("\n{why}\n"));
    }
    let total_changed = recap.changed();
    s.push_str(&format!(
        "\n{} host(s), {} {}, {} failed or unreachable{}\n",
        recap.hosts.len(),
        total_changed,
        changed_label,
        recap.failed_hosts(),
        if ignored > 0 {
            format!(", {ignored} failure(s) ignored")
        } else {
            String::new()
        }
    ));
    s
}

/// Steps `provision run --profile` shows by default.
pub const PROFILE_TOP: usize = 10;

/// `--profile` (Ansible's `profile_tasks` callback): the `top` slowest steps, slowest first,
/// each with its wall time (from its start to its last host's result) and its slowest host.
pub fn profile_text(timings: &[StepTiming], top: usize) -> String {
    let mut slow: Vec<&StepTiming> = timings.iter().collect();
    // Slowest first; equal times in playbook order (handlers after steps).
    slow.sort_by_key(|t| (std::cmp::Reverse(t.duration), t.handler, t.index));
    let secs = |d: std::time::Duration| format!("{:.2}s", d.as_secs_f64());
    let mut rows = vec![vec!["STEP".into(), "TIME".into(), "SLOWEST HOST".into()]];
    for t in slow.iter().take(top) {
        rows.push(vec![
            step_label(t.index, &t.step, t.handler),
            secs(t.duration),
            format!("{} ({})", t.slowest_host, secs(t.slowest_host_duration)),
        ]);
    }
    format!(
        "\nslowest steps ({} of {}):\n{}",
        slow.len().min(top),
        slow.len(),
        table(&rows)
    )
}

/// Left-aligned columns separated by two spaces, as wide as their widest cell (in characters);
/// the tables of the day-2 and lab commands.
pub fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_engine::event::{FailureInfo, HostRecap};

    #[test]
    fn recap_shows_failures_readably() {
        let recap = Recap {
            hosts: vec![
                HostRecap {
                    host: Redacted::literal("web-1"),
                    ok: 3,
                    changed: 1,
                    ..Default::default()
                },
                HostRecap {
                    host: Redacted::literal("db-1"),
                    ok: 1,
                    failed: 1,
                    failures: vec![(
                        Redacted::literal("apt"),
                        FailureInfo {
                            message: Redacted::literal("command failed with exit status 100"),
                            command: Some(Redacted::literal("apt-get install -y nginx")),
                            exit_status: Some(100),
                            stderr: Redacted::literal("E: Unable to locate package nginx"),
                            hint: None,
                        },
                    )],
                    ..Default::default()
                },
            ],
            stopped: None,
        };
        let text = recap_text(&recap, false);
        assert!(
            text.contains("web-1     3             1        0       0"),
            "{text}"
        );
        assert!(text.contains("db-1 failed in step `apt`: command failed with exit status 100\n  command: apt-get install -y nginx\n  exit status: 100\n  stderr:\n    E: Unable to locate package nginx\n"), "{text}");
        assert!(
            text.ends_with("2 host(s), 1 changed, 1 failed or unreachable\n"),
            "{text}"
        );
    }

    #[test]
    fn a_retry_is_one_line_with_its_count() {
        let e = Event::Retrying {
            index: 2,
            step: Redacted::literal("wait for app"),
            host: Redacted::literal("web-1"),
            retry: 2,
            retries: 5,
            reason: Redacted::literal("command failed with exit status 1"),
            handler: false,
        };
        assert_eq!(
            retry_line(&e).unwrap(),
            "web-1: retrying (2/5) wait for app: command failed with exit status 1"
        );
        assert_eq!(retry_line(&Event::Interrupted), None);
    }

    /// Failures of steps with `ignore_errors` are a column of their own and do not count as
    /// failed hosts.
    #[test]
    fn recap_counts_ignored_failures_apart() {
        let recap = Recap {
            hosts: vec![HostRecap {
                host: Redacted::literal("h1"),
                ok: 2,
                ignored: 1,
                ..Default::default()
            }],
            stopped: None,
        };
        let text = recap_text(&recap, false);
        assert!(
            text.contains("HOST    OK       CHANGED  SKIPPED  FAILED  IGNORED  UNREACHABLE\nh1       2             0        0       0        1  \n"),
            "{text}"
        );
        assert!(
            text.ends_with("1 host(s), 0 changed, 0 failed or unreachable, 1 failure(s) ignored\n"),
            "{text}"
        );
        let e = Event::HostResult {
            index: 0,
            step: Redacted::literal("probe"),
            host: Redacted::literal("h1"),
            status: HostStatus::Ignored,
            details: vec![],
            diff: None,
            failure: Some(FailureInfo {
                message: Redacted::literal("command failed with exit status 1"),
                command: None,
                exit_status: Some(1),
                stderr: Redacted::default(),
                hint: None,
            }),
            duration: std::time::Duration::ZERO,
            handler: false,
            on: None,
        };
        assert_eq!(
            result_line(&e, false).unwrap(),
            "h1: ignored probe: command failed with exit status 1"
        );
        assert!(
            serde_json::to_string(&e)
                .unwrap()
                .contains("\"status\":\"ignored\"")
        );
    }

    /// A run stopped by a failure threshold says so in its recap, before the totals.
    #[test]
    fn recap_says_why_the_run_stopped() {
        let recap = Recap {
            hosts: vec![HostRecap {
                host: Redacted::literal("h1"),
                failed: 1,
                ..Default::default()
            }],
            stopped: Some(Redacted::literal(
                "stopped after step `deploy`: 1 of its 1 host(s) failed (100%), more than max_fail_percentage = 0; no further batches or steps ran",
            )),
        };
        let text = recap_text(&recap, false);
        assert!(
            text.ends_with("\nstopped after step `deploy`: 1 of its 1 host(s) failed (100%), more than max_fail_percentage = 0; no further batches or steps ran\n\n1 host(s), 0 changed, 1 failed or unreachable\n"),
            "{text}"
        );
    }

    /// Handlers are announced and reported by name, marked as handlers.
    #[test]
    fn handler_lines_name_the_handler() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = PlainSink {
            verbose: false,
            out: Mutex::new(Box::new(buf.clone())),
        };
        sink.emit(&Event::StepStarted {
            index: 0,
            title: Redacted::literal("restart journald"),
            hosts: vec![Redacted::literal("web-1")],
            handler: true,
        });
        let result = Event::HostResult {
            index: 0,
            step: Redacted::literal("restart journald"),
            host: Redacted::literal("web-1"),
            status: HostStatus::Changed,
            details: vec![Redacted::literal(
                "run `systemctl restart systemd-journald`",
            )],
            diff: None,
            failure: None,
            duration: std::time::Duration::ZERO,
            handler: true,
            on: None,
        };
        sink.emit(&result);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().map(|l| &l[11..]).collect();
        assert_eq!(
            lines,
            [
                "handler: restart journald (1 hosts)",
                "web-1: changed handler restart journald: run `systemctl restart systemd-journald`"
            ]
        );
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(
            (json["handler"].clone(), json["step"].clone()),
            (true.into(), "restart journald".into())
        );
    }

    /// A heartbeat line: the step, how long it ran, each busy host with its last line (if it
    /// printed one), and how many more hosts beyond five.
    #[test]
    fn a_heartbeat_is_one_line_naming_the_busy_hosts() {
        use provision_engine::event::Busy;
        let busy = |host: &'static str, seconds, last: Option<&'static str>| Busy {
            host: Redacted::literal(host),
            seconds,
            last_line: last.map(Redacted::literal),
        };
        let e = Event::StepRunning {
            index: 2,
            step: Redacted::literal("install packages"),
            handler: false,
            seconds: 20,
            busy: vec![
                busy("web-1", 20, Some("Unpacking nginx ...")),
                busy("web-2", 19, None),
            ],
        };
        assert_eq!(
            heartbeat_line(&e).unwrap(),
            "step 3: install packages: still running after 20 s on web-1 (20 s, last line: Unpacking nginx ...), web-2 (19 s)"
        );
        let many = Event::StepRunning {
            index: 0,
            step: Redacted::literal("restart app"),
            handler: true,
            seconds: 10,
            busy: (0..7).map(|_| busy("h", 10, None)).collect(),
        };
        assert_eq!(
            heartbeat_line(&many).unwrap(),
            "handler: restart app: still running after 10 s on h (10 s), h (10 s), h (10 s), h (10 s), h (10 s) and 2 more host(s)"
        );
        let waiting = Event::StepRunning {
            index: 0,
            step: Redacted::literal("wait"),
            handler: false,
            seconds: 30,
            busy: vec![],
        };
        assert_eq!(
            heartbeat_line(&waiting).unwrap(),
            "step 1: wait: still running after 30 s"
        );
        assert_eq!(heartbeat_line(&Event::Interrupted), None);
    }

    /// `--profile`: the slowest steps first, at most `top`, each with its slowest host.
    #[test]
    fn the_profile_lists_the_slowest_steps_first() {
        use std::time::Duration;
        let t = |index, step: &'static str, handler, ms, host: &'static str, host_ms| StepTiming {
            index,
            step: Redacted::literal(step),
            handler,
            duration: Duration::from_millis(ms),
            slowest_host: Redacted::literal(host),
            slowest_host_duration: Duration::from_millis(host_ms),
        };
        let timings = [
            t(0, "facts", false, 310, "db-1", 300),
            t(1, "install packages", false, 42_500, "web-2", 42_480),
            t(2, "template", false, 1_200, "web-1", 1_190),
            t(0, "restart nginx", true, 3_000, "web-1", 2_990),
        ];
        assert_eq!(
            profile_text(&timings, 3),
            "\nslowest steps (3 of 4):\n\
             STEP                      TIME    SLOWEST HOST\n\
             step 2: install packages  42.50s  web-2 (42.48s)\n\
             handler: restart nginx    3.00s   web-1 (2.99s)\n\
             step 3: template          1.20s   web-1 (1.19s)\n"
        );
        assert_eq!(
            profile_text(&[], PROFILE_TOP),
            "\nslowest steps (0 of 0):\nSTEP  TIME  SLOWEST HOST\n"
        );
    }

    /// On a terminal a heartbeat updates each busy host's line in place: the step, its last
    /// output line and the elapsed time; the host's result replaces them.
    #[test]
    fn a_heartbeat_updates_the_busy_hosts_lines_in_place() {
        use provision_engine::event::Busy;
        let sink = ProgressSink::drawn_to(false, ProgressDrawTarget::hidden());
        let hosts = vec![Redacted::literal("h1"), Redacted::literal("h2")];
        sink.emit(&Event::StepStarted {
            index: 1,
            title: Redacted::literal("slow"),
            hosts,
            handler: false,
        });
        sink.emit(&Event::StepRunning {
            index: 1,
            step: Redacted::literal("slow"),
            handler: false,
            seconds: 20,
            busy: vec![Busy {
                host: Redacted::literal("h1"),
                seconds: 20,
                last_line: Some(Redacted::literal("first")),
            }],
        });
        let bar = |h: &str| sink.state.lock().unwrap().bars[h].clone();
        assert_eq!(bar("h1").message(), "step 2: slow: first");
        assert!(bar("h1").elapsed() >= std::time::Duration::from_secs(20));
        assert_eq!(bar("h2").message(), "step 2: slow", "h2 is not busy");
        assert!(bar("h2").elapsed() < std::time::Duration::from_secs(20));
        sink.emit(&Event::HostResult {
            index: 1,
            step: Redacted::literal("slow"),
            host: Redacted::literal("h1"),
            status: HostStatus::Changed,
            details: vec![],
            diff: None,
            failure: None,
            duration: std::time::Duration::from_secs(21),
            handler: false,
            on: None,
        });
        assert_eq!(bar("h1").message(), "changed");
    }

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["A".into(), "BB".into()],
            vec!["ccc".into(), "d".into()],
        ]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}
