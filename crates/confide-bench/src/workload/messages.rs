//! The message workloads: fan-out at full speed, fan-out at a chat rate, many rooms of
//! ten, and direct messages between random pairs.
//!
//! All four connect every user first (timed as setup), let the setup traffic settle,
//! then start the senders and measure from the first send until every expected message
//! has reached every receiver (or the run's time is up).

use super::crowd::{self, Dest, Entry, Pace, SendJob};
use super::plan::{Everyone, Groups, Pairs, Plan};
use super::{Ctx, Workload};
use crate::body::now_ns;
use crate::client::{Session, user_name};
use crate::procfs;
use crate::report::RunReport;
use crate::server::TargetKind;
use crate::stats::Totals;
use anyhow::{Context as _, Result, bail};
use confide_proto::{MessageNonce, Request, Target};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// How long the paced workload sends when no duration is given.
const PACED_DEFAULT: Duration = Duration::from_secs(10);

/// Traffic must be still this long before the measured phase starts.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs the workload in `ctx.spec`.
///
/// # Errors
/// If the users cannot be set up.
pub async fn run(ctx: &mut Ctx) -> Result<RunReport> {
    let spec = ctx.spec.clone();
    let kind = ctx.target.kind;
    let users = spec.users;
    if users == 0 {
        bail!("a message workload needs at least one user");
    }
    let (plan, entry, senders, fan_out): (Arc<dyn Plan>, Entry, u32, u32) = match spec.workload {
        Workload::Fanout | Workload::Paced => (
            Arc::new(Everyone { users }),
            Entry::Lobby,
            spec.senders.clamp(1, users),
            users,
        ),
        Workload::Rooms => {
            let groups = Groups {
                users,
                size: spec.room_size.max(1),
            };
            (
                Arc::new(groups),
                Entry::Group(groups),
                users,
                groups.size.min(users),
            )
        }
        Workload::Direct => {
            if users < 2 {
                bail!("direct messages need at least two users");
            }
            (Arc::new(direct_pairs(&spec)), Entry::Lobby, users, 2)
        }
        Workload::Idle | Workload::Sync | Workload::Files | Workload::Restart => {
            bail!("not a message workload")
        }
    };
    let mut report = RunReport::new(spec.workload, kind, users, spec.body_bytes);
    report.senders = senders;
    report.connections = users;

    ctx.warm_up().await?;
    let baseline = ctx.target.sample()?;
    let setup_started = Instant::now();
    let mut crowd = crowd::connect(ctx, 0..users, &entry, &plan).await?;
    if spec.workload == Workload::Direct && kind == TargetKind::Confide {
        let opened = Instant::now();
        let count = open_conversations(ctx, &crowd, &direct_pairs(&spec)).await?;
        if count > 0 {
            report.notes.push(format!(
                "{count} direct conversations opened before measuring, in {:.1} s",
                opened.elapsed().as_secs_f64()
            ));
        }
    }
    report.setup_seconds = setup_started.elapsed().as_secs_f64();
    if !crowd::settle(&ctx.frames, SETTLE, ctx.measure_deadline()).await {
        report
            .notes
            .push("setup traffic had not settled when sending started".to_owned());
    }
    let lobby = crowd.members.first().and_then(|member| member.room);

    let deadline = ctx.measure_deadline();
    let server_before = ctx.target.sample()?;
    let threads_before = procfs::thread_cpu(ctx.target.pid())?;
    let bench_before = procfs::sample_self()?;
    let start_ns = now_ns();
    let start = Instant::now();
    let pace = |position: u32| match (spec.workload, spec.duration) {
        (Workload::Paced, duration) => {
            let duration = duration.unwrap_or(PACED_DEFAULT);
            let interval = Duration::from_secs_f64(1.0 / spec.rate.max(0.001));
            let count = spec
                .messages
                .unwrap_or_else(|| (duration.as_secs_f64() * spec.rate).ceil() as u32);
            // Spread the senders over the interval rather than sending in lockstep.
            let offset = interval.mul_f64(f64::from(position) / f64::from(senders));
            Pace::Every {
                count,
                interval,
                first: start + offset,
            }
        }
        (_, Some(duration)) if spec.messages.is_none() => Pace::Full {
            count: u32::MAX,
            until: Some(start + duration),
        },
        _ => Pace::Full {
            count: spec.messages_per_sender(senders, fan_out),
            until: None,
        },
    };
    let mut tasks = Vec::with_capacity(senders as usize);
    for position in 0..senders {
        let member = crowd
            .members
            .get_mut(position as usize)
            .context("missing sender")?;
        let dest = match (kind, spec.workload) {
            (TargetKind::Relay, _) => Dest::Group,
            (TargetKind::Confide, Workload::Direct) => Dest::Peers(Arc::new(direct_pairs(&spec))),
            (TargetKind::Confide, Workload::Rooms) => {
                Dest::Room(member.room.context("the user has no room")?)
            }
            (TargetKind::Confide, _) => Dest::Room(lobby.context("the lobby's id is unknown")?),
        };
        let job = SendJob {
            dest,
            pace: pace(position),
            body_bytes: spec.body_bytes,
        };
        tasks.push(crowd::start_sender(member, kind, job, deadline)?);
    }
    let mut sent = Vec::with_capacity(tasks.len());
    let mut sender_errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let outcome = task.await.context("a sender task failed")?;
        if let Some(error) = outcome.error {
            *sender_errors.entry(error).or_insert(0) += 1;
        }
        if let Some(member) = crowd.members.get_mut(outcome.index as usize) {
            member.writer = outcome.writer;
        }
        sent.push((outcome.index as usize, outcome.sent));
    }

    let mut expected = vec![0u64; users as usize];
    for &(sender, count) in &sent {
        for counter in 0..count {
            plan.receivers(
                u32::try_from(sender).unwrap_or(u32::MAX),
                counter,
                &mut |receiver| {
                    if let Some(slot) = expected.get_mut(receiver as usize) {
                        *slot += 1;
                    }
                },
            );
        }
    }
    let acks = (kind == TargetKind::Confide).then_some(sent.as_slice());
    let complete = crowd::wait_for_deliveries(&crowd.members, &expected, acks, deadline).await;
    let end_ns = if complete {
        crowd
            .members
            .iter()
            .zip(&expected)
            .filter(|(_, want)| **want > 0)
            .map(|(member, _)| member.progress.last_ns.load(Ordering::Relaxed))
            .max()
            .unwrap_or(start_ns)
    } else {
        now_ns()
    };
    let server_after = ctx.target.sample()?;
    let threads_after = procfs::thread_cpu(ctx.target.pid())?;
    let bench_after = procfs::sample_self()?;
    let last_ack_ns = crowd
        .members
        .iter()
        .map(|member| member.progress.last_ack_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(start_ns);
    let acked: u64 = crowd
        .members
        .iter()
        .map(|member| member.progress.acked.load(Ordering::Relaxed))
        .sum();
    let refused: u64 = crowd
        .members
        .iter()
        .map(|member| member.progress.refused.load(Ordering::Relaxed))
        .sum();
    // How connections ended so far; the ones the bench drops after this are not news.
    report.server_disconnects = ctx.target.disconnect_reasons();
    let outcomes = crowd::stop_readers(&mut crowd.members).await?;

    let mut totals = Totals::default();
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    for (outcome, &want) in outcomes.iter().zip(&expected) {
        totals.add(&outcome.receipts, want);
        if let Some(reason) = &outcome.ended {
            *ended.entry(reason.clone()).or_insert(0) += 1;
        }
        if let Some(refusal) = &outcome.first_refusal {
            *refusals.entry(refusal.clone()).or_insert(0) += 1;
        }
    }
    let seconds = |ns: u64| (ns.saturating_sub(start_ns) as f64 / 1e9).max(1e-9);

    report.messages = sent.iter().map(|&(_, count)| u64::from(count)).sum();
    report.measured_seconds = seconds(end_ns);
    report.deliveries = totals.delivered;
    report.expected_deliveries = expected.iter().sum();
    report.deliveries_per_second = totals.delivered as f64 / seconds(end_ns);
    if kind == TargetKind::Confide {
        report.acked = Some(acked);
        report.acked_per_second = Some(acked as f64 / seconds(last_ack_ns));
    }
    report.latency_kind = "end_to_end";
    report.latency = totals.latency.summary();
    report.lost = totals.lost;
    report.duplicated = totals.duplicates;
    report.misrouted = totals.misrouted;
    report.send_errors = refused;
    report.connections_lost = ended.values().sum();
    fill_resources(
        &mut report,
        baseline,
        server_before,
        server_after,
        bench_before,
        bench_after,
    );
    report.timed_out = !complete;
    report.notes.push(format!(
        "CPU while measuring: server {:.2} s ({}), bench {:.2} s, in {:.2} s",
        report.server_cpu_seconds,
        threads_summary(&procfs::thread_cpu_delta(&threads_before, &threads_after)),
        report.bench_cpu_seconds,
        report.measured_seconds
    ));
    for (error, count) in sender_errors {
        report
            .notes
            .push(format!("{count} senders stopped early: {error}"));
    }
    for (refusal, count) in refusals {
        report
            .notes
            .push(format!("{count} users had sends refused, first: {refusal}"));
    }
    for (reason, count) in ended {
        report
            .notes
            .push(format!("{count} connections ended early: {reason}"));
    }
    Ok(report)
}

