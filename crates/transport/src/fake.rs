//! A recording fake transport for unit tests of the engine and steps: it never
//! touches the network, answers with scripted outputs, and keeps every command.

use crate::command::{Command, Output, Stdin};
use crate::error::TransportError;
use crate::ssh::Target;
use crate::{Connector, Transport};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

/// A command the fake received, with its stdin read out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub script: String,
    pub stdin: Vec<u8>,
}

type Responder = Arc<dyn Fn(&str) -> Output + Send + Sync>;

struct Rule {
    needle: String,
    output: Responder,
    once: bool,
}

/// Answers each command with the first rule whose needle is a substring of the
/// script (rules added later are tried first), else with the default output.
pub struct FakeTransport {
    host: String,
    rules: Mutex<Vec<Rule>>,
    default: Mutex<Output>,
    log: Mutex<Vec<Recorded>>,
    unreachable: Mutex<bool>,
    /// Commands containing the needle take this long (tokio time, so a paused clock makes the
    /// runner's ordering and parallelism exact to observe).
    delays: Mutex<Vec<(String, std::time::Duration)>>,
    /// Commands containing the needle print this at once, before their delay (fed to their
    /// [`crate::Tail`] as the real transport feeds it), as a long command prints as it goes.
    early: Mutex<Vec<(String, Vec<u8>)>>,
}

impl FakeTransport {
    /// A host where every command succeeds with empty output unless told otherwise.
    pub fn new(host: impl Into<String>) -> Self {
        FakeTransport {
            host: host.into(),
            rules: Mutex::new(Vec::new()),
            default: Mutex::new(Output::ok("")),
            log: Mutex::new(Vec::new()),
            unreachable: Mutex::new(false),
            delays: Mutex::new(Vec::new()),
            early: Mutex::new(Vec::new()),
        }
    }

    /// Commands containing `needle` print `output` as soon as they start, before their delay
    /// (what a heartbeat shows of a running command); their answer is still the rules'.
    pub fn prints_first(&self, needle: impl Into<String>, output: impl Into<Vec<u8>>) -> &Self {
        self.early
            .lock()
            .unwrap()
            .push((needle.into(), output.into()));
        self
    }

    /// Commands containing `needle` are answered `after` they are received (recorded at once).
    pub fn delay(&self, needle: impl Into<String>, after: std::time::Duration) -> &Self {
        self.delays.lock().unwrap().push((needle.into(), after));
        self
    }

    pub fn respond(&self, needle: impl Into<String>, output: Output) -> &Self {
        self.rules.lock().unwrap().insert(
            0,
            Rule {
                needle: needle.into(),
                output: Arc::new(move |_| output.clone()),
                once: false,
            },
        );
        self
    }

    pub fn respond_once(&self, needle: impl Into<String>, output: Output) -> &Self {
        self.rules.lock().unwrap().insert(
            0,
            Rule {
                needle: needle.into(),
                output: Arc::new(move |_| output.clone()),
                once: true,
            },
        );
        self
    }

    /// Answers matching commands by computing the output from the script.
    pub fn respond_with(
        &self,
        needle: impl Into<String>,
        f: impl Fn(&str) -> Output + Send + Sync + 'static,
    ) -> &Self {
        self.rules.lock().unwrap().insert(
            0,
            Rule {
                needle: needle.into(),
                output: Arc::new(f),
                once: false,
            },
        );
        self
    }

    pub fn set_default(&self, output: Output) {
        *self.default.lock().unwrap() = output;
    }

    /// From now on every command fails as if the host had dropped off the network.
    pub fn set_unreachable(&self, yes: bool) {
        *self.unreachable.lock().unwrap() = yes;
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn scripts(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.script.clone())
            .collect()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

#[async_trait]
impl Transport for FakeTransport {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, cmd: Command) -> Result<Output, TransportError> {
        if *self.unreachable.lock().unwrap() {
            return Err(TransportError::ConnectionLost {
                host: self.host.clone(),
                during: format!("running `{}`", cmd.script),
            });
        }
        let stdin = match cmd.stdin {
            Stdin::Empty => Vec::new(),
            Stdin::Bytes(b) => b.to_vec(),
            Stdin::Stream(mut r) => {
                let mut v = Vec::new();
                r.read_to_end(&mut v)
                    .await
                    .map_err(|e| TransportError::Protocol {
                        host: self.host.clone(),
                        reason: e.to_string(),
                    })?;
                v
            }
        };
        self.log.lock().unwrap().push(Recorded {
            script: cmd.script.clone(),
            stdin,
        });
        let delay = self
            .delays
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| cmd.script.contains(n.as_str()))
            .map(|(_, d)| *d);
        let early = self
            .early
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| cmd.script.contains(n.as_str()))
            .map(|(_, o)| o.clone());
        if let Some(o) = early {
            crate::command::Lines::default().feed(&o, cmd.tail.as_ref());
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut rules = self.rules.lock().unwrap();
        if let Some(i) = rules.iter().position(|r| cmd.script.contains(&r.needle)) {
            let out = (rules[i].output)(&cmd.script);
            if rules[i].once {
                rules.remove(i);
            }
            return Ok(stream(out, cmd.output_to));
        }
        Ok(stream(self.default.lock().unwrap().clone(), cmd.output_to))
    }
}

