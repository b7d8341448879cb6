//! The reconnect-and-sync workload: half the users go away, K messages are sent and
//! acknowledged while they are gone, and they come back with `Resume` and `Sync` from
//! the last sequence number they had seen.
//!
//! Measured: the time each returning user takes from opening its connection to being
//! caught up, the catch-up throughput, and that each got exactly the K messages it
//! missed, none twice. The users who stayed receive the K messages live; their latency
//! and losses are reported in the notes. Confide only: the relay keeps no history.

use super::Ctx;
use super::crowd::{self, Dest, Entry, Pace, SendJob};
use super::messages::{fill_resources, threads_summary};
use super::plan::{Everyone, Plan};
use crate::body::now_ns;
use crate::client::{Session, user_name};
use crate::procfs;
use crate::report::{RunReport, format_ns};
use crate::server::TargetKind;
use crate::stats::{Histogram, Receipts, Totals};
use anyhow::{Context as _, Result, anyhow, bail};
use confide_proto::{RoomId, Seq, SessionToken};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

/// Traffic must be still this long before each phase.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs the sync workload.
///
/// # Errors
/// If the users cannot be set up, or the target is not Confide.
pub async fn run(ctx: &mut Ctx) -> Result<RunReport> {
    let spec = ctx.spec.clone();
    if ctx.target.kind != TargetKind::Confide {
        bail!("the sync workload needs Confide: the relay keeps no history");
    }
    let users = spec.users;
    if users < 2 {
        bail!("the sync workload needs at least two users");
    }
    let missed = spec.missed;
    let mut report = RunReport::new(spec.workload, TargetKind::Confide, users, spec.body_bytes);
    report.senders = 1;
    report.connections = users;
    let plan: Arc<dyn Plan> = Arc::new(Everyone { users });

    ctx.warm_up().await?;
    let baseline = ctx.target.sample()?;
    let setup_started = Instant::now();
    let mut crowd = crowd::connect(ctx, 0..users, &Entry::Lobby, &plan).await?;
    report.setup_seconds = setup_started.elapsed().as_secs_f64();
    crowd::settle(&ctx.frames, SETTLE, ctx.measure_deadline()).await;
    let lobby = crowd
        .members
        .first()
        .and_then(|member| member.room)
        .context("the lobby's id is unknown")?;

    // The odd users go away, remembering their token and what they had seen.
    let (present, away): (Vec<_>, Vec<_>) = std::mem::take(&mut crowd.members)
        .into_iter()
        .partition(|member| member.index % 2 == 0);
    crowd.members = present;
    let mut away = away;
    let away_outcomes = crowd::stop_readers(&mut away).await?;
    let mut returning = Vec::with_capacity(away.len());
    for (mut member, outcome) in away.into_iter().zip(away_outcomes) {
        let token = member.token.clone().context("no session token")?;
        returning.push((member.index, token, outcome.cursors));
        // Leave cleanly (TLS close_notify), as a client that quits does.
        if let Some(mut writer) = member.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer.shutdown()).await;
        }
    }
    tokio::time::sleep(SETTLE).await;

    // User 0 sends the K messages; everyone present gets them live.
    let deadline = ctx.measure_deadline();
    let server_before = ctx.target.sample()?;
    let threads_before = procfs::thread_cpu(ctx.target.pid())?;
    let bench_before = procfs::sample_self()?;
    let live_start_ns = now_ns();
    let sender = crowd.members.first_mut().context("no sender")?;
    let task = crowd::start_sender(
        sender,
        TargetKind::Confide,
        SendJob {
            dest: Dest::Room(lobby),
            pace: Pace::Full {
                count: missed,
                until: None,
            },
            body_bytes: spec.body_bytes,
        },
        deadline,
    )?;
    let outcome = task.await.context("the sender task failed")?;
    if let Some(error) = &outcome.error {
        report
            .notes
            .push(format!("the sender stopped early: {error}"));
    }
    sender.writer = outcome.writer;
    let sent = outcome.sent;
    let expected_live = vec![u64::from(sent); crowd.members.len()];
    let live_complete =
        crowd::wait_for_deliveries(&crowd.members, &expected_live, Some(&[(0, sent)]), deadline)
            .await;
    let acked = crowd
        .members
        .first()
        .map_or(0, |member| member.progress.acked.load(Ordering::Relaxed));
    let last_ack_ns = crowd.members.first().map_or(live_start_ns, |member| {
        member.progress.last_ack_ns.load(Ordering::Relaxed)
    });
    let mut live = Totals::default();
    // The present users keep reading (the returning users' presence reaches them) and
    // are stopped at the end.

    // The away users come back.
    let catch_up = catch_up(ctx, returning, sent, deadline).await?;
    let server_after = ctx.target.sample()?;
    let threads_after = procfs::thread_cpu(ctx.target.pid())?;
    let bench_after = procfs::sample_self()?;
    // How connections ended so far; the ones the bench drops after this are not news.
    report.server_disconnects = ctx.target.disconnect_reasons();
    let outcomes = crowd::stop_readers(&mut crowd.members).await?;
    for outcome in &outcomes {
        live.add(&outcome.receipts, u64::from(sent));
    }

    let live_latency = live.latency.summary();
    report.notes.push(format!(
        "{} users stayed and got the {sent} messages live: p50 {}, p99 {}, max {}, {} lost, \
         {} duplicated{}",
        outcomes.len(),
        format_ns(live_latency.p50_ns),
        format_ns(live_latency.p99_ns),
        format_ns(live_latency.max_ns),
        live.lost,
        live.duplicates,
        if live_complete { "" } else { " (timed out)" },
    ));
    report.notes.push(format!(
        "{} users came back and caught up with {} sync requests in {:.2} s",
        catch_up.users, catch_up.pages, catch_up.seconds,
    ));
    report.notes.push(format!(
        "server CPU by thread while sending and catching up: {}",
        threads_summary(&procfs::thread_cpu_delta(&threads_before, &threads_after))
    ));
    report.messages = u64::from(sent);
    report.acked = Some(acked);
    report.acked_per_second =
        Some(acked as f64 / (last_ack_ns.saturating_sub(live_start_ns) as f64 / 1e9).max(1e-9));
    report.measured_seconds = catch_up.seconds;
    report.deliveries = catch_up.totals.delivered;
    report.expected_deliveries = u64::from(sent) * u64::from(catch_up.users);
    report.deliveries_per_second = catch_up.totals.delivered as f64 / catch_up.seconds.max(1e-9);
    report.latency_kind = "catch_up";
    report.latency = catch_up.times.summary();
    report.lost = catch_up.totals.lost + live.lost;
    report.duplicated = catch_up.totals.duplicates + live.duplicates;
    report.misrouted = catch_up.totals.misrouted + live.misrouted;
    report.connections_lost = outcomes
        .iter()
        .filter(|outcome| outcome.ended.is_some())
        .count() as u64;
    report.timed_out = !live_complete || catch_up.timed_out;
    fill_resources(
        &mut report,
        baseline,
        server_before,
        server_after,
        bench_before,
        bench_after,
    );
    // The CPU above covers sending, live fan-out and catch-up together; per delivery
    // it is counted over both kinds.
    let all_deliveries = report.deliveries + live.delivered;
    report.server_cpu_us_per_delivery =
        (all_deliveries > 0).then(|| report.server_cpu_seconds * 1e6 / all_deliveries as f64);
    Ok(report)
}