/// The pairs of the direct workload: a random pairing, or a new random peer for every
/// message with `--direct-random-peers`.
fn direct_pairs(spec: &super::Spec) -> Pairs {
    if spec.direct_random_peers {
        Pairs::Random {
            users: spec.users,
            seed: 1,
        }
    } else {
        Pairs::matching(spec.users, 1)
    }
}

/// Opens every conversation of a pairing with one message (not a bench message, so
/// receivers ignore it), each from a second, short-lived connection of its opener;
/// returns how many. The measured phase then sends into existing conversations.
async fn open_conversations(ctx: &Ctx, crowd: &crowd::Crowd, pairs: &Pairs) -> Result<usize> {
    let conversations = pairs.conversations();
    let tls = ctx.tls.clone().context("no TLS configuration")?;
    let limit = Arc::new(tokio::sync::Semaphore::new(
        ctx.settings.connect_parallelism.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for &(opener, peer) in &conversations {
        let token = crowd
            .members
            .get(opener as usize)
            .and_then(|member| member.token.clone())
            .context("no session token")?;
        let limit = Arc::clone(&limit);
        let tls = tls.clone();
        let addr = ctx.target.addr;
        tasks.spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .map_err(|err| anyhow::anyhow!(err))?;
            let mut session = Session::connect(addr, &tls).await?;
            session.resume(token).await?;
            let mut nonce = [0xff; 16];
            nonce[..4].copy_from_slice(&opener.to_le_bytes());
            let answer = session
                .request(Request::Send {
                    target: Target::User(user_name(peer)),
                    nonce: MessageNonce(nonce),
                    body: b"hello".to_vec(),
                })
                .await?;
            session.close().await;
            match answer {
                Ok(_) => Ok(()),
                Err(err) => Err(anyhow::anyhow!(
                    "{} could not open a conversation with {}: {err}",
                    user_name(opener),
                    user_name(peer)
                )),
            }
        });
    }
    let deadline = ctx.measure_deadline();
    while let Some(joined) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .map_err(|_| anyhow::anyhow!("opening the conversations took longer than the run allows"))?
    {
        joined.context("an opening task failed")??;
    }
    Ok(conversations.len())
}