/// Sends a canned output to the command's sink, as the real transport would.
fn stream(mut out: Output, sink: Option<crate::OutputSink>) -> Output {
    if let Some(s) = sink {
        if !out.stdout.is_empty() {
            let _ = s.send(crate::Chunk::Stdout(std::mem::take(&mut out.stdout)));
        }
        if !out.stderr.is_empty() {
            let _ = s.send(crate::Chunk::Stderr(std::mem::take(&mut out.stderr)));
        }
    }
    out
}

/// Hands out the fake registered for each host name; unknown hosts are unreachable.
#[derive(Default)]
pub struct FakeConnector {
    hosts: Mutex<HashMap<String, Arc<FakeTransport>>>,
}

impl FakeConnector {
    pub fn add(&self, fake: Arc<FakeTransport>) {
        self.hosts
            .lock()
            .unwrap()
            .insert(fake.host().to_string(), fake);
    }

    pub fn get(&self, host: &str) -> Option<Arc<FakeTransport>> {
        self.hosts.lock().unwrap().get(host).cloned()
    }

    /// A connector for `fakes`, and their hosts as a run's targets in the same order.
    pub fn of(fakes: &[Arc<FakeTransport>]) -> (Arc<FakeConnector>, Vec<Target>) {
        let connector = Arc::new(FakeConnector::default());
        let targets = fakes
            .iter()
            .map(|f| {
                connector.add(f.clone());
                Target {
                    name: f.host().to_string(),
                    ..Default::default()
                }
            })
            .collect();
        (connector, targets)
    }
}

#[async_trait]
impl Connector for FakeConnector {
    async fn connect(&self, target: &Target) -> Result<Arc<dyn Transport>, TransportError> {
        match self.get(&target.name) {
            Some(f) => Ok(f as Arc<dyn Transport>),
            None => Err(TransportError::Unreachable {
                host: target.name.clone(),
                addr: target.address.clone(),
                reason: "no fake registered".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::{Upload, UploadOutcome};

    #[tokio::test]
    async fn records_and_answers() {
        let f = FakeTransport::new("h1");
        f.respond("cat /etc/hostname", Output::ok("web-1\n"));
        f.respond_once("false", Output::failed(1, "nope"));
        assert_eq!(
            f.run(Command::new("cat /etc/hostname"))
                .await
                .unwrap()
                .stdout_str(),
            "web-1\n"
        );
        assert!(!f.run(Command::new("false")).await.unwrap().success());
        assert!(
            f.run(Command::new("false")).await.unwrap().success(),
            "once rules are used up"
        );
        f.run(Command::new("tee x").stdin(Stdin::bytes("data")))
            .await
            .unwrap();
        assert_eq!(f.recorded().last().unwrap().stdin, b"data");
        assert_eq!(f.scripts().len(), 4);
    }

    #[tokio::test]
    async fn generic_upload_skips_when_hash_matches() {
        let f = FakeTransport::new("h1");
        // sha256("hi")
        f.respond("stat -c", Output::ok("644 root root\n8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4  -\n"));
        let out = f.upload(Upload::bytes("/etc/x", "hi")).await.unwrap();
        assert_eq!(out, UploadOutcome::Unchanged);
        assert_eq!(f.scripts().len(), 1, "no write when content matches");
        let out = f
            .upload(Upload::bytes("/etc/x", "hi").mode(0o600))
            .await
            .unwrap();
        assert_eq!(out, UploadOutcome::Written);
        assert_eq!(f.scripts()[2], "chmod 600 /etc/x");
        f.clear();
        let out = f.upload(Upload::bytes("/etc/x", "new")).await.unwrap();
        assert_eq!(out, UploadOutcome::Written);
        let rec = f.recorded();
        assert!(rec[1].script.contains("mv -f"));
        assert_eq!(rec[1].stdin, b"new");
    }
}
