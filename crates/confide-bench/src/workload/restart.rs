//! The restart workload: every user is in C direct conversations, the server restarts,
//! and everyone logs in again at once, as clients do after an upgrade or a crash.
//!
//! A room starts in the server's memory when it is first needed, so the first logins
//! after a restart read each user's conversations back from the store. Measured: the
//! time from opening the connection to the `LoggedIn` reply for each user, and the
//! server's CPU per login; then the same logins again with every room already running,
//! for comparison. Confide only: the relay has no accounts.

use super::Ctx;
use super::idle::create_accounts;
use super::messages::fill_resources;
use crate::client::{Session, user_name};
use crate::procfs;
use crate::report::{RunReport, format_ns};
use crate::server::TargetKind;
use crate::stats::Histogram;
use anyhow::{Context as _, Result, anyhow, bail};
use confide_proto::{Reply, Request, SessionToken};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Time for the server to forget the connections of one phase before the next.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs the restart workload.
///
/// # Errors
/// If the users cannot be set up, the server does not restart, or the target is not
/// Confide.
pub async fn run(ctx: &mut Ctx) -> Result<RunReport> {
    let spec = ctx.spec.clone();
    if ctx.target.kind != TargetKind::Confide {
        bail!("the restart workload needs Confide: the relay has no accounts");
    }
    let users = spec.users;
    if users < 2 {
        bail!("the restart workload needs at least two users");
    }
    // Each user opens conversations with the next `half` users (wrapping around), so
    // everyone is in `2 * half` of them.
    let half = (spec.conversations / 2).clamp(1, ((users - 1) / 2).max(1));
    let mut report = RunReport::new(spec.workload, TargetKind::Confide, users, spec.body_bytes);
    report.connections = users;

    ctx.warm_up().await?;
    let setup_started = Instant::now();
    let tokens = create_accounts(ctx, users).await?;
    let opened = open_conversations(ctx, &tokens, half).await?;
    report.setup_seconds = setup_started.elapsed().as_secs_f64();

    let server_bin = ctx.settings.server_bin.clone();
    let restart_started = Instant::now();
    tokio::task::block_in_place(|| ctx.target.restart(&server_bin))?;
    let restart_seconds = restart_started.elapsed().as_secs_f64();
    let baseline = ctx.target.sample()?;

    // Cold: every room is read back from the store by the first login that needs it.
    let server_before = ctx.target.sample()?;
    let bench_before = procfs::sample_self()?;
    let cold = log_in_all(ctx, &tokens).await?;
    let server_after = ctx.target.sample()?;
    let bench_after = procfs::sample_self()?;
    close_all(cold.sessions).await;
    tokio::time::sleep(SETTLE).await;

    // Warm: the same logins with every room running.
    let warm_before = ctx.target.sample()?;
    let warm = log_in_all(ctx, &tokens).await?;
    let warm_after = ctx.target.sample()?;
    report.server_disconnects = ctx.target.disconnect_reasons();
    close_all(warm.sessions).await;

    report.measured_seconds = cold.seconds;
    report.deliveries = cold.times.count();
    report.expected_deliveries = u64::from(users);
    report.lost = u64::from(users) - cold.times.count();
    report.deliveries_per_second = cold.times.count() as f64 / cold.seconds.max(1e-9);
    report.latency_kind = "login";
    report.latency = cold.times.summary();
    report.timed_out = cold.timed_out || warm.timed_out;
    fill_resources(
        &mut report,
        baseline,
        server_before,
        server_after,
        bench_before,
        bench_after,
    );
    let warm_latency = warm.times.summary();
    let warm_cpu = (warm_after.cpu_seconds - warm_before.cpu_seconds).max(0.0);
    report.notes.push(format!(
        "{opened} direct conversations, {} per user; the server restarted in {restart_seconds:.2} s",
        2 * half
    ));
    report.notes.push(format!(
        "after the restart (rooms read from the store): {:.0} logins/s, p50 {}, p99 {}, \
         server CPU {:.0} µs per login",
        report.deliveries_per_second,
        format_ns(report.latency.p50_ns),
        format_ns(report.latency.p99_ns),
        report.server_cpu_seconds * 1e6 / f64::from(users),
    ));
    report.notes.push(format!(
        "again, rooms running: {:.0} logins/s, p50 {}, p99 {}, server CPU {:.0} µs per login",
        warm.times.count() as f64 / warm.seconds.max(1e-9),
        format_ns(warm_latency.p50_ns),
        format_ns(warm_latency.p99_ns),
        warm_cpu * 1e6 / f64::from(users),
    ));
    Ok(report)
}