/// `name 1.23 s, other 0.40 s`: the busiest thread names of a CPU breakdown.
#[must_use]
pub fn threads_summary(delta: &[(String, f64)]) -> String {
    let parts: Vec<String> = delta
        .iter()
        .take(4)
        .map(|(name, seconds)| format!("{name} {seconds:.2} s"))
        .collect();
    if parts.is_empty() {
        "no thread busy".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Fills the CPU and memory figures of `report` from samples of the target and the
/// bench taken before the users connected, when measuring started, and when it ended.
pub fn fill_resources(
    report: &mut RunReport,
    baseline: procfs::Sample,
    server_before: procfs::Sample,
    server_after: procfs::Sample,
    bench_before: procfs::Sample,
    bench_after: procfs::Sample,
) {
    report.server_cpu_seconds = (server_after.cpu_seconds - server_before.cpu_seconds).max(0.0);
    report.server_cpu_us_per_delivery =
        (report.deliveries > 0).then(|| report.server_cpu_seconds * 1e6 / report.deliveries as f64);
    report.server_rss_bytes = server_after.rss_bytes;
    report.server_peak_rss_bytes = server_after.peak_rss_bytes;
    report.server_baseline_rss_bytes = baseline.rss_bytes;
    report.rss_per_connection_bytes = (report.connections > 0).then(|| {
        server_after.rss_bytes.saturating_sub(baseline.rss_bytes) as f64
            / f64::from(report.connections)
    });
    report.bench_cpu_seconds = (bench_after.cpu_seconds - bench_before.cpu_seconds).max(0.0);
    report.bench_rss_bytes = bench_after.rss_bytes;
}