/// What the returning users found.
struct CatchUp {
    users: u32,
    pages: u32,
    seconds: f64,
    timed_out: bool,
    totals: Totals,
    times: Histogram,
}

/// Reconnects every returning user with bounded parallelism: TLS, hello, `Resume`,
/// then `Sync` from its cursors until nothing more waits. Each must find exactly
/// messages `0..sent` of user 0.
async fn catch_up(
    ctx: &Ctx,
    returning: Vec<(u32, SessionToken, HashMap<RoomId, Seq>)>,
    sent: u32,
    deadline: Instant,
) -> Result<CatchUp> {
    let tls = ctx.tls.clone().context("no TLS configuration")?;
    let limit = Arc::new(tokio::sync::Semaphore::new(
        ctx.settings.connect_parallelism.max(1),
    ));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let users = u32::try_from(returning.len()).unwrap_or(u32::MAX);
    for (index, token, cursors) in returning {
        let limit = Arc::clone(&limit);
        let tls = tls.clone();
        let addr = ctx.target.addr;
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|err| anyhow!(err))?;
            let began = Instant::now();
            let caught_up = async {
                let mut session = Session::connect(addr, &tls).await?;
                session.resume(token).await?;
                session.cursors = cursors;
                let pages = session.sync_all().await?;
                Ok::<_, anyhow::Error>((session, pages))
            };
            let (session, pages) = caught_up
                .await
                .with_context(|| format!("returning user {}", user_name(index)))?;
            let took = began.elapsed();
            let mut receipts = Receipts::default();
            // Catch-up time is per user; the per-message latency is not meaningful
            // here and is recorded as zero.
            for stamp in &session.stamps {
                let expected = stamp.sender == 0 && stamp.counter < sent;
                receipts.record(stamp.sender, stamp.counter, 0, expected);
            }
            session.close().await;
            Ok::<_, anyhow::Error>((pages, took, receipts))
        });
    }
    let mut catch_up = CatchUp {
        users,
        pages: 0,
        seconds: 0.0,
        timed_out: false,
        totals: Totals::default(),
        times: Histogram::default(),
    };
    loop {
        let joined = match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(joined)) => joined,
            Ok(None) => break,
            Err(_) => {
                catch_up.timed_out = true;
                break;
            }
        };
        let (pages, took, receipts) = joined.context("a returning user's task failed")??;
        catch_up.pages += pages;
        catch_up
            .times
            .record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        catch_up.totals.add(&receipts, u64::from(sent));
    }
    // Users still syncing at the deadline missed everything they had not received.
    let finished = catch_up.times.count();
    catch_up.totals.lost += u64::from(sent) * (u64::from(users) - finished);
    catch_up.seconds = started.elapsed().as_secs_f64();
    Ok(catch_up)
}