/// Has user `i` open direct conversations with users `i + 1` to `i + half`, on
/// connections set up with bounded parallelism; returns how many were opened.
async fn open_conversations(ctx: &Ctx, tokens: &[SessionToken], half: u32) -> Result<u64> {
    let tls = ctx.tls.clone().context("no TLS configuration")?;
    let users = u32::try_from(tokens.len()).context("too many users")?;
    let limit = Arc::new(tokio::sync::Semaphore::new(
        ctx.settings.connect_parallelism.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, token) in (0..users).zip(tokens.iter().cloned()) {
        let limit = Arc::clone(&limit);
        let tls = tls.clone();
        let addr = ctx.target.addr;
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|err| anyhow!(err))?;
            let mut session = Session::connect(addr, &tls).await?;
            session.resume(token).await?;
            for step in 1..=half {
                let peer = user_name((index + step) % users);
                match session
                    .request(Request::OpenDirect { user: peer.clone() })
                    .await?
                {
                    Ok(Reply::Room(_)) => {}
                    other => bail!("opening a conversation with {peer}: {other:?}"),
                }
            }
            session.close().await;
            Ok::<_, anyhow::Error>(u64::from(half))
        });
    }
    let mut opened = 0;
    let deadline = ctx.measure_deadline();
    while let Some(joined) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .map_err(|_| anyhow!("opening the conversations took longer than the run allows"))?
    {
        opened += joined.context("a task opening conversations failed")??;
    }
    Ok(opened)
}

/// One round of logins.
struct Logins {
    /// Connection to `LoggedIn`, per user.
    times: Histogram,
    /// From the first connection to the last login.
    seconds: f64,
    timed_out: bool,
    /// The logged-in connections, kept open until the round is over.
    sessions: Vec<Session>,
}

/// Logs every user in with their token, with bounded parallelism, and keeps the
/// connections open until all are in.
async fn log_in_all(ctx: &Ctx, tokens: &[SessionToken]) -> Result<Logins> {
    let tls = ctx.tls.clone().context("no TLS configuration")?;
    let limit = Arc::new(tokio::sync::Semaphore::new(
        ctx.settings.connect_parallelism.max(1),
    ));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, token) in tokens.iter().cloned().enumerate() {
        let limit = Arc::clone(&limit);
        let tls = tls.clone();
        let addr = ctx.target.addr;
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|err| anyhow!(err))?;
            let began = Instant::now();
            let mut session = Session::connect(addr, &tls).await?;
            session
                .resume(token)
                .await
                .with_context(|| format!("logging in user {index}"))?;
            Ok::<_, anyhow::Error>((began.elapsed(), session))
        });
    }
    let mut logins = Logins {
        times: Histogram::default(),
        seconds: 0.0,
        timed_out: false,
        sessions: Vec::with_capacity(tokens.len()),
    };
    let deadline = ctx.measure_deadline();
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(joined)) => {
                let (took, session) = joined.context("a login task failed")??;
                logins
                    .times
                    .record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                logins.sessions.push(session);
            }
            Ok(None) => break,
            Err(_) => {
                logins.timed_out = true;
                break;
            }
        }
    }
    logins.seconds = started.elapsed().as_secs_f64();
    Ok(logins)
}

async fn close_all(sessions: Vec<Session>) {
    for session in sessions {
        session.close().await;
    }
}
